"""CPU seconds of a campaign's processes by role: on a machine where client and server share the
cores, this is where the time per item goes."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from dgaas_flow.sites.executor import INTERCHANGE_NAMES

# (what a process's command line holds, the role it is counted under), first match wins
ROLES = (("triton_python_backend_stub", "model"), ("tritonserver", "server"), ("envoy", "gateway"),
         *((name, "interchange") for name in INTERCHANGE_NAMES), ("pilot wrap", "pilot"),
         ("process_worker_pool", "workers"))


class CpuTracker:
    """CPU seconds of a campaign's processes by role (driver, interchange, workers, pilot, server,
    model), sampled while they run: the driver's descendants and anything whose command line names
    the run folder (Parsl's local blocks may be re-parented). A process keeps its last sample."""

    def __init__(self, root_pid: int, marker: str):
        import psutil

        self.psutil, self.root, self.marker = psutil, psutil.Process(root_pid), marker
        self.seen: dict[int, tuple[str, float]] = {}

    def _role(self, proc: Any) -> str:
        """By command line; Parsl's workers (multiprocessing children) take their manager's role."""
        if proc.pid == self.root.pid:
            return "driver"
        argv = proc.cmdline()  # empty for a process that has just exited (a zombie)
        cmd = " ".join(argv)
        role = next((role for needle, role in ROLES if needle in cmd), None)
        if role is None and "multiprocessing" in cmd:
            parent = self.seen.get(proc.ppid())
            role = parent[0] if parent and parent[0] == "workers" else None
        return role or ("launcher" if argv and Path(argv[0]).name in ("bash", "sh") else "other")

    def snapshot(self) -> dict[str, float]:
        """Totals by role as of now (taken at the first and at the last result)."""
        self.sample()
        return self.by_role()

    def sample(self) -> None:
        """Every process of the campaign's current CPU time; those gone keep their last sample."""
        ps = self.psutil
        procs: dict[int, Any] = {}
        with contextlib.suppress(ps.Error):
            procs = {p.pid: p for p in [self.root, *self.root.children(recursive=True)]}
        for p in ps.process_iter(["cmdline"]):
            with contextlib.suppress(ps.Error):
                if p.pid not in procs and self.marker in " ".join(p.info["cmdline"] or []):
                    procs[p.pid] = p
                    procs.update((c.pid, c) for c in p.children(recursive=True))
        for pid, proc in sorted(procs.items()):  # parents (lower pids, usually) first
            with contextlib.suppress(ps.Error):
                t = proc.cpu_times()
                role = self.seen[pid][0] if pid in self.seen else self._role(proc)
                self.seen[pid] = (role, t.user + t.system)

    def by_role(self) -> dict[str, float]:
        """CPU seconds summed by role, largest first."""
        out: dict[str, float] = {}
        for role, cpu in self.seen.values():
            out[role] = round(out.get(role, 0.0) + cpu, 3)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))
