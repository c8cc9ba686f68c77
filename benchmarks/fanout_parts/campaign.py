"""(2) dgaas-flow: whole campaigns, `dgaas-flow run` in a child process, as a user runs them: cold
(everything starts for it; watched from outside for its steady rate, first result, the driver's
peak memory and CPU by process) and warm (later campaigns in one session, left alone: their own
summaries say how they went)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .cpu import CpuTracker
from .locations import ROOT
from .rounding import round_or_none


def _vm_hwm_kb(pid: int) -> int | None:
    """The process's peak resident set (VmHWM), from /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def steady_rate(points: list[tuple[float, int]], total: int) -> float | None:
    """items/s between 10% and 90% of the items (start-up and tail left out), from (seconds, items
    written) samples of results.jsonl; None when they are too few to say."""

    def time_at(level: float) -> float | None:
        for i, (t, n) in enumerate(points):
            if n >= level:
                if i == 0:
                    return t
                t0, n0 = points[i - 1]
                return t0 + (t - t0) * (level - n0) / (n - n0)
        return None

    lo, hi = time_at(0.1 * total), time_at(0.9 * total)
    if total <= 0 or lo is None or hi is None or hi <= lo:
        return None
    return 0.8 * total / (hi - lo)


def run_dgaas(workflow: Path, folder: Path, total: int) -> dict[str, Any]:
    """A cold campaign, `dgaas-flow run` from nothing: Parsl, the block and its pilot start for it."""
    out = _fresh(folder / "run")
    cmd = [sys.executable, "-m", "dgaas_flow", "run", str(workflow), "--out", str(out), "--quiet"]
    return _watch(cmd, out, folder, "dgaas", total)


def warm_session(workflow: Path, warmup_items: Path, folder: Path, campaigns: int, tree: Path = ROOT) -> list[dict]:
    """Warm campaigns as a user runs them, several in one session: `dgaas-flow run warm-up.yaml
    c1.yaml ... cK.yaml`, the code of `tree` (this one, or a revision's worktree for compare.py).
    The warm-up reads other items; the K campaigns are the cold one's, except that the blocks,
    their pilots and the workers' clients are already up, as they are against the ceiling.

    Nothing watches these campaigns as they run: on 2 cores, polling results.jsonl and /proc every
    50 ms (as `_watch` does for the cold campaign) made a 0.16 s digits campaign 8% slower. Each
    campaign's figures come from its summary.json, and its call time (settling the session, the
    campaign, the server's counters, the summary) from the summaries' modification times."""
    folder = _fresh(folder)
    names = ["warm-up"] + [f"c{k}" for k in range(1, campaigns + 1)]
    files = [workflow_variant(workflow, folder / f"{name}.yaml", folder / name,
                              warmup_items if name == "warm-up" else None) for name in names]
    cmd = [sys.executable, "-m", "dgaas_flow", "run", *map(str, files), "--quiet"]
    with open(folder / "session.stderr", "wb") as se:
        done = subprocess.run(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, stdout=subprocess.DEVNULL,
                              stderr=se, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` exited {done.returncode}; see {folder}/session.stderr:\n"
                           + (folder / "session.stderr").read_text()[-2000:])
    files = [folder / name / "summary.json" for name in names]
    ended = [f.stat().st_mtime for f in files]
    return [_warm_figures(json.loads(f.read_text()), round(ended[k] - ended[k - 1], 3), f.parent)
            for k, f in enumerate(files) if k]


def _warm_figures(summary: dict[str, Any], call_s: float, out: Path) -> dict[str, Any]:
    """What the report keeps of one warm campaign's summary.json."""
    items, wall = int(summary["items_this_run"]), summary["wall_seconds"]
    return {"items": items, "failed": int(summary["items_failed"]),
            "items_per_s": round(items / wall, 1) if wall else 0.0, "campaign_wall_s": wall, "call_wall_s": call_s,
            "time_to_first_result_s": summary.get("time_to_first_result_s"), "requests": summary.get("requests"),
            "latency_ms": _brief_latency(summary.get("latency_ms")), "triton": _triton(summary), "run_dir": str(out)}


def _triton(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The server's batching and timing figures of each pilot the campaign used."""
    return [{k: t.get(k) for k in ("avg_batch", "queue_ms_per_request", "compute_ms_per_execution", "requests",
                                   "executions")} for t in summary.get("triton") or []]


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def workflow_variant(workflow: Path, dest: Path, out: Path, items: Path | None) -> Path:
    """The benchmark's workflow writing to `out` (and reading `items`' files, if given: the same
    pattern in another folder)."""
    data = yaml.safe_load(workflow.read_text())
    data["outputs"] = {**data.get("outputs", {}), "dir": str(out)}
    if items is not None:
        data["inputs"] = {**data["inputs"], "files": str(items / Path(data["inputs"]["files"]).name)}
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def _watch(cmd: list[str], out: Path, folder: Path, tag: str, total: int) -> dict[str, Any]:
    """Run the command, watching the results file of the campaign in `out` (first and last result,
    and its lines every 50 ms for the steady rate: timeline.jsonl's one point a second is too coarse
    for a run of a second), the driver's VmHWM and the CPU of the session's processes; then read the
    campaign's summary.json."""
    results, summary_file = out / "results.jsonl", out / "summary.json"
    peak_kb, first_result = 0, None
    lines, offset, at_first, cpu_first, cpu_last = 0, 0, 0, None, None
    written: list[tuple[float, int]] = []  # (seconds, result lines) at each poll until the last line
    with open(folder / f"{tag}.stdout", "wb") as so, open(folder / f"{tag}.stderr", "wb") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, cwd=ROOT)
        cpu = CpuTracker(proc.pid, str(out))  # the run folder names the session's processes
        next_sample = 0.0
        try:
            while proc.poll() is None:
                peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid) or 0)
                if cpu_last is None and results.exists() and results.stat().st_size > offset:
                    with open(results, "rb") as f:  # count result lines as they come
                        f.seek(offset)
                        new = f.read()
                    offset += len(new)
                    lines += new.count(b"\n")
                    if first_result is None:
                        first_result, at_first, cpu_first = time.perf_counter() - t0, lines, cpu.snapshot()
                    elif lines >= total:
                        cpu_last = cpu.snapshot()
                if cpu_last is None or written[-1][1] < lines:
                    written.append((time.perf_counter() - t0, lines))
                if time.perf_counter() >= next_sample:
                    cpu.sample()
                    next_sample = time.perf_counter() + 0.5
                time.sleep(0.05)
        except BaseException:
            proc.terminate()  # our own child: it stops its blocks and pilot on SIGTERM
            proc.wait(60)
            raise
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"`{shlex.join(cmd)}` exited {proc.returncode}; see {folder}/{tag}.stderr:\n"
                           + (folder / f"{tag}.stderr").read_text()[-2000:])
    summary = json.loads(summary_file.read_text())
    items = int(summary["items_this_run"])
    return {
        "items": items, "failed": int(summary["items_failed"]),
        "items_per_s": round(items / summary["wall_seconds"], 1) if summary["wall_seconds"] else 0.0,
        "campaign_wall_s": summary["wall_seconds"], "command_wall_s": round(wall, 3),
        "steady_items_per_s": round_or_none(steady_rate(written, items)),
        "time_to_first_result_s": summary.get("time_to_first_result_s"),
        "first_result_from_command_s": round_or_none(first_result, 3),
        "driver_peak_rss_mb": round(peak_kb / 1024, 1),
        "requests": summary.get("requests"), "latency_ms": _brief_latency(summary.get("latency_ms")),
        "triton": _triton(summary),
        "cpu_s": cpu.by_role(),
        "cpu_us_per_item": _cpu_between({}, cpu.by_role(), items) or {},
        "steady_cpu_us_per_item": _cpu_between(cpu_first, cpu_last, total - at_first),
        "run_dir": str(out),
    }


def _cpu_between(first: dict | None, last: dict | None, items: int) -> dict[str, float] | None:
    """CPU per item by role between two snapshots (the first and the last result: start-up and
    shut-down left out; or nothing and the end of the command)."""
    if first is None or last is None or items <= 0:
        return None
    per = {k: round((v - first.get(k, 0.0)) / items * 1e6, 1) for k, v in last.items()}
    per = {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0}
    return {**per, "total": round(sum(per.values()), 1)}


def _brief_latency(lat: dict | None) -> dict | None:
    """The latency percentiles without the histogram (too long for a results table)."""
    return None if not lat else {k: v for k, v in lat.items() if k != "histogram"}
