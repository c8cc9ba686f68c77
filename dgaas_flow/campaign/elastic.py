"""The autoscaler at work: every tick it reads the serving pilots' counters from a registry and the
work waiting, and applies `campaign.autoscaler.Autoscaler`'s decision to a pilot executor.

The work waiting is the pilots' own executor's (a session: its tasks run beside the pilots) or
another executor's (`clients`: CPU blocks that reach the pilots through the gateway, scaled by
Parsl on their own backlog while the pilot blocks follow Triton's queue time). Use it from a
script with `autoscaling(gpu_executor, clients=cpu_executor)` once Parsl is loaded."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from parsl.jobs.states import JobState

from dgaas_flow.campaign.autoscaler import DECISIONS, Autoscaler
from dgaas_flow.errors import UserError
from dgaas_flow.pilot.endpoint import pilots_since
from dgaas_flow.processes import Service
from dgaas_flow.sites.executor import PilotExecutor

logger = logging.getLogger(__name__)


def worker_slots(executor: Any, states: tuple[JobState, ...] = (JobState.RUNNING,)) -> int:
    """The workers of a Parsl executor's blocks in these states (its workers_per_node may be
    unbounded: then as many as a count can hold)."""
    blocks = sum(1 for s in executor.status_facade.values() if s.state in states)
    return int(min(blocks * executor.workers_per_node * executor.provider.nodes_per_block, 2**31))


def waiting_tasks(executor: Any) -> int:
    """Tasks a Parsl executor holds beyond what the workers of its blocks (running or pending) run."""
    return max(0, executor.outstanding() - worker_slots(executor, (JobState.RUNNING, JobState.PENDING)))


class AutoscaleLoop(Service):
    """A thread applying an Autoscaler's decisions to `pilots` (a controlled PilotExecutor: its
    provider profile has `autoscale`); each decision is logged, appended to `log` (JSON lines)
    and published (`campaign.autoscaler.DECISIONS`) for a campaign's timeline and progress.
    `since`: only pilots started at or after it (ISO time) count."""

    def __init__(self, pilots: PilotExecutor, clients: Any = None, log: Path | None = None, since: str = "") -> None:
        spec = pilots.autoscale
        if spec is None or pilots.registry is None:
            raise UserError(f"executor {pilots.label}: autoscaling needs a pilot executor whose provider profile "
                            "has `autoscale:` (see docs/sites.md)")
        self.pilots, self.clients, self.log, self.since = pilots, clients or pilots, log, since
        self.spec = spec
        self.controller = Autoscaler(spec, pilots.floor_min, pilots.max_blocks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoscaler", daemon=True)

    def start(self) -> AutoscaleLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.spec.tick_s):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the autoscaler must never take the session down
                logger.exception("autoscaler tick failed")

    def tick(self) -> None:
        blocks = self.pilots.active_blocks()
        counters = {e.key: {**e.metrics, "published_at": e.heartbeat_at or time.time()}
                    for e in pilots_since(self.pilots.registry, self.since) if e.serving()}
        decision = self.controller.observe(time.monotonic(), counters, blocks, waiting_tasks(self.clients),
                                           worker_slots(self.clients))
        if decision is None:
            return
        if decision.action == "scale_out":
            self.pilots.controller_scale_out(1)
        else:
            self.pilots.controller_scale_in(1, max_idletime=self.spec.idle_s)
        logger.warning(decision.line())
        DECISIONS.publish(decision)
        if self.log is not None:
            with open(self.log, "a") as out:
                out.write(json.dumps(decision.record()) + "\n")


@contextmanager
def autoscaling(pilots: PilotExecutor, clients: Any = None, log: str | Path | None = None) -> Iterator[AutoscaleLoop]:
    """Scale `pilots` (from `pilot_executor` with a profile that has `autoscale:`) on Triton's
    queue time while the `with` block runs; `clients`: the executor whose backlog counts as the
    work waiting (default: the pilots' own). Parsl must be loaded with both executors first."""
    loop = AutoscaleLoop(pilots, clients, Path(log) if log is not None else None)
    with loop:
        yield loop
