"""A run folder's files, read for the report. A missing or malformed file is a UserError that names
it and says what to do; keys an older dgaas-flow did not write are read as "not recorded" (None,
or absent from `recorded`), so old runs still render."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgaas_flow.campaign.files import SCALE, SUMMARY, TIMELINE
from dgaas_flow.errors import UserError

WORKFLOW_JSON = "workflow.json"

RERUN_CAMPAIGN = "run `dgaas-flow run WORKFLOW --out RUN_DIR` to write it again"
RERUN_SCALE = "run `dgaas-flow scale-test WORKFLOW --out DIR` to write it again"


def read_json_object(path: Path, remedy: str) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; {remedy}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc}); {remedy}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); {remedy}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}; {remedy}")
    return data


class Fields:
    """Typed reads of one JSON object from `path`; an error names the file and the key
    (`where` is the object's place in the file, e.g. "steps[2]."). A key that is absent or null
    reads as None; `required` keys must be there."""

    def __init__(self, data: dict[str, Any], path: Path, remedy: str, where: str = ""):
        self.data, self.path, self.remedy, self.where = data, path, remedy, where

    def _fail(self, key: str, expected: str) -> UserError:
        value = self.data.get(key)
        shown = json.dumps(value)[:80] if key in self.data else "nothing"
        return UserError(f"{self.path}: {self.where}{key}: expected {expected}, found {shown}; {self.remedy}")

    def _get(self, key: str, required: bool, ok: tuple[type, ...], expected: str) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self._fail(key, expected)
            return None
        if isinstance(value, bool) and bool not in ok or not isinstance(value, ok):
            raise self._fail(key, expected)
        return value

    def integer(self, key: str, required: bool = False) -> int | None:
        value = self._get(key, required, (int, float), "a whole number")
        if value is not None and (not math.isfinite(value) or value != int(value)):
            raise self._fail(key, "a whole number")
        return None if value is None else int(value)

    def number(self, key: str, required: bool = False) -> float | None:
        value = self._get(key, required, (int, float), "a number")
        if value is not None and not math.isfinite(value):
            raise self._fail(key, "a finite number")
        return None if value is None else float(value)

    def string(self, key: str, required: bool = False) -> str | None:
        value = self._get(key, required, (str, int, float), "a string")
        return None if value is None else str(value)

    def boolean(self, key: str) -> bool | None:
        return self._get(key, False, (bool,), "true or false")

    def objects(self, key: str) -> list[Fields] | None:
        items = self._get(key, False, (list,), "a list of objects")
        if items is None:
            return None
        if not all(isinstance(item, dict) for item in items):
            raise self._fail(key, "a list of objects")
        return [Fields(item, self.path, self.remedy, f"{self.where}{key}[{i}].") for i, item in enumerate(items)]

    def counts(self, key: str) -> dict[str, int] | None:
        """An object of name -> whole number (failures by reason, items per pilot)."""
        value = self._get(key, False, (dict,), "an object of counts")
        if value is None:
            return None
        if not all(isinstance(n, int | float) and not isinstance(n, bool) and n == int(n) for n in value.values()):
            raise self._fail(key, "an object of name: count")
        return {str(k): int(n) for k, n in value.items()}

    def obj(self, key: str) -> Fields | None:
        value = self._get(key, False, (dict,), "an object")
        return None if value is None else Fields(value, self.path, self.remedy, f"{self.where}{key}.")


@dataclass
class Latency:
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None
    histogram: list[tuple[float, int]] | None = None  # (upper bound ms, count), increasing; None: not recorded

    @classmethod
    def read(cls, f: Fields | None) -> Latency:
        if f is None:
            return cls()
        histogram = None
        raw = f.data.get("histogram")
        if raw is not None:
            if not isinstance(raw, list) or not all(
                isinstance(b, list) and len(b) == 2 and all(isinstance(x, int | float) and not isinstance(x, bool)
                                                            for x in b) for b in raw):
                raise f._fail("histogram", "a list of [upper_ms, count] pairs")
            histogram = [(float(upper), int(count)) for upper, count in raw]
            if any(b[0] <= a[0] for a, b in zip(histogram, histogram[1:], strict=False)):
                raise f._fail("histogram", "buckets in increasing order of upper_ms")
        return cls(f.number("p50"), f.number("p95"), f.number("p99"), f.number("mean"), f.number("max"), histogram)


@dataclass
class Segment:
    """One run of a run folder (a first run, then each resume), as summary.json's `segments`."""

    started_at: str | None
    complete: bool | None
    items: int | None
    failed: int | None
    wall_seconds: float | None
    items_per_second: float | None
    requests: int | None
    latency: Latency

    @classmethod
    def read(cls, f: Fields) -> Segment:
        return cls(f.string("started_at"), f.boolean("complete"), f.integer("items"), f.integer("failed"),
                   f.number("wall_seconds"), f.number("items_per_second"), f.integer("requests"),
                   Latency.read(f.obj("latency_ms")))


@dataclass
class TritonStats:
    endpoint: str | None
    metrics_url: str | None
    requests: int | None
    failures: int | None
    inferences: int | None
    executions: int | None
    avg_batch: float | None
    queue_ms_per_request: float | None
    compute_ms_per_execution: float | None
    gpu_utilization: float | None
    models: dict[str, TritonStats] = field(default_factory=dict)  # the same figures for each model served

    @classmethod
    def read(cls, f: Fields) -> TritonStats:
        models = f.obj("models")
        return cls(f.string("endpoint"), f.string("metrics_url"), f.integer("requests"), f.integer("failures"),
                   f.integer("inferences"), f.integer("executions"), f.number("avg_batch"),
                   f.number("queue_ms_per_request"), f.number("compute_ms_per_execution"),
                   f.number("gpu_utilization"),
                   {name: cls.read(models.obj(name)) for name in models.data} if models else {})  # type: ignore[arg-type]


def triton_totals(stats: list[TritonStats]) -> tuple[float | None, float | None]:
    """All pilots together: (inferences per execution, queue ms per request, weighted by requests)."""
    executions = sum(s.executions or 0 for s in stats)
    inferences = sum(s.inferences or 0 for s in stats)
    avg_batch = inferences / executions if executions else None
    weighted = [(s.queue_ms_per_request, s.requests) for s in stats
                if s.queue_ms_per_request is not None and s.requests]
    requests = sum(n for _, n in weighted)
    queue_ms = sum(q * n for q, n in weighted) / requests if requests else None
    return avg_batch, queue_ms


@dataclass
class Pilot:
    endpoint: str
    items: int
    host: str | None = None
    block: str | None = None
    batch_job: str | None = None
    gpus: str | None = None
    state: str | None = None
    restarts: int | None = None

    @classmethod
    def read(cls, f: Fields) -> Pilot:
        gpus = f.data.get("gpus")
        if isinstance(gpus, list):
            gpus_text: str | None = ", ".join(map(str, gpus)) or "none"
        else:
            gpus_text = None if gpus is None else str(gpus)
        return cls(f.string("endpoint") or "?", f.integer("items") or 0, f.string("host"), f.string("block"),
                   f.string("batch_job"), gpus_text, f.string("state"), f.integer("restarts"))


@dataclass
class TimelinePoint:
    t: float
    items: int
    failed: int | None
    pilots_up: int | None
    pilots_ready: int | None


def read_timeline(path: Path) -> list[TimelinePoint] | None:
    """None when the run has no timeline (written by an older dgaas-flow). A last line torn by a
    killed driver is dropped; any other malformed line is an error. Should `t` go back (the file
    of an earlier run continued), the points from the last restart on are kept."""
    if not path.exists():
        return None
    remedy = f"remove {path.name} to report without it, or {RERUN_CAMPAIGN}"
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc}); {remedy}") from None
    points: list[TimelinePoint] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        torn = number == len(lines)  # the file did not end with a newline: the last write was cut short
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if torn:
                break
            raise UserError(f"{path}: line {number} is not a timeline record ({exc}); {remedy}") from None
        if "autoscale" in data:  # an autoscaler decision (read_decisions)
            continue
        f = Fields(data, path, remedy, f"line {number}: ")
        point = TimelinePoint(f.number("t", required=True), f.integer("items", required=True), f.integer("failed"),
                              f.integer("pilots_up"), f.integer("pilots_ready"))
        points.append(point)
    return points or None


def read_workflow_json(path: Path) -> str | None:
    """The run's validated workflow, pretty-printed; None when the run folder has none."""
    if not path.exists():
        return None
    data = read_json_object(path, f"remove it to report without the configuration, or {RERUN_CAMPAIGN}")
    return json.dumps(data, indent=2)


@dataclass
class Campaign:
    run_dir: Path
    workflow: str
    items_total: int | None  # None: the inputs were not counted beforehand
    items_ok: int
    items_failed: int
    recorded: set[str]  # the summary's keys, to tell "not recorded" from null
    provider: str | None = None
    model: str | None = None
    started_at: str | None = None
    complete: bool | None = None
    items_this_run: int | None = None
    items_resumed: int | None = None
    wall_seconds: float | None = None
    items_per_second: float | None = None
    steady_items_per_second: float | None = None
    requests: int | None = None
    time_to_first_result_s: float | None = None
    accuracy: float | None = None
    blocks: int | None = None
    workers: int | None = None
    restarts: int | None = None
    latency: Latency = field(default_factory=Latency)
    pilots: list[Pilot] = field(default_factory=list)
    failures_by_reason: dict[str, int] | None = None
    triton: list[TritonStats] | None = None
    timeline: list[TimelinePoint] | None = None
    configuration: str | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    requests_this_run: int | None = None
    segments: list[Segment] = field(default_factory=list)


def read_campaign(run_dir: Path) -> Campaign:
    path = run_dir / SUMMARY
    f = Fields(read_json_object(path, RERUN_CAMPAIGN), path, RERUN_CAMPAIGN)
    pilots = f.objects("pilots")
    triton = f.objects("triton")
    return Campaign(
        run_dir=run_dir, workflow=f.string("workflow") or "?", items_total=f.integer("items_total"),
        items_ok=f.integer("items_ok", required=True), items_failed=f.integer("items_failed", required=True),
        recorded=set(f.data), provider=f.string("provider"), model=f.string("model"),
        started_at=f.string("started_at"), complete=f.boolean("complete"),
        items_this_run=f.integer("items_this_run"), items_resumed=f.integer("items_resumed"),
        wall_seconds=f.number("wall_seconds"), items_per_second=f.number("items_per_second"),
        steady_items_per_second=f.number("steady_items_per_second"), requests=f.integer("requests"),
        time_to_first_result_s=f.number("time_to_first_result_s"), accuracy=f.number("accuracy"),
        blocks=f.integer("blocks"), workers=f.integer("workers"), restarts=f.integer("restarts"),
        latency=Latency.read(f.obj("latency_ms")),
        pilots=[Pilot.read(p) for p in pilots or []],
        failures_by_reason=f.counts("failures_by_reason"),
        triton=None if triton is None else [TritonStats.read(t) for t in triton],
        timeline=read_timeline(run_dir / TIMELINE),
        configuration=read_workflow_json(run_dir / WORKFLOW_JSON),
        decisions=read_decisions(run_dir / TIMELINE),
        requests_this_run=f.integer("requests_this_run"),
        segments=[Segment.read(seg) for seg in f.objects("segments") or []],
    )


def read_decisions(path: Path) -> list[dict[str, Any]]:
    """The autoscaler's decisions recorded in a timeline ({"t": s since the start, "autoscale":
    {action, metric, blocks_before, blocks_after, why}}); torn or malformed lines are skipped
    (read_timeline reports them)."""
    decisions = []
    try:
        lines = path.read_text().splitlines() if path.exists() else []
    except (OSError, UnicodeDecodeError):
        return []
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("autoscale"), dict) and "t" in data:
            decisions.append({"t": data["t"], **data["autoscale"]})
    return decisions


@dataclass
class Step:
    name: str
    blocks: int | None
    workers_per_node: int | None
    workers: int | None
    run_dir: str | None
    items: int | None
    failed: int | None
    wall_seconds: float | None
    items_per_second: float | None
    latency: Latency
    items_per_pilot: dict[str, int] | None
    pilots: int | None
    triton: list[TritonStats] | None


@dataclass
class ScaleTest:
    run_dir: Path
    workflow: str
    provider: str | None
    started_at: str | None
    steps: list[Step]
    break_even: dict[str, Any] | None = None  # see campaign.scale.break_even


def read_scale(run_dir: Path) -> ScaleTest:
    path = run_dir / SCALE
    f = Fields(read_json_object(path, RERUN_SCALE), path, RERUN_SCALE)
    steps = f.objects("steps")
    if steps is None:
        raise f._fail("steps", "a list of steps")
    read = []
    for i, s in enumerate(steps, 1):
        triton = s.objects("triton")
        read.append(Step(
            name=s.string("name") or f"step-{i}", blocks=s.integer("blocks"),
            workers_per_node=s.integer("workers_per_node"), workers=s.integer("workers"),
            run_dir=s.string("run_dir"), items=s.integer("items"), failed=s.integer("failed"),
            wall_seconds=s.number("wall_seconds"), items_per_second=s.number("items_per_second"),
            latency=Latency.read(s.obj("latency_ms")), items_per_pilot=s.counts("items_per_pilot"),
            pilots=s.integer("pilots"), triton=None if triton is None else [TritonStats.read(t) for t in triton],
        ))
    be = f.data.get("break_even")
    return ScaleTest(run_dir, f.string("workflow") or "?", f.string("provider"), f.string("started_at"), read,
                     be if isinstance(be, dict) else None)
