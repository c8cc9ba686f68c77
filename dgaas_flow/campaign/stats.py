"""What a campaign measures while it runs, in memory that does not grow with the item count:
request latencies in an HDR histogram, and a timeline of progress streamed to timeline.jsonl."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from dgaas_flow.campaign.autoscaler import DECISIONS

TIMELINE_EVERY_S = 1.0
# 1 µs to 1 h at 3 significant digits: about 200 kB whatever the number of requests.
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 3_600_000_000, 3
_FIRST_BUCKET_US, _BUCKET_GROWTH = 50, 1.25


class Latencies:
    """Request latencies; percentiles exact to 0.1 %, the exact mean (of whole microseconds), and a
    log-bucketed distribution to plot. Percentiles and the distribution are counted over the
    histogram's counts in numpy, and the mean kept as a running sum: hdrh's own percentiles and
    iterators walk its sub-buckets one by one in Python (tens of thousands of them up to a 40 ms
    request), which made the summary a large part of a short campaign's time."""

    def __init__(self) -> None:
        self._hist = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self._sum_us = 0

    def record(self, latencies_ms: list[float]) -> None:
        for ms in latencies_ms:
            us = min(max(int(ms * 1000.0), _LOWEST_US), _HIGHEST_US)
            self._hist.record_value(us)
            self._sum_us += us

    @property
    def count(self) -> int:
        return self._hist.get_total_count()

    @property
    def sum_us(self) -> int:
        """The sum of the recorded latencies in whole microseconds (the exact mean's numerator)."""
        return self._sum_us

    def encode(self) -> str:
        """The histogram in HdrHistogram's compressed, base64 form (a few hundred bytes), which
        `merge` adds back exactly: what summary.json keeps of each run of a folder."""
        return self._hist.encode().decode("ascii")

    def merge(self, encoded: str, sum_us: int) -> None:
        """Add the latencies of another run, as `encode` and `sum_us` gave them."""
        other = HdrHistogram.decode(encoded.encode("ascii"))
        if other.get_total_count():
            self._hist.add(other)
        self._sum_us += int(sum_us)

    def merge_buckets(self, histogram: list[list[float]], mean_ms: float | None) -> None:
        """Add a run known only by its summary's buckets ([upper ms, count], from a dgaas-flow that did
        not keep the encoded histogram): each bucket's requests counted at its upper bound, so its
        percentiles are those buckets' bounds, not exact."""
        recorded = 0
        for upper_ms, n in histogram:
            if n:
                us = min(max(int(upper_ms * 1000.0), _LOWEST_US), _HIGHEST_US)
                self._hist.record_value(us, int(n))
                recorded += int(n)
        if mean_ms is not None:
            self._sum_us += round(mean_ms * 1000.0 * recorded)

    def summary(self) -> dict[str, Any]:
        if not self.count:
            return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None, "histogram": []}
        ms = lambda us: round(us / 1000.0, 3)  # noqa: E731
        result: dict[str, Any] = {f"p{q}": ms(us) for q, us in zip((50, 95, 99), self.percentiles(50, 95, 99),
                                                                    strict=True)}
        result["mean"] = ms(self._sum_us / self.count)
        result["max"] = ms(self._hist.get_max_value())
        result["histogram"] = [[ms(upper), n] for upper, n in self.buckets(_FIRST_BUCKET_US, _BUCKET_GROWTH)]
        return result

    def _counts(self) -> np.ndarray:
        """The histogram's count of each sub-bucket, as a numpy view (no copy)."""
        return np.ctypeslib.as_array(self._hist.counts)[: self._hist.counts_len]

    def percentiles(self, *qs: float) -> list[int]:
        """hdrh's `get_value_at_percentile(q)` for each q (µs), from one cumulative sum of the counts."""
        hist = self._hist
        cumulative = np.cumsum(self._counts())
        values = []
        for q in qs:
            index = int(np.searchsorted(cumulative, hist.get_target_count_at_percentile(q), side="left"))
            value = hist.get_value_from_index(index)
            values.append(hist.get_highest_equivalent_value(value) if q else hist.get_lowest_equivalent_value(value))
        return values

    def buckets(self, first_us: float, growth: float) -> list[tuple[float, int]]:
        """(upper bound in µs, count) of log-spaced buckets up to the largest latency: what hdrh's
        `get_log_iterator(first_us, growth)` gives, counted over the recorded sub-buckets only."""
        hist = self._hist
        if not self.count:
            return []
        counts = self._counts()
        recorded = np.flatnonzero(counts)
        values = np.array([hist.get_value_from_index(int(i)) for i in recorded])
        uppers, lowest = [float(first_us)], [hist.get_lowest_equivalent_value(first_us)]
        while lowest[-1] < values[-1]:  # a bucket holds the values up to its upper bound's sub-bucket
            uppers.append(uppers[-1] * growth)
            lowest.append(hist.get_lowest_equivalent_value(uppers[-1]))
        bucket = np.searchsorted(np.array(lowest), values, side="left")
        sums = np.bincount(bucket, weights=counts[recorded], minlength=len(uppers))
        return [(upper, int(n)) for upper, n in zip(uppers, sums, strict=True)]


STEADY_MIN_S = 1.0


@dataclass
class RunStats:
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    items: int = 0
    failed: int = 0
    resumed: int = 0
    first_result_s: float | None = None
    first_items: int = 0  # items in the first result, finished before first_result_s
    last_result_s: float | None = None
    ended: float | None = None
    latencies: Latencies = field(default_factory=Latencies)
    served_by: set[str] = field(default_factory=set)  # the endpoints (URLs) this run's chunks asked

    def add(self, items: int, failed: int, latencies_ms: list[float], pilots: Iterable[str] = ()) -> None:
        now = time.monotonic() - self.started
        if self.first_result_s is None:
            self.first_result_s, self.first_items = now, items
        self.last_result_s = now
        self.items += items
        self.failed += failed
        self.latencies.record(latencies_ms)
        self.served_by.update(pilots)

    def end(self) -> None:
        """The campaign's time stops here (a summary written later keeps it)."""
        self.ended = time.monotonic()

    @property
    def wall_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def steady_rate(self) -> float | None:
        """Items/s from the first result to the last: the pace once blocks and pilots were up.
        None when they came within STEADY_MIN_S: a few chunks landing together give no pace."""
        if self.first_result_s is None or self.last_result_s is None:
            return None
        span = self.last_result_s - self.first_result_s
        return round((self.items - self.first_items) / span, 2) if span >= STEADY_MIN_S else None


class Timeline:
    """timeline.jsonl: progress about once a second, so a report can plot throughput over time
    and pilots coming up, even for a run that was killed."""

    def __init__(self, path: Path, stats: RunStats):
        self.stats = stats
        self._file = open(path, "w")  # noqa: SIM115 - held open for the campaign's lifetime
        self._last = float("-inf")
        self._decisions = len(DECISIONS)  # the autoscaler's decisions from now on go into the file too

    def tick(self, pilots_up: int, pilots_ready: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < TIMELINE_EVERY_S:
            return
        self._last = now
        record = {"t": round(now - self.stats.started, 3), "items": self.stats.items, "failed": self.stats.failed,
                  "pilots_up": pilots_up, "pilots_ready": pilots_ready}
        decisions, self._decisions = DECISIONS.since(self._decisions)
        for decision in decisions:
            self._file.write(json.dumps({"t": record["t"], "autoscale": decision.record()}) + "\n")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
