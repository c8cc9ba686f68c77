"""A session: one Parsl executor and the pilots of its blocks, kept up across campaigns and apps.
A script that runs several campaigns (datasets one after another, a loop over parameters, models
of one repository) or its own Parsl apps pays the start once: the driver's Parsl, the interchange,
the blocks, Triton loading its models; each later campaign is served at once. A campaign run
without a session opens one of its own."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import parsl
from parsl import python_app
from parsl.dataflow.dflow import DataFlowKernel
from parsl.dataflow.futures import AppFuture
from parsl.errors import NoDataFlowKernelError

from dgaas_flow.campaign.elastic import AutoscaleLoop
from dgaas_flow.errors import PilotError, UserError
from dgaas_flow.pilot.endpoint import Endpoint, pilots_since, request_metrics
from dgaas_flow.pilot.settings import PilotConfig, TritonSettings
from dgaas_flow.sites import ProviderBase
from dgaas_flow.sites.executor import EXECUTOR_LABEL
from dgaas_flow.sites.executor import load as load_parsl
from dgaas_flow.specs import ServerSpec, Workflow
from dgaas_flow.specs.loading import provider_spec, repository_models

logger = logging.getLogger(__name__)

PILOT_STOP_WAIT_S = 30.0
ABANDONED_WAIT_S = 300.0  # tasks that cannot end (every block gone) hold the next campaign no longer
METRICS_WAIT_S = 5.0  # pilots answer within about REQUEST_IDLE_S (2 s); a shared filesystem may lag
METRICS_POLL_S = 0.05  # the registry is read this often meanwhile
READY_POLL_S = 0.2


class BlocksCannotStart(PilotError):
    """The scheduler refused every block submission for the provider's `submit_retry_s`: no pilot
    can ever start, so the campaign stops, its items not done left for a rerun (which resumes)."""

    exit_code = 4


class _CheckedWatch:
    """A campaign's pilot watch that first asks the session whether its blocks can start at all
    (see Session.watch)."""

    def __init__(self, watch: Any, session: Session) -> None:
        self._watch, self._session = watch, session

    def counts(self, now: bool = False) -> tuple[int, int]:
        self._session.check_blocks()
        return self._watch.counts(now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._watch, name)


def _named(wf: Workflow) -> str:
    source = wf.source
    return f"workflow {wf.name}" + (f" ({source})" if source else "")


def _site(provider: ProviderBase) -> dict[str, Any]:
    """What a provider's blocks are, whatever the profile is called."""
    return provider.model_dump(exclude={"name"})


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


class Session:
    """Parsl with one pilot-backed executor, its blocks and their pilots, kept up while open.

    Open it (or enter it with ``with``), run campaigns with ``run_campaign(wf, session=...)`` or
    submit your own apps, close it (or leave the ``with`` block): the blocks are cancelled and
    their pilots stop. One session at a time per process (Parsl loads one configuration).

    Parameters
    ----------
    wf
        A workflow whose provider, Triton settings, server and model the session takes; or give
        the keyword arguments instead.
    out
        The session's folder (Parsl's run folder, the pilots' settings, endpoint files and logs);
        default: the workflow's run folder, else ``runs/session``.
    provider
        A provider profile: a name (looked up as `dgaas-flow run` does), a YAML file, or a
        provider object (`dgaas_flow.sites`); default ``local``.
    repository
        The Triton model repository every pilot serves from.
    models
        The models each pilot loads; None: every model of the repository.
    triton
        How pilots start Triton (`TritonSettings`); default: its defaults.
    server
        An explicit server or gateway (`ServerSpec`): then blocks start no pilot.
    task_retries
        Parsl retries of a task whose worker was lost.
    label
        The executor's label, for apps that name their executors.
    """

    def __init__(self, wf: Workflow | None = None, out: str | Path | None = None, *,
                 provider: str | Path | ProviderBase | None = None, repository: str | Path | None = None,
                 models: Sequence[str] | None = None, triton: TritonSettings | None = None,
                 server: ServerSpec | None = None, task_retries: int = 2, label: str = EXECUTOR_LABEL) -> None:
        if wf is not None:
            if (provider, repository, models, triton, server) != (None,) * 5:
                raise UserError("Session: give a workflow, or provider, repository and models, not both")
            provider, triton, server, task_retries = wf.provider, wf.triton, wf.server, wf.task_retries
            repository, models = wf.model.repository, [wf.model.name]
        self.workflow = wf
        self.provider: ProviderBase = provider_spec(provider or "local")
        self.triton = triton or TritonSettings()
        self.server = server or ServerSpec()
        self.task_retries, self.label = task_retries, label
        self.repository = Path(repository).resolve() if repository is not None else None
        self.models = list(models) if models is not None else None
        if self.starts_pilots:
            if self.repository is None:
                raise UserError("Session: its blocks start pilots, which need a model repository (repository=...)")
            repository_models(self.repository, self.models)  # every model named is there
        self.dir = Path(out).resolve() if out is not None else wf.out_dir() if wf is not None \
            else Path("runs", "session").resolve()
        self.registry = self.dir / "pilots"
        self.started_at = ""
        self._dfk: DataFlowKernel | None = None
        self._apps: dict[Callable[..., Any], Any] = {}  # the user's functions made Parsl apps, once each
        self._silent: set[tuple[str, str | None, str]] = set()  # pilots that did not answer a counter request
        self._abandoned: list[cf.Future] = []  # the tasks an interrupted campaign left running
        self._autoscaling: AutoscaleLoop | None = None
        # each model's request latency (ms) as the last campaign saw it: the next sizes its chunks by it
        self.request_ms: dict[tuple[str, str], float] = {}

    @classmethod
    def for_workflows(cls, workflows: Sequence[Workflow], out: str | Path | None = None) -> Session:
        """One session serving every workflow's model (they must agree on what blocks and pilots
        are made of); checked before anything starts. Several workflows share a folder of their
        own beside their run folders (`session-<name>+<name>...`)."""
        first = workflows[0]
        session = cls(first, out)
        session.models = list(dict.fromkeys(wf.model.name for wf in workflows))
        for wf in workflows[1:]:
            session.check_compatible(wf)
        if out is None and len(workflows) > 1:
            session.dir = first.out_dir().parent / ("session-" + "+".join(wf.name for wf in workflows))
            session.registry = session.dir / "pilots"
        return session

    @property
    def starts_pilots(self) -> bool:
        """False where the blocks' tasks reach a server elsewhere: a glidein's, server.url, a gateway."""
        return self.provider.starts_pilots and not (self.server.url or self.server.gateway)

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
            raise UserError(f"{self._described()}: another session (or parsl.load) is open in this process; "
                            "close it first: Parsl runs one configuration at a time")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        if self.repository is not None:
            self.settings_file.write_text(PilotConfig(
                triton=self.triton, repository=self.repository, models=self.models or [],
                registry=self.registry, log_dir=self.dir / "logs",
            ).model_dump_json(indent=2))
        pilot_config = self.pilot_config_path()
        self._dfk = load_parsl(self.provider, self.dir / "parsl", pilot_config, self.task_retries, self.label)
        if self.provider.autoscale is not None and self.starts_pilots:
            self._autoscaling = AutoscaleLoop(self.executor(), log=self.dir / "autoscale.jsonl",
                                              since=self.started_at).start()
        logger.info("session open in %s: provider %s, %d block(s) to start", self.dir, self.provider.name,
                    self.provider.init_blocks)

    @property
    def settings_file(self) -> Path:
        """The pilots' settings (written when the session has a model repository): its blocks'
        pilots read them, and so does a task's local fallback server (client.fallback)."""
        return self.dir / "pilot.json"

    def pilot_config_path(self) -> Path | None:
        """Where the blocks' pilots read their settings; None where blocks start no pilot."""
        return self.settings_file if self.starts_pilots else None

    def _described(self) -> str:
        return _named(self.workflow) if self.workflow is not None else f"the session in {self.dir}"

    def check(self, wf: Workflow) -> None:
        """A campaign runs here only while the session is open and if its executor and pilots are
        the ones the campaign needs."""
        if self._dfk is None:
            raise UserError(f"workflow {wf.name}: its session is not open; "
                            "run it inside `with Session(workflow) as session:`")
        self.check_compatible(wf)

    def mismatches(self, wf: Workflow) -> list[str]:
        """The workflow's fields that this session's blocks and pilots do not match."""
        ours = (_site(self.provider), self.triton, self.server, self.task_retries, self.repository)
        theirs = (_site(wf.provider), wf.triton, wf.server, wf.task_retries, wf.model.repository)
        names = ("provider", "triton", "server", "task_retries", "model.repository")
        differ = [name for name, a, b in zip(names, ours, theirs, strict=True) if a != b]
        if self.starts_pilots and self.models is not None and wf.model.name not in self.models:
            differ.append("model.name")
        return differ

    def check_compatible(self, wf: Workflow) -> None:
        """Refuse, naming the fields, a workflow whose blocks and pilots would not be these."""
        differ = self.mismatches(wf)
        if differ:
            served = ", ".join(self.models) if self.models is not None else "every model of its repository"
            raise UserError(
                f"{_named(wf)}: {', '.join(differ)} differ from those of {self._described()}, whose session "
                f"this is; a session serves one provider, Triton settings and repository (models: {served}): "
                "run this workflow in a session of its own"
            )

    def executor(self) -> Any:
        """The session's Parsl executor (a `sites.executor.PilotExecutor`), None when closed."""
        return self._dfk.executors.get(self.label) if self._dfk is not None else None

    def check_blocks(self) -> None:
        """Raise BlocksCannotStart once the executor gave up submitting blocks (see
        `sites.submissions`): the scheduler's own message says why."""
        submissions = getattr(self.executor(), "submissions", None)
        if submissions is not None and submissions.gave_up:
            raise BlocksCannotStart(
                f"{self._described()}: the blocks of provider {self.provider.name} cannot start: "
                f"{submissions.gave_up}\nNothing more was sent; rerun the same command to resume once the "
                "scheduler accepts the jobs (check the profile's partition, account, qos, and `sinfo`/`condor_q`)"
            )

    def watch(self, watch: Any) -> Any:
        """A campaign's pilot watch (its `counts()`, called about once a second) that also stops
        the campaign when the blocks cannot start."""
        return _CheckedWatch(watch, self)

    def wait_ready(self, timeout_s: float | None = None, pilots: int = 1) -> list[Endpoint]:
        """Return the serving pilots once at least `pilots` serve (all their models loaded);
        PilotError when every pilot failed, or after `timeout_s` (None: no limit, as a batch queue
        may hold blocks for long). A session whose blocks start no pilot is ready at once."""
        if self._dfk is None:
            raise UserError(f"{self._described()}: open the session first")
        if not self.starts_pilots:
            return []
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            endpoints = pilots_since(self.registry, self.started_at)
            ready = [e for e in endpoints if e.serving()]
            if len(ready) >= pilots:
                return ready
            self.check_blocks()
            if endpoints and all(e.state == "failed" for e in endpoints):
                raise PilotError(f"every pilot failed ({len(endpoints)}); the last one said:\n{endpoints[-1].error}")
            if deadline is not None and time.monotonic() > deadline:
                raise PilotError(f"{len(ready)} of {pilots} pilot(s) ready after {timeout_s:.0f} s; "
                                 f"see {self.dir / 'logs'} and Parsl's {self.dir / 'parsl'}")
            time.sleep(READY_POLL_S)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> AppFuture:
        """Run `fn(*args, **kwargs)` on this session's workers: a Parsl app as it is, a plain
        function as a python_app (made once per function). Inside it, `triton_client()` reaches
        the node's pilot."""
        if self._dfk is None:
            raise UserError(f"{self._described()}: open the session first")
        if not hasattr(fn, "executors"):  # a plain function, not a Parsl app yet
            if fn not in self._apps:
                self._apps[fn] = python_app(fn, executors=[self.label])
            fn = self._apps[fn]
        return fn(*args, **kwargs)

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
        # Parsl's cleanup shuts its executors down before its pool of task launches: a session
        # closed while apps are still being submitted (an error in the `with` body) would have a
        # launch write to a closed socket, which aborts the interpreter. Launches stop first.
        if self._autoscaling is not None:
            self._autoscaling.stop()
            self._autoscaling = None
        launches = getattr(self._dfk, "_task_launch_pool", None)
        if launches is not None:
            launches.shutdown(wait=True, cancel_futures=True)
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
