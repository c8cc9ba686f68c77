"""(1) The ceiling: raw tritonclient processes, no dgaas-flow code, against a Triton server started
by the project's pilot. What the server can do on this machine; every other path is read against it."""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dgaas_flow.pilot.settings import PilotConfig
from dgaas_flow.pilot.supervisor import Pilot
from dgaas_flow.specs import Workflow

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event


def _client_proc(url: str, protocol: str, model: str, inputs: list[tuple[str, str]], output: str, top_k: int,
                 rows: dict[str, np.ndarray], batch: int, seconds: float | None, min_seconds: float, ready: Queue,
                 go: Event, done: Queue) -> None:
    """One client process: send `rows` (the model's named inputs, (name, datatype) each) in batches,
    for `seconds` (cycling), or in whole passes until min_seconds have gone by (at least one pass)."""
    try:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        lib = httpclient if protocol == "http" else grpcclient
        client = lib.InferenceServerClient(url.split("://", 1)[1])
        requested = [lib.InferRequestedOutput(output, class_count=top_k)]

        def send(lo: int, hi: int) -> None:
            tensors = []
            for name, datatype in inputs:
                x = rows[name][lo:hi]
                tensor = lib.InferInput(name, list(x.shape), datatype)
                tensor.set_data_from_numpy(x)
                tensors.append(tensor)
            client.infer(model, tensors, outputs=requested)

        send(0, batch)  # connect and warm up before the clock starts
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        ready.put(f"{type(exc).__name__}: {exc}")
        return
    ready.put(None)
    go.wait()
    t0, n, errors = time.perf_counter(), 0, 0
    count = len(next(iter(rows.values())))
    starts = range(0, count, batch)
    while True:
        for s in starts:
            try:
                send(s, s + batch)
                n += min(batch, count - s)
            except Exception:  # noqa: BLE001 - counted; a ceiling with errors is reported as such
                errors += 1
            if seconds is not None and time.perf_counter() - t0 >= seconds:
                break
        if time.perf_counter() - t0 >= (min_seconds if seconds is None else seconds):
            break
    done.put((n, time.perf_counter(), errors))
    client.close()


def client_run(urls: dict[str, str], protocol: str, info: dict, top_k: int, rows: np.ndarray | dict[str, np.ndarray],
               batch: int, procs: int, seconds: float | None, min_seconds: float = 0.0) -> dict[str, Any]:
    """items/s of `procs` client processes; seconds=None: whole passes over rows, split between
    them, repeated until min_seconds have gone by (a short pass is mostly noise). `rows`: the
    model's only input, or its inputs by name."""
    ctx = mp.get_context("spawn")  # tritonclient (gevent, gRPC) does not survive a fork
    ready, go, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    named = rows if isinstance(rows, dict) else {info["inputs"][0]["name"]: rows}
    named = {t["name"]: named[t["name"]].reshape(len(named[t["name"]]), *t["dims"]) if t["dims"] else named[t["name"]]
             for t in info["inputs"]}  # the model's own shapes (a channel axis)
    count = len(next(iter(named.values())))
    bounds = [(p[0], p[-1] + 1) for p in np.array_split(np.arange(count), procs)] if seconds is None \
        else [(0, count)] * procs
    inputs = [(t["name"], t["datatype"]) for t in info["inputs"]]
    pool = [ctx.Process(target=_client_proc, args=(urls[protocol], protocol, info["model"], inputs, info["output"],
                                                   top_k, {k: v[lo:hi] for k, v in named.items()}, batch, seconds,
                                                   min_seconds, ready, go, done), daemon=True)
            for lo, hi in bounds]
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
    """What a raw client must know to call the model: its input, output and largest batch."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.split("://", 1)[1])
    meta, config = client.get_model_metadata(model), client.get_model_config(model)
    client.close()
    batched = int(config.get("max_batch_size", 0)) > 0

    def dims(t: dict) -> list[int] | None:
        shape = t["shape"][1 if batched else 0:]
        return shape if all(d > 0 for d in shape) else None

    return {"model": model, "inputs": [{"name": t["name"], "datatype": t["datatype"], "dims": dims(t)}
                                       for t in meta["inputs"]],
            "output": meta["outputs"][0]["name"], "max_batch_size": int(config.get("max_batch_size", 0))}


def start_pilot(wf: Workflow, folder: Path, repository: Path | None = None) -> Pilot:
    """A Triton server the way a campaign starts one: the workflow's `triton` settings, by the pilot."""
    pilot = Pilot(PilotConfig(triton=wf.triton, repository=repository or wf.model.repository,
                              models=[wf.model.name], registry=folder / "pilots", log_dir=folder / "logs"))
    pilot.start()
    return pilot


def ceiling_search(urls: dict[str, str], info: dict, top_k: int, rows: np.ndarray, protocols: list[str],
                   batches: list[int], procs: list[int], seconds: float) -> list[dict[str, Any]]:
    """One timed client run per protocol, batch size (0: the model's max_batch_size) and process count."""
    mbs = info["max_batch_size"] or 1
    sizes = sorted({min(b, mbs) for b in batches} | ({mbs} if 0 in batches else set()))
    sizes = [b for b in sizes if b > 0]
    return [client_run(urls, protocol, info, top_k, rows, b, p, seconds)
            for protocol in protocols for b in sizes for p in procs]


def run_ceiling(wf: Workflow, rows: np.ndarray, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The search, then whole passes over all the items with its best case."""
    with _server(wf, folder) as (urls, info):
        grid = ceiling_search(urls, info, wf.outputs.top_k, rows, args.ceiling_protocols, args.ceiling_batches,
                              args.ceiling_procs, args.search_seconds)
        best = max(grid, key=lambda r: r["items_per_s"])
        final = client_run(urls, best["protocol"], info, wf.outputs.top_k, rows, best["batch"], best["procs"], None,
                           args.ceiling_min_seconds)
    return {**final, "search": grid, "max_batch_size": info["max_batch_size"]}


def recheck_ceiling(wf: Workflow, rows: np.ndarray, folder: Path, ceiling: dict[str, Any],
                    args: argparse.Namespace) -> float:
    """items/s of the ceiling's best case again, once the other paths have run: this machine's
    speed drifts, and a ratio is worth only as much as the ceiling holds still."""
    with _server(wf, folder) as (urls, info):
        again = client_run(urls, ceiling["protocol"], info, wf.outputs.top_k, rows, ceiling["batch"],
                           ceiling["procs"], None, args.ceiling_min_seconds)
    return again["items_per_s"]


@contextlib.contextmanager
def _server(wf: Workflow, folder: Path) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """A pilot's server for the raw clients: its URLs and what they must know of the model."""
    with contextlib.closing(_Closer(start_pilot(wf, folder))) as closer:
        urls = {"http": closer.pilot.endpoint.http_url, "grpc": closer.pilot.endpoint.grpc_url}
        yield urls, model_info(urls["http"], wf.model.name)


class _Closer:
    """Stops the pilot however the measurement ends (contextlib.closing wants a close())."""

    def __init__(self, pilot: Pilot):
        self.pilot = pilot

    def close(self) -> None:
        self.pilot.stop()
