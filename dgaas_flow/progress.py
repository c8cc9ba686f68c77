"""Progress of a campaign: a live bar on a terminal, a plain line every few seconds in batch logs."""

from __future__ import annotations

import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

LOG_EVERY_S = 5.0


class Progress:
    def __init__(self, total: int, done: int, mode: str = "auto"):
        """mode: auto (bar on a terminal, else log lines), bar, log, or quiet."""
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.done, self.failed = mode, total, done, 0
        self.started = time.monotonic()
        self._run_items = 0
        self._last_log = 0.0
        self.pilots = 0
        self._bar: RichProgress | None = None
        if mode == "bar":
            self._bar = RichProgress(
                TextColumn("[bold]items"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8.1f}/s  failed {task.fields[failed]}  "
                           "pilots ready {task.fields[pilots]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
            )
            self._task = self._bar.add_task(
                "items", total=total, completed=done, rate=0.0, failed=0, pilots=0
            )
            self._bar.start()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self._run_items / elapsed if elapsed > 0 else 0.0

    def advance(self, items: int, failed: int) -> None:
        self.done += items
        self._run_items += items
        self.failed += failed
        self.refresh(self.pilots)

    def refresh(self, pilots_ready: int) -> None:
        self.pilots = pilots_ready
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=self.rate, failed=self.failed,
                             pilots=self.pilots)
        elif self.mode == "log" and time.monotonic() - self._last_log >= LOG_EVERY_S:
            self._last_log = time.monotonic()
            self._line()

    def _line(self) -> None:
        print(f"progress: {self.done}/{self.total} items, {self.rate:.1f} items/s, "
              f"{self.failed} failed, {self.pilots} pilots ready", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self.refresh(self.pilots)
            self._bar.stop()
        elif self.mode == "log":
            self._line()
