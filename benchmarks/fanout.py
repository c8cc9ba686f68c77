"""Fan-out throughput side by side: the server's ceiling, dgaas-flow, the naive baseline and the
Parsl floor, in one run, on the same machine, with the same model and the same prepared items.

    .venv/bin/python benchmarks/fanout.py [--model digits,heavy] [--items 10000,100000] [--workers 2]

For each model and item count (and each worker count of --workers):
  ceiling   a tight raw tritonclient loop (several processes) against a Triton server started by the
            project's pilot; the best protocol, batch size and process count of a short search,
            then whole passes over all the items, timed (for at least --ceiling-min-seconds);
  dgaas     a whole campaign, `dgaas-flow run` in a child process on the local provider (Parsl, the
            pilot, chunking, results.jsonl written): items / campaign wall time, the steady rate
            from timeline.jsonl, the time to the first result and the driver's peak RSS;
  naive     what batch jobs do without a shared server: each Parsl task loads the model in-process
            and infers its chunk (the same chunks, the same executor and workers, no Triton);
  floor     empty Parsl tasks per second through the same executor configuration.

Items are `rows` .npy files written once per size under --work. Above --full-max items only the
dgaas path runs (the 1M-item run is there to check that the driver's memory stays flat). Results go
to --results (markdown, JSON, PNG plots); the last line printed is one JSON object.

    .venv/bin/python benchmarks/fanout.py --tune --model heavy   # server settings: max_batch_size, queue delay,
                                                                 # instances, onnxruntime threads
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgaas_flow.config import make_config  # noqa: E402
from dgaas_flow.inputs import enumerate_items  # noqa: E402
from dgaas_flow.pilot.supervisor import Pilot, PilotConfig  # noqa: E402
from dgaas_flow.spec import Workflow, load_workflow  # noqa: E402

WORKFLOWS = ROOT / "workflows"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_WORK = ROOT / "runs" / "bench-fanout"
PATHS = ("ceiling", "dgaas", "naive", "floor")


# ------------------------------------------------------------------------------------------------
# The models and their items


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@dataclass
class ModelCase:
    name: str
    workflow: Path
    dtype: str

    @property
    def folder(self) -> Path:
        return self.workflow.parent

    def prepare(self) -> None:
        """The model files (trained digits weights, the heavy ONNX model) exist after this."""
        prepare = self.folder / "prepare.py"
        if self.name == "digits":
            if not (self.folder / "model_repository" / "digits" / "1" / "weights.npz").exists():
                subprocess.run([sys.executable, str(prepare)], check=True, stdout=subprocess.DEVNULL)
        elif self.name == "heavy":
            module = _module(prepare, "heavy_prepare")
            if not module.MODEL.exists():
                module.build_model()

    def write_items(self, folder: Path, n: int) -> None:
        """n items as rows files of 10,000 rows (kept when already there with the right shape)."""
        if self.name == "heavy":
            _module(self.folder / "prepare.py", "heavy_prepare").write_rows(folder, n)
            return
        digits = _digit_pixels()

        def make(m: int, start: int) -> np.ndarray:
            return digits[(start + np.arange(m)) % len(digits)]

        _module(WORKFLOWS / "heavy" / "prepare.py", "heavy_prepare").write_rows(folder, n, make=make)


def _digit_pixels() -> np.ndarray:
    """The 1,797 digit images as 8-bit pixels (the same values the example's PNG files hold)."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    return np.clip(np.rint(images * 255.0 / 16.0), 0, 255).astype(np.uint8)


MODELS = {
    "digits": ModelCase("digits", WORKFLOWS / "digits" / "workflow.yaml", "uint8"),
    "heavy": ModelCase("heavy", WORKFLOWS / "heavy" / "workflow.yaml", "float32"),
}


def bench_workflow(case: ModelCase, items_dir: Path, workers: int, folder: Path, chunk_size: int | None) -> Path:
    """A copy of the model's workflow reading the prepared rows, with `workers` workers per node."""
    wf = load_workflow(case.workflow)
    data = yaml.safe_load(case.workflow.read_text())
    provider = wf.provider.model_dump(exclude_none=True)
    provider["workers_per_node"] = workers
    data.update(
        name=f"bench-{case.name}", provider=provider,
        model={**data["model"], "repository": str(wf.model.repository)},
        inputs={"files": str(items_dir / "*.npy"), "format": "rows"},
    )
    data.pop("outputs", None)
    data["outputs"] = {"top_k": wf.outputs.top_k}
    if chunk_size:
        data["chunk_size"] = chunk_size
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "workflow.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def chunks(wf: Workflow):
    """The campaign's chunks: the same enumeration, the same chunk size."""
    items = enumerate_items(wf.inputs.files, wf.inputs.format, wf.inputs.labels)
    while chunk := list(islice(items, wf.chunk_size)):
        yield chunk


def load_rows(items_dir: Path) -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(items_dir.glob("*.npy"))])


# ------------------------------------------------------------------------------------------------
# (1) the ceiling: raw tritonclient processes


def _client_proc(url: str, protocol: str, model: str, input_name: str, datatype: str, output: str, top_k: int,
                 rows: np.ndarray, batch: int, seconds: float | None, min_seconds: float, ready, go, done) -> None:
    """One client process: send `rows` in batches, for `seconds` (cycling), or in whole passes until
    min_seconds have gone by (at least one pass)."""
    try:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        lib = httpclient if protocol == "http" else grpcclient
        client = lib.InferenceServerClient(url.split("://", 1)[1])
        requested = [lib.InferRequestedOutput(output, class_count=top_k)]

        def send(x: np.ndarray) -> None:
            inp = lib.InferInput(input_name, list(x.shape), datatype)
            inp.set_data_from_numpy(x)
            client.infer(model, [inp], outputs=requested)

        send(rows[:batch])  # connect and warm up before the clock starts
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        ready.put(f"{type(exc).__name__}: {exc}")
        return
    ready.put(None)
    go.wait()
    t0, n, errors = time.perf_counter(), 0, 0
    starts = range(0, len(rows), batch)
    while True:
        for s in starts:
            try:
                send(rows[s:s + batch])
                n += min(batch, len(rows) - s)
            except Exception:  # noqa: BLE001 - counted; a ceiling with errors is reported as such
                errors += 1
            if seconds is not None and time.perf_counter() - t0 >= seconds:
                break
        if time.perf_counter() - t0 >= (min_seconds if seconds is None else seconds):
            break
    done.put((n, time.perf_counter(), errors))
    client.close()


def client_run(urls: dict[str, str], protocol: str, info: dict, top_k: int, rows: np.ndarray, batch: int,
               procs: int, seconds: float | None, min_seconds: float = 0.0) -> dict[str, Any]:
    """items/s of `procs` client processes; seconds=None: whole passes over rows, split between
    them, repeated until min_seconds have gone by (a short pass is mostly noise)."""
    ctx = mp.get_context("spawn")  # tritonclient (gevent, gRPC) does not survive a fork
    ready, go, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    parts = np.array_split(rows, procs) if seconds is None else [rows] * procs
    pool = [ctx.Process(target=_client_proc, args=(urls[protocol], protocol, info["model"], info["input"],
                                                   info["datatype"], info["output"], top_k, part, batch, seconds,
                                                   min_seconds, ready, go, done), daemon=True) for part in parts]
    for p in pool:
        p.start()
    try:
        for _ in pool:  # every client connected and warmed up, or one said why not
            problem = ready.get(timeout=300)
            if problem:
                raise RuntimeError(f"ceiling client ({protocol}, batch {batch}): {problem}")
        t0 = time.perf_counter()
        go.set()
        outs = [done.get(timeout=3600) for _ in pool]
    finally:
        for p in pool:
            p.join(10)
            if p.is_alive():
                p.kill()
    items = sum(o[0] for o in outs)
    wall = max(o[1] for o in outs) - t0
    return {"protocol": protocol, "batch": batch, "procs": procs, "items": items, "seconds": round(wall, 3),
            "items_per_s": round(items / wall, 1) if wall > 0 else 0.0, "errors": sum(o[2] for o in outs)}


def model_info(url: str, model: str) -> dict[str, Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.split("://", 1)[1])
    meta, config = client.get_model_metadata(model), client.get_model_config(model)
    client.close()
    return {"model": model, "input": meta["inputs"][0]["name"], "datatype": meta["inputs"][0]["datatype"],
            "output": meta["outputs"][0]["name"], "max_batch_size": int(config.get("max_batch_size", 0))}


def start_pilot(wf: Workflow, folder: Path, repository: Path | None = None) -> Pilot:
    pilot = Pilot(PilotConfig(triton=wf.triton, repository=repository or wf.model.repository,
                              models=[wf.model.name], registry=folder / "pilots", log_dir=folder / "logs"))
    pilot.start()
    return pilot


def ceiling_search(urls: dict[str, str], info: dict, top_k: int, rows: np.ndarray, protocols: list[str],
                   batches: list[int], procs: list[int], seconds: float) -> list[dict[str, Any]]:
    mbs = info["max_batch_size"] or 1
    sizes = sorted({min(b, mbs) for b in batches} | ({mbs} if 0 in batches else set()))
    sizes = [b for b in sizes if b > 0]
    return [client_run(urls, protocol, info, top_k, rows, b, p, seconds)
            for protocol in protocols for b in sizes for p in procs]


def run_ceiling(wf: Workflow, rows: np.ndarray, folder: Path, args) -> dict[str, Any]:
    with contextlib.closing(_Closer(start_pilot(wf, folder))) as closer:
        urls = {"http": closer.pilot.endpoint.http_url, "grpc": closer.pilot.endpoint.grpc_url}
        info = model_info(urls["http"], wf.model.name)
        grid = ceiling_search(urls, info, wf.outputs.top_k, rows, args.ceiling_protocols, args.ceiling_batches,
                              args.ceiling_procs, args.search_seconds)
        best = max(grid, key=lambda r: r["items_per_s"])
        final = client_run(urls, best["protocol"], info, wf.outputs.top_k, rows, best["batch"], best["procs"], None,
                           args.ceiling_min_seconds)
    return {**final, "search": grid, "max_batch_size": info["max_batch_size"]}


class _Closer:
    def __init__(self, pilot: Pilot):
        self.pilot = pilot

    def close(self) -> None:
        self.pilot.stop()


# ------------------------------------------------------------------------------------------------
# (2) dgaas-flow: a whole campaign in a child process


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


def steady_rate(timeline: Path, total: int) -> float | None:
    """items/s between 10% and 90% of the items (start-up and tail left out), from timeline.jsonl;
    None when the timeline is missing or too short to say."""
    try:
        points = [json.loads(line) for line in timeline.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    points = [(float(p["t"]), int(p["items"])) for p in points]

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


ROLES = (("triton_python_backend_stub", "model"), ("tritonserver", "server"), ("interchange.py", "interchange"),
         ("pilot wrap", "pilot"), ("process_worker_pool", "workers"))


class CpuTracker:
    """CPU seconds of a campaign's processes by role (driver, interchange, workers, pilot, server,
    model), sampled while they run: the driver's descendants and anything whose command line names
    the run folder (Parsl's local blocks may be re-parented). A process keeps its last sample."""

    def __init__(self, root_pid: int, marker: str):
        import psutil

        self.psutil, self.root, self.marker = psutil, psutil.Process(root_pid), marker
        self.seen: dict[int, tuple[str, float]] = {}

    def _role(self, proc) -> str:
        """By command line; Parsl's workers (multiprocessing children) take their manager's role."""
        if proc.pid == self.root.pid:
            return "driver"
        cmd = " ".join(proc.cmdline())
        role = next((role for needle, role in ROLES if needle in cmd), None)
        if role is None and "multiprocessing" in cmd:
            parent = self.seen.get(proc.ppid())
            role = parent[0] if parent and parent[0] == "workers" else None
        return role or ("launcher" if Path(proc.cmdline()[0]).name in ("bash", "sh") else "other")

    def snapshot(self) -> dict[str, float]:
        self.sample()
        return self.by_role()

    def sample(self) -> None:
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
        out: dict[str, float] = {}
        for role, cpu in self.seen.values():
            out[role] = round(out.get(role, 0.0) + cpu, 3)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def run_dgaas(workflow: Path, folder: Path, total: int) -> dict[str, Any]:
    out = folder / "run"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "dgaas_flow", "run", str(workflow), "--out", str(out), "--quiet"]
    results = out / "results.jsonl"
    peak_kb, first_result = 0, None
    lines, offset, at_first, cpu_first, cpu_last = 0, 0, 0, None, None
    with open(folder / "dgaas.stdout", "wb") as so, open(folder / "dgaas.stderr", "wb") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, cwd=ROOT)
        cpu = CpuTracker(proc.pid, str(out))
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
        raise RuntimeError(f"`{shlex.join(cmd)}` exited {proc.returncode}; see {folder}/dgaas.stderr:\n"
                           + (folder / "dgaas.stderr").read_text()[-2000:])
    summary = json.loads((out / "summary.json").read_text())
    items = int(summary["items_this_run"])
    triton = summary.get("triton") or []
    return {
        "items": items, "failed": int(summary["items_failed"]),
        "items_per_s": round(items / summary["wall_seconds"], 1) if summary["wall_seconds"] else 0.0,
        "campaign_wall_s": summary["wall_seconds"], "command_wall_s": round(wall, 3),
        "steady_items_per_s": _round(steady_rate(out / "timeline.jsonl", items)),
        "time_to_first_result_s": summary.get("time_to_first_result_s"),
        "first_result_from_command_s": _round(first_result, 3),
        "driver_peak_rss_mb": round(peak_kb / 1024, 1),
        "requests": summary.get("requests"), "latency_ms": _brief_latency(summary.get("latency_ms")),
        "triton": [{k: t.get(k) for k in ("avg_batch", "queue_ms_per_request", "compute_ms_per_execution",
                                          "requests", "executions")} for t in triton],
        "cpu_s": cpu.by_role(),
        "cpu_us_per_item": {k: round(v / items * 1e6, 1) for k, v in cpu.by_role().items()} if items else {},
        "steady_cpu_us_per_item": _steady_cpu(cpu_first, cpu_last, total - at_first),
        "run_dir": str(out),
    }


def _steady_cpu(first: dict | None, last: dict | None, items: int) -> dict[str, float] | None:
    """CPU per item by role between the first result and the last: start-up and shut-down left out."""
    if not first or not last or items <= 0:
        return None
    per = {k: round((v - first.get(k, 0.0)) / items * 1e6, 1) for k, v in last.items()}
    per = {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0}
    return {**per, "total": round(sum(per.values()), 1)}


def _brief_latency(lat: dict | None) -> dict | None:
    return None if not lat else {k: v for k, v in lat.items() if k != "histogram"}


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


# ------------------------------------------------------------------------------------------------
# (3) naive and (4) the floor: Parsl tasks on the same executor configuration, no Triton


def naive_chunk(items, kind: str, model_dir: str, top_k: int) -> dict:
    """A Parsl task that does what a batch job without a server does: load the model, infer its
    chunk in one batch, return one result per item. Self-contained (its imports inside): Parsl
    ships it to the workers by value."""
    import time
    from pathlib import Path

    import numpy as np

    t0 = time.perf_counter()
    folder = Path(model_dir)
    labels = (folder.parent / "labels.txt").read_text().split()
    if kind == "heavy":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one worker, one core: as the server's instance
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def infer(x):
            return session.run(None, {name: x.astype(np.float32, copy=False)})[0]
    else:
        weights = np.load(folder / "weights.npz")
        w1, b1, w2, b2 = weights["w1"], weights["b1"], weights["w2"], weights["b2"]

        def infer(x):
            h = np.maximum(x.reshape(len(x), -1).astype(np.float32) / 255.0 @ w1 + b1, 0.0)
            logits = h @ w2 + b2
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            return p / p.sum(axis=1, keepdims=True)
    t1 = time.perf_counter()
    arrays: dict = {}
    rows = []
    for _, path, row in items:
        if path not in arrays:
            arrays[path] = np.load(path, mmap_mode="r")
        rows.append(arrays[path][row])
    probs = infer(np.stack(rows))
    best = probs.argmax(axis=1)
    t2 = time.perf_counter()
    results = [{"id": item[0], "ok": True, "prediction": labels[k], "score": round(float(probs[i, k]), 6)}
               for i, (item, k) in enumerate(zip(items, best, strict=True))]
    return {"results": results, "load_s": t1 - t0, "infer_s": t2 - t1}


def empty_task() -> None:
    return None


def _parsl(wf: Workflow, run_dir: Path):
    import parsl

    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return parsl.load(make_config(wf.provider, run_dir, None, 0))


def _stop_parsl(dfk) -> None:
    import parsl

    dfk.cleanup()
    parsl.clear()


def bounded(submit, jobs, limit: int, on_done) -> None:
    """Keep at most `limit` futures in flight, as the campaign does."""
    import concurrent.futures as cf

    in_flight: set = set()
    for job in jobs:
        while len(in_flight) >= limit:
            done, in_flight = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for f in done:
                on_done(f.result())
        in_flight.add(submit(job))
    for f in cf.as_completed(in_flight):
        on_done(f.result())


def run_naive(case: ModelCase, wf: Workflow, folder: Path) -> dict[str, Any]:
    from parsl import python_app

    shutil.rmtree(folder / "naive", ignore_errors=True)
    (folder / "naive").mkdir(parents=True)
    model_dir = str(wf.model.repository / wf.model.name / "1")
    app = python_app(naive_chunk)
    stats = {"items": 0, "load_s": 0.0, "infer_s": 0.0, "tasks": 0, "first": None}
    t0 = time.perf_counter()
    dfk = _parsl(wf, folder / "naive" / "parsl")
    try:
        with open(folder / "naive" / "results.jsonl", "w") as out:
            def done(outcome: dict) -> None:
                out.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in outcome["results"]))
                stats["items"] += len(outcome["results"])
                stats["load_s"] += outcome["load_s"]
                stats["infer_s"] += outcome["infer_s"]
                stats["tasks"] += 1
                if stats["first"] is None:
                    stats["first"] = time.perf_counter() - t0

            bounded(lambda c: app([i.task_item() for i in c], case.name, model_dir, wf.outputs.top_k),
                    chunks(wf), wf.in_flight_limit(), done)
    finally:
        _stop_parsl(dfk)
    wall = time.perf_counter() - t0
    tasks = max(stats["tasks"], 1)
    return {"items": stats["items"], "seconds": round(wall, 3), "items_per_s": round(stats["items"] / wall, 1),
            "tasks": stats["tasks"], "load_s_per_task": round(stats["load_s"] / tasks, 4),
            "infer_s_per_task": round(stats["infer_s"] / tasks, 4),
            "time_to_first_result_s": _round(stats["first"], 3)}


def run_floor(wf: Workflow, folder: Path, tasks: int) -> dict[str, Any]:
    from parsl import python_app

    app = python_app(empty_task)
    shutil.rmtree(folder / "floor", ignore_errors=True)
    dfk = _parsl(wf, folder / "floor" / "parsl")
    try:
        app().result()  # the block is up and a worker answers: what follows is Parsl's cost per task
        count = [0]
        t0 = time.perf_counter()
        bounded(lambda _: app(), range(tasks), wf.in_flight_limit(), lambda _: count.__setitem__(0, count[0] + 1))
        wall = time.perf_counter() - t0
    finally:
        _stop_parsl(dfk)
    return {"tasks": count[0], "seconds": round(wall, 3), "tasks_per_s": round(count[0] / wall, 1),
            "items_per_s": round(count[0] / wall * wf.chunk_size, 1), "chunk_size": wf.chunk_size}


# ------------------------------------------------------------------------------------------------
# One benchmark


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem_kb / 1024**2, 1),
            "os": platform.platform(), "python": platform.python_version(), "loadavg_start": list(os.getloadavg())}


@dataclass
class Run:
    model: str
    items: int
    workers: int
    chunk_size: int
    loadavg: list[float]
    ceiling: dict[str, Any] | None = None
    dgaas: dict[str, Any] | None = None
    naive: dict[str, Any] | None = None
    floor: dict[str, Any] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def rate(self, path: str) -> float | None:
        part = getattr(self, path)
        return None if part is None else part["items_per_s"]

    def rates(self) -> dict[str, float | None]:
        return {"ceiling": self.rate("ceiling"), "dgaas": self.rate("dgaas"),
                "dgaas_steady": self.dgaas["steady_items_per_s"] if self.dgaas else None,
                "naive": self.rate("naive"), "parsl_floor": self.rate("floor")}

    def row(self) -> dict[str, Any]:
        rates = self.rates()
        c, d, ds, n = rates["ceiling"], rates["dgaas"], rates["dgaas_steady"], rates["naive"]
        out: dict[str, Any] = {
            "items": self.items, "workers": self.workers, "chunk_size": self.chunk_size,
            "items_per_s": rates,
            "parsl_floor_tasks_per_s": self.floor["tasks_per_s"] if self.floor else None,
            "dgaas_over_ceiling": _ratio(d, c), "dgaas_steady_over_ceiling": _ratio(ds, c),
            "dgaas_over_naive": _ratio(d, n),
            "time_to_first_result_s": self.dgaas["time_to_first_result_s"] if self.dgaas else None,
            "first_result_from_command_s": self.dgaas["first_result_from_command_s"] if self.dgaas else None,
            "driver_peak_rss_mb": self.dgaas["driver_peak_rss_mb"] if self.dgaas else None,
            "loadavg": self.loadavg,
        }
        if self.ceiling:
            out["ceiling"] = {k: self.ceiling[k] for k in ("protocol", "batch", "procs", "errors")}
        if self.dgaas:
            out["dgaas"] = {k: self.dgaas[k] for k in ("campaign_wall_s", "command_wall_s", "failed", "requests",
                                                        "latency_ms", "triton", "cpu_us_per_item",
                                                        "steady_cpu_us_per_item")}
        if self.naive:
            out["naive"] = {k: self.naive[k] for k in ("load_s_per_task", "infer_s_per_task", "tasks")}
        return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run_one(case: ModelCase, n: int, workers: int, paths: set[str], args, rows_cache: dict) -> Run:
    items_dir = args.work / case.name / f"items-{n}"
    case.write_items(items_dir, n)
    folder = args.work / case.name / f"n{n}-w{workers}"
    wf_path = bench_workflow(case, items_dir, workers, folder, args.chunk_size)
    wf = load_workflow(wf_path)
    run = Run(case.name, n, workers, wf.chunk_size, [round(x, 2) for x in os.getloadavg()])
    t0 = time.perf_counter()
    if "ceiling" in paths:
        if n not in rows_cache:
            rows_cache[n] = run_ceiling(wf, load_rows(items_dir), folder / "ceiling", args)
        run.ceiling = rows_cache[n]
        _say(f"{case.name} {n} items: ceiling {run.ceiling['items_per_s']:.0f} items/s "
             f"({run.ceiling['protocol']}, batch {run.ceiling['batch']}, {run.ceiling['procs']} processes)")
    if "dgaas" in paths:
        run.dgaas = run_dgaas(wf_path, folder, n)
        _say(f"{case.name} {n} items, {workers} workers: dgaas {run.dgaas['items_per_s']:.0f} items/s "
             f"(steady {run.dgaas['steady_items_per_s']}), first result {run.dgaas['time_to_first_result_s']} s, "
             f"driver peak RSS {run.dgaas['driver_peak_rss_mb']} MB")
    if "naive" in paths:
        run.naive = run_naive(case, wf, folder)
        _say(f"{case.name} {n} items, {workers} workers: naive {run.naive['items_per_s']:.0f} items/s "
             f"(load {run.naive['load_s_per_task']:.3f} s + infer {run.naive['infer_s_per_task']:.3f} s per task)")
    if "floor" in paths:
        tasks = max(args.floor_tasks, -(-n // wf.chunk_size))
        run.floor = run_floor(wf, folder, tasks)
        _say(f"{case.name} {workers} workers: Parsl floor {run.floor['tasks_per_s']:.0f} empty tasks/s "
             f"(x chunk {wf.chunk_size} = {run.floor['items_per_s']:.0f} items/s)")
    run.seconds = round(time.perf_counter() - t0, 1)
    return run


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Server settings (--tune): the ceiling client against variants of the model's config.pbtxt


def _variant_config(text: str, max_batch: int, delay_us: int, instances: int, threads: int) -> str:
    import re

    text = re.sub(r"max_batch_size:\s*\d+", f"max_batch_size: {max_batch}", text)
    text = re.sub(r"max_queue_delay_microseconds:\s*\d+", f"max_queue_delay_microseconds: {delay_us}", text)
    text = re.sub(r"(instance_group\s*\[\s*\{\s*count:\s*)\d+", rf"\g<1>{instances}", text)
    return re.sub(r'(key:\s*"intra_op_threads"\s*value:\s*\{\s*string_value:\s*)"\d+"', rf'\g<1>"{threads}"', text)


TUNE_VARIANTS = {
    # (max_batch_size, max_queue_delay_microseconds, instances, onnxruntime intra-op threads)
    "heavy": [(256, 2000, 1, 1), (1024, 0, 1, 1), (1024, 2000, 1, 1), (1024, 10000, 1, 1), (2048, 2000, 1, 1),
              (1024, 2000, 1, 2), (1024, 0, 2, 1), (1024, 2000, 2, 1), (2048, 2000, 2, 1)],
    "digits": [(64, 100, 1, 1), (256, 0, 1, 1), (256, 100, 1, 1), (256, 2000, 1, 1), (256, 100, 2, 1),
               (1024, 100, 1, 1)],
}


def tune(case: ModelCase, args) -> list[dict[str, Any]]:
    n = args.items[0]
    items_dir = args.work / case.name / f"items-{n}"
    case.write_items(items_dir, n)
    wf = load_workflow(bench_workflow(case, items_dir, 2, args.work / case.name / "tune", None))
    rows = load_rows(items_dir)
    config = (wf.model.repository / wf.model.name / "config.pbtxt").read_text()
    table = []
    for max_batch, delay, instances, threads in TUNE_VARIANTS[case.name]:
        with tempfile.TemporaryDirectory(prefix="dgaas-tune-") as tmp:
            repo = Path(tmp) / "repo"
            shutil.copytree(wf.model.repository, repo, symlinks=True,
                            ignore=shutil.ignore_patterns("model.onnx", "weights.npz", "__pycache__"))
            version = repo / wf.model.name / "1"
            for big in ("model.onnx", "weights.npz"):
                if (wf.model.repository / wf.model.name / "1" / big).exists():
                    (version / big).symlink_to(wf.model.repository / wf.model.name / "1" / big)
            (repo / wf.model.name / "config.pbtxt").write_text(
                _variant_config(config, max_batch, delay, instances, threads))
            pilot = start_pilot(wf, Path(tmp), repository=repo)
            try:
                info = model_info(pilot.endpoint.http_url, wf.model.name)
                grid = ceiling_search({"http": pilot.endpoint.http_url}, info, wf.outputs.top_k, rows, ["http"],
                                      sorted({64, 256, max_batch}), args.ceiling_procs, args.search_seconds)
            finally:
                pilot.stop()
        for r in grid:
            table.append({"max_batch_size": max_batch, "queue_delay_us": delay, "instances": instances,
                          "ort_threads": threads, **{k: r[k] for k in ("batch", "procs", "items_per_s", "errors")}})
            _say(f"tune {case.name}: {table[-1]}")
    return table


def write_tune(case: str, table: list[dict[str, Any]], args, info: dict) -> Path:
    path = args.results / f"{case}-server-config.md"
    best = max(table, key=lambda r: r["items_per_s"])
    lines = [f"# {case}: Triton settings measured with the ceiling client", "",
             f"Command: `{info['command']}`  ", f"Date: {info['date']}  ",
             f"Machine: {info['machine']['cpus']} CPUs ({info['machine']['cpu_model']}), "
             f"{info['machine']['memory_gb']} GB; load average at start {info['machine']['loadavg_start']}", "",
             "Raw tritonclient processes over HTTP, each sending requests of `batch` rows back to back for "
             f"{args.search_seconds} s; items/s summed over the processes. Client and server share the cores.", "",
             "| max_batch_size | queue delay us | instances | ort threads | batch | processes | items/s | errors |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        mark = " **best**" if r is best else ""
        lines.append(f"| {r['max_batch_size']} | {r['queue_delay_us']} | {r['instances']} | {r['ort_threads']} | "
                     f"{r['batch']} | {r['procs']} | {r['items_per_s']:.0f}{mark} | {r['errors']} |")
    lines += ["", f"Best: max_batch_size {best['max_batch_size']}, queue delay {best['queue_delay_us']} us, "
              f"{best['instances']} instance(s) of {best['ort_threads']} onnxruntime thread(s), with requests of "
              f"{best['batch']} from {best['procs']} processes: {best['items_per_s']:.0f} items/s."]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# Output: table, markdown, plots, JSON


HEADER = (f"{'model':<7} {'items':>8} {'wkr':>3} {'ceiling':>9} {'dgaas':>9} {'steady':>9} {'naive':>9} "
          f"{'floor':>9} {'d/ceil':>7} {'d/naive':>7} {'1st s':>6} {'RSS MB':>7}")


def _fmt(x: float | None, spec: str) -> str:
    if x is None:
        width = spec.split(".")[0].rstrip("df")
        return format("-", f">{width}") if width else "-"
    return format(x, spec)


def table_lines(runs: list[Run]) -> list[str]:
    lines = [HEADER]
    for r in runs:
        row = r.row()
        ips = row["items_per_s"]
        lines.append(
            f"{r.model:<7} {r.items:>8} {r.workers:>3} {_fmt(ips['ceiling'], '9.0f')} {_fmt(ips['dgaas'], '9.0f')} "
            f"{_fmt(ips['dgaas_steady'], '9.0f')} {_fmt(ips['naive'], '9.0f')} {_fmt(ips['parsl_floor'], '9.0f')} "
            f"{_fmt(row['dgaas_over_ceiling'], '7.3f')} {_fmt(row['dgaas_over_naive'], '7.2f')} "
            f"{_fmt(row['time_to_first_result_s'], '6.2f')} {_fmt(row['driver_peak_rss_mb'], '7.1f')}")
    return lines


def summary_json(runs: list[Run], info: dict) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name in dict.fromkeys(r.model for r in runs):
        mine = [r for r in runs if r.model == name]
        full = [r for r in mine if r.ceiling and r.dgaas and r.naive] or mine
        head = max(full, key=lambda r: (r.items, -mine.index(r)))
        models[name] = {
            **head.row(),
            "driver_peak_rss_mb_by_items": {str(r.items): r.dgaas["driver_peak_rss_mb"] for r in mine
                                            if r.dgaas and r.workers == head.workers},
            "runs": [r.row() for r in mine],
        }
    return {"benchmark": "fanout", "date": info["date"], "command": info["command"], "machine": info["machine"],
            "models": models}


def write_markdown(runs: list[Run], info: dict, path: Path, plots: list[Path]) -> None:
    m = info["machine"]
    lines = ["# Fan-out: ceiling, dgaas-flow, naive and the Parsl floor", "",
             f"Command: `{info['command']}`  ", f"Date: {info['date']}  ",
             f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, {m['os']}, Python {m['python']}; "
             f"load average at start {m['loadavg_start']}", "",
             "items/s of each path (see benchmarks/README.md); `steady` is dgaas-flow between 10% and 90% of its "
             "items (timeline.jsonl); `floor` is empty Parsl tasks/s x chunk size; `1st s` is the campaign's "
             "time to its first result; RSS is the campaign driver's peak resident memory.", "",
             "| model | items | workers | chunk | ceiling | dgaas | steady | naive | floor | dgaas/ceiling "
             "| dgaas/naive | 1st s | driver RSS MB | load avg |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        row = r.row()
        ips = row["items_per_s"]
        lines.append(
            f"| {r.model} | {r.items} | {r.workers} | {r.chunk_size} | {_fmt(ips['ceiling'], '.0f')} | "
            f"{_fmt(ips['dgaas'], '.0f')} | {_fmt(ips['dgaas_steady'], '.0f')} | {_fmt(ips['naive'], '.0f')} | "
            f"{_fmt(ips['parsl_floor'], '.0f')} | {_fmt(row['dgaas_over_ceiling'], '.3f')} | "
            f"{_fmt(row['dgaas_over_naive'], '.2f')} | {_fmt(row['time_to_first_result_s'], '.2f')} | "
            f"{_fmt(row['driver_peak_rss_mb'], '.1f')} | {r.loadavg[0]:.2f} |")
    lines += ["", "## Details", ""]
    for r in runs:
        bits = [f"**{r.model}, {r.items} items, {r.workers} workers**:"]
        if r.ceiling:
            c = r.ceiling
            bits.append(f"ceiling {c['protocol']}, batch {c['batch']}, {c['procs']} client processes "
                        f"({c['errors']} errors);")
        if r.dgaas:
            d = r.dgaas
            lat = d["latency_ms"] or {}
            bits.append(f"campaign wall {d['campaign_wall_s']} s (command {d['command_wall_s']} s), "
                        f"{d['requests']} requests, latency p50 {lat.get('p50')} ms p99 {lat.get('p99')} ms, "
                        f"first result {d['first_result_from_command_s']} s after the command started;")
            bits.append("CPU us per item over the whole run: "
                        + ", ".join(f"{k} {v}" for k, v in d["cpu_us_per_item"].items()) + ";")
            if d["steady_cpu_us_per_item"]:
                bits.append("between the first and the last result: "
                            + ", ".join(f"{k} {v}" for k, v in d["steady_cpu_us_per_item"].items()) + ";")
            for t in d["triton"]:
                bits.append(f"server: avg batch {t.get('avg_batch')}, queue {t.get('queue_ms_per_request')} "
                            f"ms/request, compute {t.get('compute_ms_per_execution')} ms/execution;")
        if r.naive:
            bits.append(f"naive: {r.naive['tasks']} tasks, load {r.naive['load_s_per_task']} s + infer "
                        f"{r.naive['infer_s_per_task']} s per task;")
        if r.floor:
            bits.append(f"floor: {r.floor['tasks']} empty tasks at {r.floor['tasks_per_s']} tasks/s.")
        lines.append("- " + " ".join(bits))
    ceilings = {(r.model, r.items): r.ceiling for r in runs if r.ceiling}
    for (model, n), c in ceilings.items():
        lines += ["", f"### Ceiling search: {model}, {n} items (max_batch_size {c['max_batch_size']})", "",
                  "| protocol | batch | processes | items/s | errors |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {s['protocol']} | {s['batch']} | {s['procs']} | {s['items_per_s']:.0f} | {s['errors']} |"
                  for s in c["search"]]
    if plots:
        lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")


def plot(runs: list[Run], results: Path, tag: str) -> list[Path]:
    """items/s against items (one line per path and worker count) and against workers (one line
    per path and item count), one panel per model; only for axes with more than one value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    colors = {"ceiling": "black", "dgaas": "tab:blue", "dgaas_steady": "tab:cyan", "naive": "tab:red",
              "parsl_floor": "tab:gray"}
    lines = ["-", "--", ":", "-."]
    models = list(dict.fromkeys(r.model for r in runs))
    for axis, other in (("items", "workers"), ("workers", "items")):
        groups: dict[tuple[str, int], list[Run]] = {}
        for r in runs:
            groups.setdefault((r.model, getattr(r, other)), []).append(r)
        groups = {k: v for k, v in groups.items() if len({getattr(r, axis) for r in v}) > 1}
        if not groups:
            continue
        fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.8), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            mine = [(fixed, rs) for (m, fixed), rs in groups.items() if m == model]
            for i, (fixed, rs) in enumerate(mine):
                rs = sorted(rs, key=lambda r: getattr(r, axis))
                for path, color in colors.items():
                    pts = [(getattr(r, axis), r.rates()[path]) for r in rs]
                    pts = [(x, y) for x, y in pts if y]
                    if pts:
                        ax.plot(*zip(*pts, strict=True), lines[i % len(lines)], marker="o", color=color,
                                label=f"{path}, {other} {fixed}")
            ax.set_title(f"{model}: items/s against {axis}")
            ax.set_xlabel(axis + (" (log)" if axis == "items" else ""))
            ax.set_ylabel("items/s (log)")
            if axis == "items":
                ax.set_xscale("log")
            else:
                ax.set_xticks(sorted({r.workers for r in runs if r.model == model}))
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        path = results / f"{tag}-{axis}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


# ------------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", default="digits,heavy", help="models, comma-separated: digits, heavy")
    p.add_argument("--items", type=_ints, default=[10_000, 100_000],
                   help="item counts, comma-separated (default 10000,100000; add 1000000 for the RSS check)")
    p.add_argument("--workers", type=_ints, default=None,
                   help="Parsl workers per node, comma-separated sweep (default: the workflow's provider)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"paths to run, comma-separated ({', '.join(PATHS)})")
    p.add_argument("--full-max", type=int, default=100_000,
                   help="above this many items only the dgaas path runs (the driver-RSS check)")
    p.add_argument("--chunk-size", type=int, help="override the workflow's chunk_size")
    p.add_argument("--ceiling-protocols", default="http,grpc", type=lambda s: s.split(","))
    p.add_argument("--ceiling-batches", type=_ints, default=[64, 256, 0],
                   help="batch sizes the ceiling search tries (0: the model's max_batch_size)")
    p.add_argument("--ceiling-procs", type=_ints, default=[2, 4], help="client processes the search tries")
    p.add_argument("--search-seconds", type=float, default=2.0, help="seconds per ceiling search case")
    p.add_argument("--ceiling-min-seconds", type=float, default=3.0,
                   help="the ceiling's timed run repeats whole passes over the items for at least this long")
    p.add_argument("--floor-tasks", type=int, default=500, help="at least this many empty tasks for the floor")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="items and run folders (default runs/bench-fanout)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where the markdown, JSON and plots go")
    p.add_argument("--tag", default="fanout", help="file name prefix of the results")
    p.add_argument("--tune", action="store_true", help="measure server settings instead (see the module docstring)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.model.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"--model: unknown {unknown}; choose from {sorted(MODELS)}")
    args.path_set = {x.strip() for x in args.paths.split(",") if x.strip()}
    if args.path_set - set(PATHS):
        p.error(f"--paths: unknown {sorted(args.path_set - set(PATHS))}; choose from {', '.join(PATHS)}")
    args.work, args.results = args.work.resolve(), args.results.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = {"command": shlex.join(["python", "benchmarks/fanout.py", *(sys.argv[1:] if argv is None else argv)]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    args.results.mkdir(parents=True, exist_ok=True)
    if args.tune:
        for name in args.models:
            MODELS[name].prepare()
            table = tune(MODELS[name], args)
            _say(f"wrote {write_tune(name, table, args, info)}")
        print(json.dumps({"benchmark": "fanout-tune", **info}))
        return 0
    runs: list[Run] = []
    for name in args.models:
        case = MODELS[name]
        case.prepare()
        workers = args.workers or [load_workflow(case.workflow).provider.workers_per_node]
        ceilings: dict[int, dict] = {}
        for n in args.items:
            paths = set(args.path_set) if n <= args.full_max else args.path_set & {"dgaas"}
            for w in workers:
                runs.append(run_one(case, n, w, paths, args, ceilings))  # one ceiling per size
    info["machine"]["loadavg_end"] = list(os.getloadavg())
    for line in table_lines(runs):
        print(line)
    plots = plot(runs, args.results, args.tag)
    summary = summary_json(runs, info)
    (args.results / f"{args.tag}.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_markdown(runs, info, args.results / f"{args.tag}.md", plots)
    _say(f"wrote {args.results / (args.tag + '.md')}, {args.results / (args.tag + '.json')}"
         + "".join(f", {p}" for p in plots))
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
