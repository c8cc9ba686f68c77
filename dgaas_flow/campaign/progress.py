"""Progress of a campaign: a live bar on a terminal, a plain line every few seconds in batch logs,
or nothing. Both show the pilots up and ready and the current pace (over the last few seconds,
so a slowdown shows at once, not diluted by the whole run's average)."""

from __future__ import annotations

import sys
import time
from collections import deque

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from dgaas_flow.campaign.autoscaler import DECISIONS

LOG_EVERY_S = 5.0
RATE_WINDOW_S = 5.0


class Progress:
    def __init__(self, total: int | None, done: int, mode: str = "auto"):
        """mode: auto (bar on a terminal, else log lines), bar, log, or quiet. total None: unknown."""
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.done, self.failed = mode, total, done, 0
        self.pilots_up = self.pilots_ready = 0
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        self._run_items = 0
        self._last_log = 0.0
        self._decisions = len(DECISIONS)  # the autoscaler's decisions are shown as they come
        self._bar: RichProgress | None = None
        if mode == "bar":
            self._bar = RichProgress(
                TextColumn("[bold]items"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8.1f}/s  failed {task.fields[failed]}  "
                           "pilots {task.fields[ready]}/{task.fields[up]} ready"),
                TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
            )
            self._task = self._bar.add_task("items", total=total, completed=done, rate=0.0, failed=0, up=0, ready=0)
            self._bar.start()

    @property
    def rate(self) -> float:
        """Items/s over the last RATE_WINDOW_S seconds."""
        now = self._trim()
        t0, n0 = self._samples[0]
        return (self._run_items - n0) / (now - t0) if now > t0 else 0.0

    def _trim(self) -> float:
        now = time.monotonic()
        while len(self._samples) > 1 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        return now

    def advance(self, items: int, failed: int) -> None:
        self.done += items
        self._run_items += items
        self.failed += failed
        self._samples.append((self._trim(), self._run_items))

    def refresh(self, pilots_up: int, pilots_ready: int) -> None:
        self.pilots_up, self.pilots_ready = pilots_up, pilots_ready
        decisions, self._decisions = DECISIONS.since(self._decisions)
        for decision in decisions if self.mode != "quiet" else ():
            if self._bar is not None:
                self._bar.console.print(decision.line())
            else:
                print(decision.line(), file=sys.stderr, flush=True)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=self.rate, failed=self.failed,
                             up=pilots_up, ready=pilots_ready)
        elif self.mode == "log" and time.monotonic() - self._last_log >= LOG_EVERY_S:
            self._last_log = time.monotonic()
            self._line()

    def _line(self) -> None:
        total = self.total if self.total is not None else "?"
        print(f"progress: {self.done}/{total} items, {self.rate:.1f} items/s, {self.failed} failed, "
              f"pilots {self.pilots_ready}/{self.pilots_up} ready", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self.refresh(self.pilots_up, self.pilots_ready)
            self._bar.stop()
        elif self.mode == "log":
            self._line()
