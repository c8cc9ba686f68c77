"""A session: one Parsl executor and the pilots of its blocks, kept up across campaigns. A script
that runs several campaigns of one model (datasets one after another, a loop over parameters) pays
the start once: the driver's Parsl, the interchange, the blocks, Triton loading its models; each
later campaign is served at once. A campaign run without a session opens one of its own."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import parsl
from parsl.dataflow.dflow import DataFlowKernel
from parsl.errors import NoDataFlowKernelError

from dgaas_flow.errors import UserError
from dgaas_flow.pilot.endpoint import Endpoint, read_registry, request_metrics
from dgaas_flow.pilot.settings import PilotConfig
from dgaas_flow.sites.executor import load as load_parsl
from dgaas_flow.specs import Workflow

logger = logging.getLogger(__name__)

PILOT_STOP_WAIT_S = 30.0
ABANDONED_WAIT_S = 300.0  # tasks that cannot end (every block gone) hold the next campaign no longer
METRICS_WAIT_S = 5.0  # pilots answer within about REQUEST_IDLE_S (2 s); a shared filesystem may lag
METRICS_POLL_S = 0.05  # the registry is read this often meanwhile

# What the executor and its pilots are made of: campaigns in one session must agree on these.
SHARED = ("provider", "triton", "server", "task_retries", "model.repository", "model.name")


def pilot_config_path(wf: Workflow, folder: Path) -> Path | None:
    """Where the blocks' pilots read their settings; None where blocks start no pilot: the glidein
    started one, or the workflow names its server (server.url, server.gateway)."""
    if wf.provider.kind == "glideinwms" or wf.server.url or wf.server.gateway:
        return None
    return folder / "pilot.json"


def differences(a: Workflow, b: Workflow) -> list[str]:
    """The fields of SHARED on which two workflows differ."""

    def value(wf: Workflow, name: str) -> object:
        found: object = wf
        for part in name.split("."):
            found = getattr(found, part)
        return found

    return [name for name in SHARED if value(a, name) != value(b, name)]


def _named(wf: Workflow) -> str:
    source = wf.source
    return f"workflow {wf.name}" + (f" ({source})" if source else "")


def _parsl_loaded() -> bool:
    try:
        parsl.dfk()
    except NoDataFlowKernelError:
        return False
    return True


def _not_asked(pilots: list[Endpoint], served: set[str] | None) -> set[tuple[str, str | None, str]]:
    """The pilots none of the `served` URLs belongs to. When a URL is no pilot's (a gateway, or a
    server.url in front of them), or the URLs are unknown (None), any pilot may have served."""
    if served is None or served - {url for e in pilots for url in (e.http_url, e.grpc_url) if url}:
        return set()
    return {e.key for e in pilots if not {e.http_url, e.grpc_url} & served}


def pilots_since(registry: Path, since: str) -> list[Endpoint]:
    """The pilots that started at or after `since` (an ISO time in seconds, as endpoints record)."""
    return [e for e in read_registry(registry) if e.started_at >= since]


class Session:
    """Open (or enter) it once, run campaigns with `run_campaign(wf, session=...)`, close it (or
    leave the `with` block): the blocks are cancelled and their pilots stop. Its folder (the first
    workflow's run folder, or `out`) holds what the campaigns share: Parsl's run folder, the pilots'
    settings, endpoint files and logs. One session at a time per process (Parsl loads one config)."""

    def __init__(self, wf: Workflow, out: str | Path | None = None) -> None:
        self.wf = wf
        self.dir = wf.out_dir(out)
        self.registry = self.dir / "pilots"
        self.started_at = ""
        self._dfk: DataFlowKernel | None = None
        self._silent: set[tuple[str, str | None, str]] = set()  # pilots that did not answer a counter request
        self._abandoned: list[cf.Future] = []  # the tasks an interrupted campaign left running

    def __enter__(self) -> Session:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Start Parsl; the first blocks, and their pilots, are submitted as soon as it is up."""
        if self._dfk is not None:
            return
        if _parsl_loaded():  # parsl.load would refuse, with a traceback
            raise UserError(f"workflow {self.wf.name}: another session (or parsl.load) is open in this process; "
                            "close it first: Parsl runs one configuration at a time")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        wf = self.wf
        pilot_config = pilot_config_path(wf, self.dir)
        if pilot_config is not None:
            pilot_config.write_text(PilotConfig(
                triton=wf.triton, repository=wf.model.repository, models=[wf.model.name],
                registry=self.registry, log_dir=self.dir / "logs",
            ).model_dump_json(indent=2))
        self._dfk = load_parsl(wf.provider, self.dir / "parsl", pilot_config, wf.task_retries)
        logger.info("session open in %s: provider %s, %d block(s) to start", self.dir, wf.provider.name,
                    wf.provider.init_blocks)

    def check(self, wf: Workflow) -> None:
        """A campaign runs here only while the session is open and if its executor and pilots are
        the ones the campaign needs."""
        if self._dfk is None:
            raise UserError(f"workflow {wf.name}: its session is not open; "
                            "run it inside `with Session(workflow) as session:`")
        self.check_compatible(wf)

    def check_compatible(self, wf: Workflow) -> None:
        """Refuse, naming the fields, a workflow whose blocks and pilots would not be these."""
        differ = differences(self.wf, wf)
        if differ:
            raise UserError(
                f"{_named(wf)}: {', '.join(differ)} differ from those of {_named(self.wf)}, whose session "
                "this is; a session serves one provider, Triton settings and model: "
                "run this workflow in a session of its own"
            )

    def abandon(self, futures: list[cf.Future]) -> None:
        """An interrupted campaign's tasks still run on the session's workers (Parsl cannot cancel
        them): the next campaign waits for them (see settle)."""
        self._abandoned += futures

    def settle(self) -> None:
        """Before a campaign: wait for the tasks an interrupted one left, so that they neither hold
        its workers nor count in its Triton figures (the counters are read again after them)."""
        if not self._abandoned:
            return
        cf.wait(self._abandoned, timeout=ABANDONED_WAIT_S)
        self._abandoned = []
        self.read_counters()

    def read_counters(self, served: set[str] | None = None) -> set[tuple[str, str | None, str]]:
        """Have the ready pilots publish Triton's counters now, and wait for them (bounded); return
        the pilots whose counters are current: those that answered, and those none of `served` (the
        server URLs a campaign's chunks asked; None: unknown) belongs to, whose counters it did not
        move. One that does not answer within METRICS_WAIT_S (its node gone without a word, its
        server hung) is not waited for again."""
        ready = self._ready()
        idle = _not_asked(ready, served)
        if len(idle) == len(ready):
            return idle
        request = request_metrics(self.registry)
        deadline = time.monotonic() + METRICS_WAIT_S
        while True:
            answered = {e.key for e in ready if e.metrics_answered == request}
            silent = {e.key for e in ready} - answered - idle
            if not silent - self._silent or time.monotonic() >= deadline:
                self._silent = (self._silent | silent) - answered
                return answered | idle
            time.sleep(METRICS_POLL_S)
            ready = self._ready()
            idle = _not_asked(ready, served)

    def _ready(self) -> list[Endpoint]:
        """This session's pilots that serve: ready, and not gone (see Endpoint.gone)."""
        return [e for e in pilots_since(self.registry, self.started_at) if e.serving()]

    def close(self) -> None:
        """Cancel the blocks and return once their pilots say they stopped (bounded), so no server
        outlives the session that started it."""
        if self._dfk is None:
            return
        logger.info("closing the session in %s: cancelling its blocks", self.dir)
        try:
            self._dfk.cleanup()
        finally:
            parsl.clear()
            self._dfk, self._abandoned, self._silent = None, [], set()
            self._wait_for_pilots()

    def _wait_for_pilots(self) -> None:
        deadline = time.monotonic() + PILOT_STOP_WAIT_S
        while time.monotonic() < deadline:
            if all(e.state in ("stopped", "failed") or e.gone() for e in pilots_since(self.registry, self.started_at)):
                return
            time.sleep(0.2)
        logger.warning("pilots in %s still not stopped after %.0f s", self.registry, PILOT_STOP_WAIT_S)
