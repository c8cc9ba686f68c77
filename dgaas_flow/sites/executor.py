"""A provider profile becomes a Parsl HighThroughputExecutor whose worker pool on each node is
started under `dgaas-flow pilot wrap`, so that each block (node) runs exactly one pilot and all
workers of that node share it. What differs between schedulers is in their own modules."""

from __future__ import annotations

import logging
import shlex
import sys
import tempfile
import threading
from pathlib import Path

import parsl
from parsl.config import Config
from parsl.dataflow.dflow import DataFlowKernel
from parsl.executors import HighThroughputExecutor
from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD
from parsl.jobs.error_handlers import windowed_error_handler
from parsl.jobs.states import JobState
from parsl.logconfigs.file import FileLogging

from dgaas_flow.errors import UserError
from dgaas_flow.pilot.launch import BLAS_THREADS
from dgaas_flow.pilot.settings import PilotConfig
from dgaas_flow.sites.base import AutoscaleSpec, ProviderBase
from dgaas_flow.sites.submissions import Submissions, scheduler_message

EXECUTOR_LABEL = "dgaas"
FIRST_POLL_S = 0.02  # Parsl's strategy period until the executor is up (see load)
# Parsl's interchange as process listings show it: the module it starts as, then the name it gives
# itself once running (setproctitle); for whatever looks for it (the test suite's leak check)
INTERCHANGE_NAMES = ("high_throughput.interchange", "HTEX interchange")


def python_on_nodes(spec: ProviderBase) -> str:
    return spec.python or sys.executable


def parsl_process(python: str, module: str) -> list[str]:
    """One of Parsl's HTEX processes (`interchange`, `process_worker_pool`), run by the nodes'
    Python as a module: no script has to be found on PATH."""
    return [python, "-m", f"parsl.executors.high_throughput.{module}"]


def worker_pool_cmd(spec: ProviderBase) -> str:
    """Parsl's worker pool command, its script replaced by the module."""
    pool = shlex.join(parsl_process(python_on_nodes(spec), "process_worker_pool"))
    return DEFAULT_LAUNCH_CMD.replace("process_worker_pool.py", pool, 1)


def pilot_launch_cmd(spec: ProviderBase, pilot_config: Path | None) -> str:
    """The worker pool command, wrapped by the pilot when this provider starts pilots."""
    if pilot_config is None:
        return worker_pool_cmd(spec)
    wrap = [python_on_nodes(spec), "-m", "dgaas_flow", "pilot", "wrap", "--config", str(pilot_config),
            "--start-with-server"]
    # {{block_id}} survives the executor's first str.format and is filled per block.
    return shlex.join(wrap) + " --block {{block_id}} -- " + worker_pool_cmd(spec)


# HTCondor's condor_rm signals only the job's top process (this shell), and the shell would exit at
# once (Parsl's launcher runs under `set -e`); the starter then SIGKILLs the rest, so the pilot could
# not stop its server. When the shell leads its own process group (a batch job's does; a local
# block's does not), it passes TERM to the group and stays until every other member has exited.
FORWARD_TERM = """trap 'trap "" TERM
if [ "$(cut -d" " -f5 /proc/$$/stat)" = "$$" ]; then
  kill -TERM -- -$$
  while :; do
    members=0
    for stat in /proc/[0-9]*/stat; do
      read -r _ _ _ _ group _ 2>/dev/null < "$stat" && [ "$group" = "$$" ] && members=$((members + 1))
    done
    [ "$members" -le 1 ] && break
    sleep 0.2
  done
fi' TERM"""


def worker_init(spec: ProviderBase, environment: dict[str, str] | None = None) -> str:
    """Forward stop signals, put the nodes' Python environment first on PATH (the site's own
    worker_init, which follows, may call its tools), give numpy's BLAS the worker's cores, and
    export `environment` to the workers."""
    bin_dir = Path(python_on_nodes(spec)).parent
    exports = [f"export {name}={shlex.quote(value)}" for name, value in (environment or {}).items()]
    lines = [FORWARD_TERM, f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"', *spec.block_lines(),
             *blas_threads(spec), *exports, spec.worker_init]
    return "\n".join(filter(None, lines))


def blas_threads(spec: ProviderBase) -> list[str]:
    """BLAS threads per worker: its cores, unless the site set them. OpenBLAS and MKL otherwise
    start a thread per core of the node in every worker, which spin between calls: a hook's matrix
    product doubled a worker's CPU. The pilot's server sets the same for its models (pilot.launch)."""
    cores = max(1, int(spec.cores_per_worker))
    return [f'export {var}="${{{var}:-{cores}}}"' for var in BLAS_THREADS]


class PilotExecutor(HighThroughputExecutor):
    """Parsl's HighThroughputExecutor whose failed block submissions are said, retried with backoff
    and given up on after the profile's `submit_retry_s` (see `sites.submissions`), instead of
    counting as failed blocks that end in every task failing. Blocks that did start and failed
    still go to Parsl's windowed error handler (three failed blocks in a row end the executor).
    The scheduler is asked how the blocks are every `status_poll_s` (Parsl's SLURM and HTCondor
    providers fix 60 s): a block whose pilot drained and ended early is replaced that soon.

    With `autoscale` (the profile's), the autoscaler (`campaign.elastic`) owns the number of
    blocks: it sets a floor, which Parsl's strategy keeps (replacing lost blocks, never scaling
    in below it, never out above it, even for an executor without tasks, whose pilots serve
    other executors' apps through the gateway); `registry` is where the pilots publish."""

    def __init__(self, *args: object, submit_retry_s: float = 300.0, autoscale: AutoscaleSpec | None = None,
                 registry: Path | None = None, status_poll_s: float | None = None,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.submissions = Submissions(submit_retry_s)
        self.status_poll_s = status_poll_s
        self.autoscale, self.registry = autoscale, registry
        self._by_controller = threading.local()
        if autoscale is not None:
            self.floor_min = self.provider.min_blocks if autoscale.min_blocks is None else autoscale.min_blocks
            self.max_blocks = autoscale.max_blocks or self.provider.max_blocks
            self._floor(max(self.provider.init_blocks, self.floor_min))

    def _floor(self, blocks: int) -> None:
        """Parsl's strategy keeps at least `blocks` (its min_blocks) and adds none beyond them."""
        self.floor = blocks
        self.provider.min_blocks = blocks

    @property
    def status_polling_interval(self) -> float:
        own = super().status_polling_interval
        return own if self.status_poll_s is None else min(own, self.status_poll_s)

    def active_blocks(self) -> int:
        return sum(1 for s in self.status_facade.values() if s.state in (JobState.RUNNING, JobState.PENDING))

    def controller_scale_out(self, n: int) -> list[str]:
        self._floor(min(self.max_blocks, self.floor + n))
        self._by_controller.on = True
        try:
            return self.scale_out_facade(n)
        finally:
            self._by_controller.on = False

    def controller_scale_in(self, n: int, max_idletime: float | None = None) -> list[str]:
        self._floor(max(self.floor_min, self.floor - n))
        return self.scale_in_facade(n, max_idletime=max_idletime)

    def scale_out_facade(self, n: int) -> list[str]:
        """Submit up to n blocks one at a time, stopping at the first the scheduler refuses."""
        if self.autoscale is not None and not getattr(self._by_controller, "on", False):
            n = min(n, max(0, self.floor - self.active_blocks()))
        started: list[str] = []
        for _ in range(n):
            if not self.submissions.may_submit():
                break
            block = super().scale_out_facade(1)
            if not block:
                break
            started += block
        return started

    def _launch_block(self, block_id: str) -> object:
        try:
            job_id = super()._launch_block(block_id)
        except Exception as exc:
            message = scheduler_message(exc)
            self.submissions.failed(block_id, message)
            raise RuntimeError(message) from None  # Parsl records it as the block's status message
        self.submissions.succeeded(block_id)
        return job_id

    def handle_errors(self, status: dict) -> None:
        super().handle_errors({b: s for b, s in status.items() if b not in self.submissions.failed_blocks})


def make_executor(spec: ProviderBase, pilot_config: Path | None, label: str = EXECUTOR_LABEL,
                  environment: dict[str, str] | None = None) -> HighThroughputExecutor:
    """The executor whose every block (node) starts one pilot with `pilot_config` before its
    workers, or none (None: the tasks find a server elsewhere); `environment` is exported to
    the workers."""
    autoscale = spec.autoscale if pilot_config else None  # it scales pilots: blocks without one follow Parsl
    # the autoscaler reads the pilots' counters where they publish them
    registry = None
    if autoscale is not None and pilot_config is not None:
        registry = PilotConfig.model_validate_json(pilot_config.read_text()).registry
    return PilotExecutor(
        label=label,
        address=spec.address or spec.default_address,
        provider=spec.parsl_provider(worker_init(spec, environment)),
        max_workers_per_node=spec.workers_per_node,
        # a task waiting at each worker's node, so a worker starts its next chunk as it returns one
        # instead of after a round trip through the interchange (benchmarks/README.md)
        prefetch_capacity=spec.workers_per_node,
        cores_per_worker=spec.cores_per_worker,
        launch_cmd=pilot_launch_cmd(spec, pilot_config),
        interchange_launch_cmd=[sys.executable, "-m", "dgaas_flow.lifetime",
                                *parsl_process(sys.executable, "interchange")],
        # Parsl's default gives up on the executor after a single failed block when init_blocks is 1;
        # a campaign must outlive a lost node, so only three failed blocks in a row end it.
        block_error_handler=windowed_error_handler,
        heartbeat_period=max(1, spec.heartbeat_threshold_s // 5),
        heartbeat_threshold=spec.heartbeat_threshold_s,
        submit_retry_s=spec.submit_retry_s,
        autoscale=autoscale,
        registry=registry,
        status_poll_s=spec.status_poll_s,
    )


def make_config(spec: ProviderBase, run_dir: Path, pilot_config: Path | None, retries: int,
                label: str = EXECUTOR_LABEL) -> Config:
    return Config(
        executors=[make_executor(spec, pilot_config, label)], run_dir=str(run_dir), retries=retries,
        strategy_period=spec.strategy_period_s, usage_tracking=0,
        initialize_logging=FileLogging(level=logging.getLevelName(spec.parsl_log.upper())),
    )


def _placeholders(command: str, known: dict[str, object]) -> str:
    """Fill the executor's launch command the way it will be at run time; values only known then
    (interchange address and ports) are shown as <name>."""

    class Missing(dict):
        def __missing__(self, key: str) -> str:
            return f"<{key}>"

    once = command.format_map(Missing(known))
    return once.format_map(Missing(known))


def render_batch_script(spec: ProviderBase, pilot_config: Path | None, run_dir: Path) -> str:
    """The exact script Parsl's provider would submit for one block, without submitting it: the
    provider's own submit() runs with its scheduler command captured instead of executed."""
    if not spec.submits_batch_jobs:
        raise UserError(f"render: the {spec.kind} provider submits no batch script (profile {spec.name}); "  # type: ignore[attr-defined]
                        "choose a slurm, htcondor or glideinwms one")
    pilot = pilot_config if spec.starts_pilots else None
    provider = spec.parsl_provider(worker_init(spec))
    command = _placeholders(pilot_launch_cmd(spec, pilot), {
        "debug": "", "max_workers_per_node": f"--max_workers_per_node={spec.workers_per_node}",
        "cores_per_worker": spec.cores_per_worker, "heartbeat_threshold": spec.heartbeat_threshold_s,
        "heartbeat_period": max(1, spec.heartbeat_threshold_s // 5), "block_id": 0,
        "nodes_per_block": spec.nodes_per_block, "accelerators": "", "enable_mpi_mode": "",
        "address_probe_timeout_string": "",
    })
    submitted: list[str] = []

    def capture(cmd: str, *_args: object, **_kwargs: object) -> tuple[int, str, str]:
        submitted.append(cmd)
        return 0, "Submitted batch job 0\n** Proc 0.0\n1 job(s) submitted to cluster 0.\n", ""

    with tempfile.TemporaryDirectory() as script_dir:
        provider.script_dir = script_dir
        provider.execute_wait = capture  # type: ignore[method-assign]
        provider.submit(command, tasks_per_node=1, job_name="dgaas")
        files = sorted(Path(script_dir).iterdir(), key=lambda p: p.suffix != ".submit")
        parts = [f.read_text() if len(files) == 1 else f"# ---- {f.name}\n{f.read_text()}" for f in files]
        return "\n".join(parts).replace(script_dir, str(run_dir / "submit_scripts"))


def load(spec: ProviderBase, run_dir: Path, pilot_config: Path | None, retries: int,
         label: str = EXECUTOR_LABEL) -> DataFlowKernel:
    """parsl.load of make_config, whose first blocks are submitted as soon as the executor is up.
    Parsl submits init_blocks at its strategy's first poll after the executor has started, which
    comes up to a strategy period later (half a second on the local profile, a second by default,
    on the path to the first result); so the DataFlowKernel polls every FIRST_POLL_S while its
    interchange starts, and at the profile's period from its next poll on, which submits them."""
    config = make_config(spec, run_dir, pilot_config, retries, label)
    config.strategy_period = FIRST_POLL_S
    dfk = parsl.load(config)
    dfk.job_status_poller.interval = spec.strategy_period_s
    return dfk
