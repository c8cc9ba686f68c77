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

from dgaas_flow import inputs, records
from dgaas_flow.chunking import chunk_sizes
from dgaas_flow.errors import PilotError
from dgaas_flow.inputs import Run
from dgaas_flow.pilot import metrics
from dgaas_flow.pilot.endpoint import Endpoint, read_registry
from dgaas_flow.progress import Progress
from dgaas_flow.results import ResultsFile, Tally
from dgaas_flow.runfiles import RESULTS, SUMMARY, TIMELINE, WORKFLOW
from dgaas_flow.session import Session, pilots_since
from dgaas_flow.spec import Workflow
from dgaas_flow.stats import RunStats, Timeline
from dgaas_flow.tasks import InferRequest, encode_chunk, infer_encoded_chunk


def enumerate_runs(wf: Workflow) -> Iterator[Run]:
    """The workflow's inputs, streamed as runs (see dgaas_flow.inputs)."""
    return inputs.enumerate_runs(wf.inputs.files, wf.inputs.format, wf.inputs.labels)


def _lost_chunk(chunk: list[Run], exc: BaseException) -> dict[str, Any]:
    message = f"task failed after all retries: {type(exc).__name__}: {exc}"
    items = [i for run in chunk for i in run.items()]
    lost = records.ChunkRecords(records.quote(i.id for i in items), [i.label for i in items])
    lost.fail(range(len(items)), message, None)
    return lost.outcome([])


def run_campaign(
    wf: Workflow, out: str | Path | None = None, limit: int | None = None, progress: str = "auto",
    stop: threading.Event | None = None, runs: Iterable[Run] | None = None, total: int | None = None,
    session: Session | None = None,
) -> dict[str, Any]:
    """Run a workflow to completion and return its summary (also written to summary.json). When
    `stop` is set, the campaign stops at its next safe point with KeyboardInterrupt, after
    writing the summary. `runs` replaces the workflow's own inputs (a scale test cycles them);
    `total` is then their number of items, if known.

    In an open `session` the campaign uses the session's blocks and pilots and leaves them up.
    Without one, it opens a session of its own and closes it before its summary: its time then
    includes stopping the pilots."""
    if session is not None:
        session.check(wf)
        session.settle()
    campaign = Campaign(wf, out, limit, runs, total)
    if session is not None:
        try:
            campaign.run(session, progress, stop)
        finally:
            # an interrupted campaign's chunks in flight reached pilots it cannot name
            served = campaign.stats.served_by if campaign.complete else None
            campaign.write_summary(session, fresh=session.read_counters(served))
        return campaign.summary
    own = Session(wf, out)
    try:
        own.open()
    except BaseException:
        campaign.results.close()  # nothing ran: the last summary stays as it was
        raise
    try:
        campaign.run(own, progress, stop)
    finally:
        own.close()
        campaign.stats.end()  # this campaign started the pilots: stopping them is part of its time
        campaign.write_summary(own, fresh=None)
    return campaign.summary


class Campaign:
    """One run of a workflow: what it reads (prepared before any server starts, so a mistake in
    the inputs costs no blocks), what it has written, and its counts."""

    def __init__(self, wf: Workflow, out: str | Path | None, limit: int | None, runs: Iterable[Run] | None,
                 total: int | None):
        self.wf, self.stats = wf, RunStats()
        self.out_dir = wf.out_dir(out)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / WORKFLOW).write_text(wf.model_dump_json(indent=2))
        self.results = ResultsFile(self.out_dir / RESULTS)
        self.stats.resumed = len(self.results.done)
        if runs is None:
            runs = enumerate_runs(wf)
            total = sum(run.count for run in enumerate_runs(wf))  # headers only: rows files are not read
            total = total if limit is None else min(total, limit)
        self.total = total
        sizes = chunk_sizes(wf, None if total is None else total - self.stats.resumed)
        self.todo = inputs.chunk_runs(runs, sizes, limit, self.results.done if len(self.results.done) else None)
        self.in_flight: dict[cf.Future, list[Run]] = {}
        self.pilots_before: dict[tuple, Endpoint] = {}  # the pilots as the campaign began
        self.complete = False
        self.summary: dict[str, Any] = {}

    def run(self, session: Session, progress: str, stop: threading.Event | None) -> None:
        """Fan the chunks out to the session's workers, writing results as they come."""
        self.pilots_before = {e.key: e for e in read_registry(session.registry)}
        bar = Progress(self.total, self.stats.resumed, mode=progress)
        timeline = Timeline(self.out_dir / TIMELINE, self.stats)
        watch = PilotWatch(session.registry, since=session.started_at)
        try:
            _fan_out(self.todo, self.wf, InferRequest.from_workflow(self.wf), self.results, self.stats,
                     _Display(bar, timeline, watch), stop or threading.Event(), self.in_flight)
            self.complete = True
        finally:
            session.abandon(list(self.in_flight))
            watch.read()  # the last display says how the pilots are now, not up to a second ago
            bar.refresh(watch.up, watch.ready)
            timeline.tick(watch.up, watch.ready, force=True)
            bar.close()
            self.results.close()
            timeline.close()
            self.stats.end()

    def write_summary(self, session: Session, fresh: set[tuple] | None) -> None:
        """`fresh`: the pilots whose counters are current as the campaign ended (read then, or not
        asked by it: see Session.read_counters); None when every pilot has stopped (their counters
        are final)."""
        self.summary = summarize(self.wf, self.out_dir, self.total, self.stats, self.results.tally, session,
                                 self.pilots_before, fresh)
        self.summary["complete"] = self.complete
        (self.out_dir / SUMMARY).write_text(json.dumps(self.summary, indent=2) + "\n")


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
        self.ready = sum(1 for e in endpoints if e.serving())
        self.up = self.ready + sum(1 for e in endpoints if e.state in ("starting", "restarting") and not e.gone())
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
             stop: threading.Event, in_flight: dict[cf.Future, list[Run]]) -> None:

    def collect(done_futures) -> None:
        for fut in done_futures:
            chunk = in_flight.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost chunk becomes recorded errors
                outcome = _lost_chunk(chunk, exc)
            results.append(outcome)
            stats.add(outcome["items"], outcome["failed"], outcome["latencies_ms"], outcome["contacted"])
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


def summarize(wf: Workflow, out_dir: Path, total: int | None, stats: RunStats, tally: Tally, session: Session,
              before: dict[tuple, Endpoint], fresh: set[tuple] | None) -> dict[str, Any]:
    """Counts are of results.jsonl (the whole campaign, resumed runs included); speed, latency,
    restarts and Triton's figures are this run's: for each pilot of the session that was up during
    it, the counters as it ended (`fresh`: current then; None: final, the pilots have stopped) less
    those it had published when it began (`before`)."""
    per_pilot = tally.pilots.copy()
    wall = stats.wall_s
    gone = ("stopped", "failed")
    this_run = [e for e in pilots_since(session.registry, session.started_at)
                if e.key not in before or before[e.key].state not in gone]
    up = {e.key for e in this_run}
    pilots, triton = [], []
    for e in read_registry(session.registry):
        served = per_pilot.pop(e.http_url or "", 0) + per_pilot.pop(e.grpc_url or "", 0)
        earlier = before.get(e.key)
        pilots.append({"endpoint": e.http_url, "grpc": e.grpc_url, "host": e.host, "block": e.block,
                       "batch_job": e.batch_job, "gpus": e.gpus, "state": e.state, "items": served,
                       "restarts": e.restarts - (earlier.restarts if earlier else 0)})
        if e.key in up and e.metrics:
            counted = metrics.subtract(e.metrics, earlier.metrics if earlier else {})
            entry = {"endpoint": e.http_url, "metrics_url": e.metrics_url, **metrics.describe(counted)}
            if fresh is not None and e.key not in fresh:
                entry["stale"] = True  # the pilot did not answer: its counters as it last published them
            triton.append(entry)
    pilots += [{"endpoint": url, "items": n} for url, n in per_pilot.items()]
    p = wf.provider
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
                         f"ms/execution" + (" (as last published: the pilot did not answer)" if t.get("stale") else ""))
    for reason, n in s["failures_by_reason"].items():
        lines.append(f"  failed: {n} x {reason}")
    lines.append(f"  results: {s['out_dir']}/{RESULTS}   summary: {s['out_dir']}/{SUMMARY}")
    return "\n".join(lines)
