"""A campaign: enumerate inputs, chunk them, keep a bounded number of tasks in flight, stream each
item's result to results.jsonl (or to results/ as Parquet parts) as its chunk completes, resume
from what is already there, and summarize (dgaas_flow.campaign.summary). Memory holds only the
chunks in flight, never all results or all inputs.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import json
import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dgaas_flow import inputs
from dgaas_flow.apps.tasks import InferRequest, encode_chunk, infer_encoded_chunk, new_chunk
from dgaas_flow.campaign import records
from dgaas_flow.campaign.chunking import ChunkSizes
from dgaas_flow.campaign.files import MANIFEST, PARTS, RESULTS, SUMMARY, TIMELINE, WORKFLOW
from dgaas_flow.campaign.progress import Progress
from dgaas_flow.campaign.session import Session
from dgaas_flow.campaign.sink import ResultsFile, ResultsParts
from dgaas_flow.campaign.stats import RunStats, Timeline
from dgaas_flow.campaign.summary import earlier_segments, summarize
from dgaas_flow.errors import PilotError, UserError
from dgaas_flow.inputs import FileSlice
from dgaas_flow.pilot.endpoint import Endpoint, pilots_since, read_registry
from dgaas_flow.specs import Workflow

logger = logging.getLogger(__name__)


def workflow_slices(wf: Workflow) -> Iterator[FileSlice]:
    """The workflow's inputs, streamed as runs (see dgaas_flow.inputs)."""
    return inputs.enumerate_slices(wf.inputs.files, wf.inputs, wf.inputs.labels)


def _lost_chunk(chunk: list[FileSlice], exc: BaseException, results: str = "jsonl") -> dict[str, Any]:
    message = f"task failed after all retries: {type(exc).__name__}: {exc}"
    logger.warning("a chunk of %d slice(s) is recorded as failed: %s", len(chunk), message)
    ids, labels = _ids_and_labels(chunk)
    lost = new_chunk(ids, labels, [(run.path, run.start, run.count) for run in chunk], results)
    lost.fail(range(len(ids)), message, None)
    return lost.outcome([])


def _ids_and_labels(chunk: list[FileSlice]) -> tuple[Any, list[str | None]]:
    """The chunk's items' quoted ids (an Arrow string array) and labels, in order."""
    labels: list[str | None] = []
    for run in chunk:
        labels += [run.label] * run.count
    return inputs.quoted_ids(chunk), labels


def open_results(wf: Workflow, out_dir: Path) -> tuple[ResultsFile | ResultsParts, bool]:
    """The run folder's results in the workflow's format, and whether they continue earlier runs'.
    A folder holding results of the other format is refused: resuming it would start over."""
    jsonl, parts = out_dir / RESULTS, out_dir / PARTS / MANIFEST
    mine, other = (parts, jsonl) if wf.outputs.format == "parquet" else (jsonl, parts)
    if other.exists():
        raise UserError(f"{out_dir} holds {other.relative_to(out_dir)}, results of another outputs.format than "
                        f"{wf.outputs.format}: run it with --out on another folder, or remove them first")
    continued = mine.exists()
    if wf.outputs.format == "parquet":
        return ResultsParts(out_dir / PARTS, wf.outputs.part_rows), continued
    return ResultsFile(jsonl), continued


def run_campaign(
    wf: Workflow, out: str | Path | None = None, limit: int | None = None, progress: str = "auto",
    stop: threading.Event | None = None, runs: Iterable[FileSlice] | None = None, total: int | None = None,
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

    def __init__(self, wf: Workflow, out: str | Path | None, limit: int | None, runs: Iterable[FileSlice] | None,
                 total: int | None):
        self.wf, self.stats = wf, RunStats()
        # what makes the result lines, imported (0.1 s) while blocks and pilots start, not when the
        # first result has come; a session's later campaigns have it (starting a thread for nothing
        # costs one of them a few milliseconds of its time: the thread holds the interpreter)
        if "pyarrow.compute" not in sys.modules:
            threading.Thread(target=importlib.import_module, args=("pyarrow.compute",), daemon=True).start()
        self.out_dir = wf.out_dir(out)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.results, continued = open_results(wf, self.out_dir)
        (self.out_dir / WORKFLOW).write_text(wf.model_dump_json(indent=2))
        # a folder whose results this run continues: its earlier runs' figures stay in the summary
        self.earlier = earlier_segments(self.out_dir) if continued else []
        self.stats.resumed = len(self.results.done)
        if runs is None:
            runs = workflow_slices(wf)
            total = sum(run.count for run in workflow_slices(wf))  # headers only: rows files are not read
            total = total if limit is None else min(total, limit)
        self.total = total
        self.sizes = ChunkSizes(wf, None if total is None else total - self.stats.resumed)
        self.todo = inputs.chunk_slices(runs, self.sizes, limit, self.results.done if len(self.results.done) else None)
        self.in_flight: dict[cf.Future, list[FileSlice]] = {}
        self.pilots_before: dict[tuple, Endpoint] = {}  # the pilots as the campaign began
        self.complete = False
        self.summary: dict[str, Any] = {}

    def run(self, session: Session, progress: str, stop: threading.Event | None) -> None:
        """Fan the chunks out to the session's workers, writing results as they come."""
        self.pilots_before = {e.key: e for e in read_registry(session.registry)}
        model = (self.wf.model.name, self.wf.model.version)
        self.sizes.request_ms = session.request_ms.get(model)  # a fast model's chunks grow from the start
        bar = Progress(self.total, self.stats.resumed, mode=progress)
        timeline = Timeline(self.out_dir / TIMELINE, self.stats)
        watch = PilotWatch(session.registry, since=session.started_at)
        try:
            request = InferRequest.from_workflow(self.wf, fallback=str(session.settings_file))
            _fan_out(self.todo, self.sizes, self.wf, request, self.results, self.stats,
                     _Display(bar, timeline, session.watch(watch)), stop or threading.Event(), self.in_flight)
            self.complete = True
        finally:
            if self.sizes.request_ms is not None:
                session.request_ms[model] = self.sizes.request_ms
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
                                 self.pilots_before, fresh, self.earlier, self.complete)
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
        coming_or_going = ("starting", "restarting", "draining")
        self.up = self.ready + sum(1 for e in endpoints if e.state in coming_or_going and not e.gone())
        return endpoints

    def counts(self, now: bool = False) -> tuple[int, int]:
        """(pilots up: starting, ready or restarting; pilots ready); `now`: read the files now, not
        up to a second ago."""
        if now or time.monotonic() - self._last >= self.every_s:
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


def _fan_out(todo: Iterator[list[FileSlice]], sizes: ChunkSizes, wf, request, results, stats: RunStats,
             display: _Display, stop: threading.Event, in_flight: dict[cf.Future, list[FileSlice]]) -> None:
    """Keep `wf.in_flight_limit()` chunks in flight until `todo` (chunks of `sizes`) is done.
    Finished chunks leave the count before their lines are made, and their places are filled first:
    making a chunk's lines is the driver's serial work, and the workers' queue should not wait for
    it. Each finished chunk's request latencies size the chunks made after it."""
    limit, more = wf.in_flight_limit(), True

    def fill() -> None:
        nonlocal more
        while more and len(in_flight) < limit and not stop.is_set():
            chunk = next(todo, None)
            if chunk is None:
                more = False
                return
            in_flight[infer_encoded_chunk(encode_chunk(chunk), request)] = chunk

    def collect(fut: cf.Future, chunk: list[FileSlice]) -> None:
        try:
            outcome = fut.result()
        except Exception as exc:  # noqa: BLE001 - a lost chunk becomes recorded errors
            display.watch.counts(now=True)  # unless every pilot failed: then its items stay undone
            outcome = _lost_chunk(chunk, exc, request.results)
        if "answers" in outcome:
            outcome = records.lines_of(outcome, *_ids_and_labels(chunk))
        results.append(outcome)
        sizes.observe(outcome["latencies_ms"])
        stats.add(outcome["items"], outcome["failed"], outcome["latencies_ms"], outcome["contacted"])
        display.advance(outcome["items"], outcome["failed"])
        # a finished Parsl future holds its result until Python's cycle collector frees both; the
        # chunk's text (a megabyte at 8,192 items) goes now, so memory does not grow with chunks
        outcome.clear()

    fill()
    while in_flight:
        if stop.is_set():
            raise KeyboardInterrupt
        done, _ = cf.wait(in_flight, timeout=1.0, return_when=cf.FIRST_COMPLETED)
        finished = [(fut, in_flight.pop(fut)) for fut in done]
        fill()
        for fut, chunk in finished:
            collect(fut, chunk)
        display.refresh()
    if stop.is_set():
        raise KeyboardInterrupt
