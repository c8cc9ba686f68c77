"""The autoscaler: more pilots while Triton's own pressure stays high and work waits, fewer when
pilots idle. The metric is SuperSONIC's: the servers' queue time per execution over a window,
rate(nv_inference_queue_duration_us) / rate(nv_inference_exec_count) / 1000 ms, read from the
cumulative counters every pilot publishes in its endpoint file (Endpoint.metrics: queue_us,
executions).

`Autoscaler.observe` is pure (no Parsl, no files, its clock passed in), so that recorded metric
series test it; `Session` feeds it the registry and applies its decisions to the executor
(`scale_out_facade`, `scale_in_facade`). Every decision is published to `DECISIONS`, which the
campaign's timeline.jsonl and progress display read.

Rules (one decision per tick at most, none within cooldown_s of the previous change):
- scale out by one block when the metric stayed above `target` for the whole window (every tick
  of the last window_s that saw executions, after at least window_s of watching), tasks wait, and
  blocks < max_blocks;
- scale in by one block when a pilot served nothing for idle_s (no execution), no task waits or
  the metric is below target / 2 (hysteresis: no flapping around the target), and blocks >
  min_blocks;
- with `clients_per_pilot` (a scale test's break-even), blocks follow the client workers too:
  one more when the clients need more pilots than there are blocks (before any queue builds
  up), and none released below what they need.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dgaas_flow.sites.base import AutoscaleSpec


@dataclass(frozen=True)
class Decision:
    t: float  # Unix time
    action: str  # scale_out | scale_in
    metric: float | None  # queue ms per execution over the window
    blocks_before: int
    blocks_after: int
    why: str

    def line(self) -> str:
        metric = "n/a" if self.metric is None else f"{self.metric:.1f} ms"
        return (f"autoscale: {self.action.replace('_', ' ')} {self.blocks_before} -> {self.blocks_after} blocks "
                f"(queue/exec {metric}): {self.why}")

    def record(self) -> dict[str, Any]:
        return asdict(self)


class DecisionFeed:
    """Decisions of this process's autoscalers, in order; readers keep their own cursor."""

    def __init__(self) -> None:
        self._items: list[Decision] = []
        self._lock = threading.Lock()

    def publish(self, decision: Decision) -> None:
        with self._lock:
            self._items.append(decision)

    def since(self, cursor: int) -> tuple[list[Decision], int]:
        with self._lock:
            return self._items[cursor:], len(self._items)

    def __len__(self) -> int:
        return len(self._items)


DECISIONS = DecisionFeed()


@dataclass
class _PilotSeries:
    last: tuple[float, float] | None = None  # (queue_us, executions) at the previous tick
    last_busy: float = 0.0  # when a reading last showed executions (the pilot's publication time)
    at: float = 0.0  # when the pilot published its latest reading


@dataclass
class Autoscaler:
    spec: AutoscaleSpec
    min_blocks: int
    max_blocks: int
    samples: deque[tuple[float, float, float]] = field(default_factory=deque)  # (t, d queue_us, d executions)
    pilots: dict[Any, _PilotSeries] = field(default_factory=dict)
    last_change: float = float("-inf")
    first_seen: float | None = None

    def metric(self, now: float) -> float | None:
        """Queue ms per execution over the last window_s (None: nothing executed)."""
        window = [s for s in self.samples if now - s[0] <= self.spec.window_s]
        executions = sum(s[2] for s in window)
        return sum(s[1] for s in window) / executions / 1000.0 if executions else None

    def _above_for_window(self, now: float) -> bool:
        """Watched for a full window, and every tick of it that saw executions (pilots publish
        their counters at their own pace: ticks between two readings see none) was above target."""
        if self.first_seen is None or now - self.first_seen < self.spec.window_s:
            return False
        window = [s for s in self.samples if now - s[0] <= self.spec.window_s]
        ticks = [s[1] / s[2] / 1000.0 for s in window if s[2]]
        return bool(ticks) and min(ticks) > self.spec.target

    def needed(self, clients: int) -> int:
        """The pilot blocks `clients` client workers need at the break-even ratio (0: no ratio)."""
        ratio = self.spec.clients_per_pilot
        return min(self.max_blocks, -(-clients // ratio)) if ratio else 0

    def observe(self, now: float, counters: Mapping[Any, Mapping[str, float]], blocks: int,
                waiting: int, clients: int = 0) -> Decision | None:
        """One tick: the serving pilots' cumulative counters (by pilot; `published_at`: when the
        pilot wrote them, on its own clock, default `now`), the executor's active blocks, the tasks
        waiting for a worker, the client workers (for `clients_per_pilot`). Returns the decision
        taken, if any. A pilot is idle when its readings show no execution over idle_s of its own
        publications: between two of them (every triton.health_interval_s) a busy pilot's counters
        do not move."""
        if self.first_seen is None:
            self.first_seen = now
        dq = dx = 0.0
        idle = 0
        for key, c in counters.items():
            at = c.get("published_at", now)
            series = self.pilots.setdefault(key, _PilotSeries(last_busy=at))
            series.at = at
            reading = (c.get("queue_us", 0.0), c.get("executions", 0.0))
            if series.last is not None:
                q, x = reading[0] - series.last[0], reading[1] - series.last[1]
                if x < 0:  # a restarted server's counters are added to the old ones; be safe anyway
                    q = x = 0.0
                dq, dx = dq + q, dx + x
                if x > 0:
                    series.last_busy = at
            series.last = reading
            if at - series.last_busy >= self.spec.idle_s:
                idle += 1
        for key in set(self.pilots) - set(counters):
            del self.pilots[key]
        self.samples.append((now, dq, dx))
        while self.samples and now - self.samples[0][0] > self.spec.window_s:
            self.samples.popleft()
        metric = self.metric(now)
        if now - self.last_change < self.spec.cooldown_s:
            return None
        target = self.spec.target
        needed = self.needed(clients)
        if blocks < needed:
            return self._decide(now, "scale_out", metric, blocks, blocks + 1,
                                f"{clients} client workers need {needed} pilot(s) at "
                                f"{self.spec.clients_per_pilot} clients per pilot (the break-even)")
        if waiting > 0 and blocks < self.max_blocks and self._above_for_window(now):
            return self._decide(now, "scale_out", metric, blocks, blocks + 1,
                                f"queue time above {target:g} ms for {self.spec.window_s:g} s with {waiting} "
                                "task(s) waiting")
        if idle and blocks > max(self.min_blocks, needed) and (waiting == 0 or (metric or 0.0) < target / 2):
            return self._decide(now, "scale_in", metric, blocks, blocks - 1,
                                f"{idle} pilot(s) served nothing for {self.spec.idle_s:g} s")
        return None

    def _decide(self, now: float, action: str, metric: float | None, before: int, after: int,
                why: str) -> Decision:
        self.last_change = now
        self.samples.clear()  # the next decision judges the new pool of pilots
        self.first_seen = now
        for series in self.pilots.values():
            series.last_busy = series.at
        return Decision(time.time(), action, None if metric is None else round(metric, 3), before, after, why)
