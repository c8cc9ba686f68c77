"""Blocks that cannot start are said, retried with backoff, then given up on.

Parsl records a block whose submission failed (scheduler unreachable, job rejected, a bad account
or partition) as a FAILED job status and, with its block error handler, eventually fails every
task of the executor: a campaign then recorded all its items as failed, the scheduler's own
message buried in results.jsonl. Here a failed submission is logged at once with what the
scheduler said, the next one waits (BACKOFF_FIRST_S, doubling up to BACKOFF_MAX_S), and after
`submit_retry_s` without a single block submitted the executor gives up: the session then stops
the campaign with BlocksCannotStart (exit status 4), and its items stay undone for a rerun.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 60.0


def scheduler_message(exc: BaseException) -> str:
    """What the scheduler said about a failed submission: its standard error (e.g. `sbatch: error:
    Batch job submission failed: Invalid partition name specified`), else its output, else the
    exception's own text."""
    for attr in ("stderr", "stdout"):
        text = (getattr(exc, attr, None) or "").strip()
        if text:
            return text
    return (getattr(exc, "message", None) or str(exc)).strip()


@dataclass
class Submissions:
    """The submission history of one executor's blocks.

    Parameters
    ----------
    retry_s
        How long submissions are retried after the first failure of a streak before giving up.
    clock
        Monotonic seconds (tests pass their own).
    """

    retry_s: float
    clock: Callable[[], float] = time.monotonic
    failed_blocks: set[str] = field(default_factory=set)
    attempts: int = 0  # failed submissions in the current streak
    last_message: str | None = None
    gave_up: str | None = None  # why, once given up
    _streak_since: float | None = None
    _next: float = 0.0

    def may_submit(self) -> bool:
        """False while backing off after a failure, and for good once given up."""
        return self.gave_up is None and self.clock() >= self._next

    @property
    def failing(self) -> bool:
        return self._streak_since is not None

    def failed(self, block: str, message: str) -> None:
        now = self.clock()
        self.failed_blocks.add(block)
        self.attempts += 1
        self.last_message = message
        if self._streak_since is None:
            self._streak_since = now
        waited = now - self._streak_since
        if waited >= self.retry_s:
            self.gave_up = (f"no block could be submitted in {waited:.0f} s ({self.attempts} attempts, "
                            f"submit_retry_s {self.retry_s:.0f}); the scheduler said:\n{message}")
            logger.error("block %s could not be submitted; giving up. The scheduler said: %s", block, message)
            return
        backoff = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.attempts - 1))
        self._next = now + backoff
        logger.warning("block %s could not be submitted (attempt %d, retried in %.0f s, for up to %.0f s more). "
                       "The scheduler said: %s", block, self.attempts, backoff, self.retry_s - waited, message)

    def succeeded(self, block: str) -> None:
        if self._streak_since is not None:
            logger.warning("block %s submitted after %d failed attempt(s)", block, self.attempts)
        self._streak_since, self.attempts, self._next = None, 0, 0.0
