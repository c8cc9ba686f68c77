"""A campaign: enumerate inputs, chunk them, keep a bounded number of tasks in flight, stream each
item's result to results.jsonl as its chunk completes, resume from what is already there, and
summarize. Memory holds only the chunks in flight, never all results or all inputs.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import parsl

from dgaas_flow import inputs, metrics, records
from dgaas_flow.chunking import chunk_sizes
from dgaas_flow.config import load as load_parsl
from dgaas_flow.errors import PilotError
from dgaas_flow.inputs import Run
from dgaas_flow.pilot.endpoint import Endpoint, read_registry
from dgaas_flow.pilot.supervisor import PilotConfig
from dgaas_flow.progress import Progress
from dgaas_flow.results import ResultsFile, Tally
from dgaas_flow.runfiles import RESULTS, SUMMARY, TIMELINE, WORKFLOW
from dgaas_flow.spec import Workflow
from dgaas_flow.stats import RunStats, Timeline
from dgaas_flow.tasks import InferRequest, encode_chunk, infer_encoded_chunk

PILOT_STOP_WAIT_S = 30.0


def enumerate_runs(wf: Workflow) -> Iterator[Run]:
    """The workflow's inputs, streamed as runs (see dgaas_flow.inputs)."""
    return inputs.enumerate_runs(wf.inputs.files, wf.inputs.format, wf.inputs.labels)


def _lost_chunk(chunk: list[Run], exc: BaseException) -> dict[str, Any]:
    message = f"task failed after all retries: {type(exc).__name__}: {exc}"
    items = [i for run in chunk for i in run.items()]
    lost = records.ChunkRecords([i.id for i in items], [i.label for i in items])
    lost.fail(range(len(items)), message, None)
    return lost.outcome([])


def pilot_config_path(wf: Workflow, out_dir: Path) -> Path | None:
    """Where the blocks' pilots read their settings; None where blocks start no pilot: the glidein
    started one, or the workflow names its server (server.url, server.gateway)."""
    if wf.provider.kind == "glideinwms" or wf.server.url or wf.server.gateway:
        return None
    return out_dir / "pilot.json"


def run_campaign(
    wf: Workflow, out: str | Path | None = None, limit: int | None = None, progress: str = "auto",
    stop: threading.Event | None = None, runs: Iterable[Run] | None = None, total: int | None = None,
) -> dict[str, Any]:
    """Run a workflow to completion and return its summary (also written to summary.json). When
    `stop` is set, the campaign stops at its next safe point with KeyboardInterrupt, after
    cancelling its blocks and writing the summary. `runs` replaces the workflow's own inputs
    (a scale test cycles them); `total` is then their number of items, if known."""
    stats = RunStats()
    out_dir = wf.out_dir(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / WORKFLOW).write_text(wf.model_dump_json(indent=2))
    registry = out_dir / "pilots"
    pilot_config = pilot_config_path(wf, out_dir)
    if pilot_config is not None:
        pilot_config.write_text(PilotConfig(
            triton=wf.triton, repository=wf.model.repository, models=[wf.model.name],
            registry=registry, log_dir=out_dir / "logs",
        ).model_dump_json(indent=2))

    results = ResultsFile(out_dir / RESULTS)
    stats.resumed = len(results.done)
    if runs is None:
        runs = enumerate_runs(wf)
        total = sum(run.count for run in enumerate_runs(wf))  # headers only: rows files are not read
        total = total if limit is None else min(total, limit)
    sizes = chunk_sizes(wf, None if total is None else total - stats.resumed)
    todo = inputs.chunk_runs(runs, sizes, limit, results.done if len(results.done) else None)
    request = InferRequest.from_workflow(wf)
    dfk = load_parsl(wf.provider, out_dir / "parsl", pilot_config, wf.task_retries)
    bar = Progress(total, stats.resumed, mode=progress)
    timeline = Timeline(out_dir / TIMELINE, stats)
    watch = PilotWatch(registry, since=stats.started_at)
    complete = False
    try:
        _fan_out(todo, wf, request, results, stats, _Display(bar, timeline, watch), stop or threading.Event())
        complete = True
    finally:
        watch.read()  # the last display says how the pilots are now, not up to a second ago
        bar.refresh(watch.up, watch.ready)
        timeline.tick(watch.up, watch.ready, force=True)
        bar.close()
        results.close()
        timeline.close()
        dfk.cleanup()
        parsl.clear()
        _wait_for_pilots(registry, since=stats.started_at)
        summary = summarize(wf, out_dir, total, stats, results.tally)
        summary["complete"] = complete
        (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class PilotWatch:
    """Reads the pilots' endpoint files at most once a second: how many are up and ready for the
    progress display, and a fast, clear failure when every pilot has failed (nothing could ever
    finish). Only this run's pilots count: those an earlier run left in the folder are history."""

    def __init__(self, registry: Path, since: str, every_s: float = 1.0):
        self.registry, self.since, self.every_s = registry, since, every_s
        self.up = self.ready = 0
        self._last = float("-inf")

    def read(self) -> list[Endpoint]:
        """This run's pilots as their endpoint files say now."""
        self._last = time.monotonic()
        endpoints = pilots_since(self.registry, self.since)
        self.ready = sum(1 for e in endpoints if e.state == "ready")
        self.up = sum(1 for e in endpoints if e.state in ("starting", "ready", "restarting"))
        return endpoints

    def counts(self) -> tuple[int, int]:
        """(pilots up: starting, ready or restarting; pilots ready)."""
        if time.monotonic() - self._last >= self.every_s:
            endpoints = self.read()
            if endpoints and all(e.state == "failed" for e in endpoints):
                raise PilotError(
                    f"every pilot failed ({len(endpoints)}), so no item can be served; the last one said:\n"
                    f"{endpoints[-1].error}"
                )
        return self.up, self.ready


class _Display:
    """Where progress goes: the bar or log lines, and the timeline file."""

    def __init__(self, bar: Progress, timeline: Timeline, watch: PilotWatch):
        self.bar, self.timeline, self.watch = bar, timeline, watch

    def advance(self, items: int, failed: int) -> None:
        self.bar.advance(items, failed)
        self.refresh()

    def refresh(self) -> None:
        up, ready = self.watch.counts()
        self.bar.refresh(up, ready)
        self.timeline.tick(up, ready)


def _fan_out(todo: Iterator[list[Run]], wf, request, results, stats: RunStats, display: _Display,
             stop: threading.Event) -> None:
    in_flight: dict[cf.Future, list[Run]] = {}

    def collect(done_futures) -> None:
        for fut in done_futures:
            chunk = in_flight.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost chunk becomes recorded errors
                outcome = _lost_chunk(chunk, exc)
            results.append(outcome)
            stats.add(outcome["items"], outcome["failed"], outcome["latencies_ms"])
            display.advance(outcome["items"], outcome["failed"])
            # a finished Parsl future holds its result until Python's cycle collector frees both; the
            # chunk's text (a megabyte at 8,192 items) goes now, so memory does not grow with chunks
            outcome.clear()

    def wait_while(condition) -> None:
        while condition():
            if stop.is_set():
                raise KeyboardInterrupt
            done, _ = cf.wait(in_flight, timeout=1.0, return_when=cf.FIRST_COMPLETED)
            collect(done)
            display.refresh()

    limit = wf.in_flight_limit()
    while not stop.is_set() and (chunk := next(todo, None)):
        wait_while(lambda: len(in_flight) >= limit)
        in_flight[infer_encoded_chunk(encode_chunk(chunk), request)] = chunk
    if stop.is_set():
        raise KeyboardInterrupt
    wait_while(lambda: bool(in_flight))


def pilots_since(registry: Path, since: str) -> list[Endpoint]:
    """The pilots that started at or after `since` (an ISO time in seconds, as endpoints record)."""
    return [e for e in read_registry(registry) if e.started_at >= since]


def _wait_for_pilots(registry: Path, since: str) -> None:
    """Blocks were told to stop; return once their pilots say so (bounded), so no server outlives
    the campaign that started it."""
    deadline = time.monotonic() + PILOT_STOP_WAIT_S
    while time.monotonic() < deadline:
        if all(e.state in ("stopped", "failed") for e in pilots_since(registry, since)):
            return
        time.sleep(0.2)


def summarize(wf: Workflow, out_dir: Path, total: int, stats: RunStats, tally: Tally) -> dict[str, Any]:
    """Counts are of results.jsonl (the whole campaign, resumed runs included); speed and latency
    are this run's."""
    per_pilot = tally.pilots.copy()
    wall = stats.wall_s
    pilots, triton = [], []
    for e in read_registry(out_dir / "pilots"):
        served = per_pilot.pop(e.http_url or "", 0) + per_pilot.pop(e.grpc_url or "", 0)
        pilots.append({"endpoint": e.http_url, "grpc": e.grpc_url, "host": e.host, "block": e.block,
                       "batch_job": e.batch_job, "gpus": e.gpus, "restarts": e.restarts, "state": e.state,
                       "items": served})
        if e.metrics:
            triton.append({"endpoint": e.http_url, "metrics_url": e.metrics_url, **metrics.describe(e.metrics)})
    pilots += [{"endpoint": url, "items": n} for url, n in per_pilot.items()]
    p = wf.provider
    this_run = pilots_since(out_dir / "pilots", stats.started_at)
    nodes = len(this_run) or p.init_blocks * p.nodes_per_block  # a pilot per node; none: a gateway's
    summary: dict[str, Any] = {
        "workflow": wf.name,
        "provider": wf.provider.name,
        "model": wf.model.name,
        "out_dir": str(out_dir),
        "started_at": stats.started_at,
        "items_total": total,
        "items_ok": tally.ok,
        "items_failed": tally.failed,
        "items_this_run": stats.items,
        "items_resumed": stats.resumed,
        "wall_seconds": round(wall, 3),
        "items_per_second": round(stats.items / wall, 2) if wall > 0 else 0.0,
        "steady_items_per_second": stats.steady_rate(),
        "time_to_first_result_s": round(stats.first_result_s, 3) if stats.first_result_s is not None else None,
        "requests": stats.latencies.count,
        "latency_ms": stats.latencies.summary(),
        "blocks": len({e.block for e in this_run}) or p.init_blocks,
        "workers": nodes * p.workers_per_node,
        "pilots": pilots,
        "restarts": sum(p.get("restarts", 0) for p in pilots),
        "triton": triton,
        "failures_by_reason": dict(tally.reasons.most_common(10)),
    }
    if tally.labelled:
        summary["accuracy"] = round(tally.correct / tally.labelled, 4)
    return summary


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"workflow {s['workflow']} on provider {s['provider']}: "
        f"{s['items_ok']}/{s['items_total'] if s['items_total'] is not None else '?'} items ok, "
        f"{s['items_failed']} failed"
        + (f", {s['items_resumed']} resumed from an earlier run" if s["items_resumed"] else ""),
        f"  this run: {s['items_this_run']} items in {s['wall_seconds']:.1f} s "
        f"({s['items_per_second']:.1f} items/s), {s['requests']} requests",
    ]
    if s["time_to_first_result_s"] is not None:
        lines.append(f"  first result after {s['time_to_first_result_s']:.1f} s; then "
                     f"{s['steady_items_per_second'] or 0:.1f} items/s")
    lat = s["latency_ms"]
    if lat["p50"] is not None:
        lines.append(
            f"  request latency ms: p50 {lat['p50']:.2f}  p95 {lat['p95']:.2f}  p99 {lat['p99']:.2f}"
        )
    if "accuracy" in s:
        lines.append(f"  accuracy: {s['accuracy']:.4f}")
    for p in s["pilots"]:
        extra = f" on {p['host']} block {p['block']}, restarts {p['restarts']}" if "host" in p else ""
        lines.append(f"  pilot {p['endpoint']}{extra}: {p['items']} items")
    for t in s["triton"]:
        if t["requests"]:
            lines.append(f"  triton {t['endpoint']}: {t['requests']} requests, batch {t['avg_batch']} on average, "
                         f"queue {t['queue_ms_per_request']} ms/request, compute {t['compute_ms_per_execution']} "
                         f"ms/execution")
    for reason, n in s["failures_by_reason"].items():
        lines.append(f"  failed: {n} x {reason}")
    lines.append(f"  results: {s['out_dir']}/{RESULTS}   summary: {s['out_dir']}/{SUMMARY}")
    return "\n".join(lines)
