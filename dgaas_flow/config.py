"""A provider profile becomes a Parsl Config: one HighThroughputExecutor whose worker pool on each
node is started under `dgaas-flow pilot wrap`, so that each block (node) runs exactly one pilot and
all workers of that node share it."""

from __future__ import annotations

import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

import parsl
from parsl.config import Config
from parsl.dataflow.dflow import DataFlowKernel
from parsl.executors import HighThroughputExecutor
from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD
from parsl.jobs.error_handlers import windowed_error_handler
from parsl.launchers import SingleNodeLauncher, SrunLauncher
from parsl.logconfigs.file import FileLogging
from parsl.providers import CondorProvider, LocalProvider, SlurmProvider
from parsl.providers.base import ExecutionProvider

from dgaas_flow import optimized
from dgaas_flow.errors import UserError
from dgaas_flow.spec import (
    CondorProviderSpec,
    GlideinWMSProviderSpec,
    LocalProviderSpec,
    ProviderBase,
    SlurmProviderSpec,
)

EXECUTOR_LABEL = "dgaas"
FIRST_POLL_S = 0.02  # Parsl's strategy period until the executor is up (see load)
# Parsl's interchange as process listings show it: the module it starts as, then the name it gives
# itself once running (setproctitle); for whatever looks for it (the test suite's leak check)
INTERCHANGE_NAMES = ("high_throughput.interchange", "HTEX interchange")


def python_on_nodes(spec: ProviderBase) -> str:
    return spec.python or sys.executable


def parsl_process(python: str, module: str) -> list[str]:
    """One of Parsl's HTEX processes (`interchange`, `process_worker_pool`), run under `python -O`
    where that pays (see dgaas_flow.optimized: Parsl's imports take half the time)."""
    return optimized.command(python, f"parsl.executors.high_throughput.{module}")


def worker_pool_cmd(spec: ProviderBase) -> str:
    """Parsl's worker pool command, its script replaced by the module run optimized."""
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


def worker_init(spec: ProviderBase) -> str:
    """Forward stop signals, and put the nodes' Python environment first on PATH (the site's own
    worker_init, which follows, may call its tools)."""
    bin_dir = Path(python_on_nodes(spec)).parent
    lines = [FORWARD_TERM, f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"', spec.worker_init]
    return "\n".join(filter(None, lines))


def slurm_scheduler_options(spec: SlurmProviderSpec) -> str:
    lines = []
    for flag, value in (("--qos", spec.qos), ("--constraint", spec.constraint)):
        if value:
            lines.append(f"#SBATCH {flag}={value}")
    if spec.gpus_per_node:
        if spec.gpu_request == "gres":
            lines.append(f"#SBATCH --gres=gpu:{spec.gpus_per_node}")
        else:
            lines.append(f"#SBATCH --gpus-per-node={spec.gpus_per_node}")
    cpus = int(round(spec.workers_per_node * spec.cores_per_worker))
    lines.append(f"#SBATCH --cpus-per-task={max(cpus, 1)}")
    lines += [line if line.startswith("#SBATCH") else f"#SBATCH {line}" for line in spec.scheduler_options]
    return "\n".join(lines)


class GracefulCondorProvider(CondorProvider):
    """Parsl's CondorProvider, except that cancelling lets a block stop: Parsl runs `condor_rm` and
    `condor_rm -forcex` back to back, so the starter kills the pilot with SIGKILL before it can stop
    its server (which then leaks the Python backend's shared memory). Here `condor_rm` comes first,
    the starter sends the job SIGTERM, and Parsl's forced removal follows once the jobs have left
    their slots or after `stop_grace_s`."""

    def __init__(self, *args: object, stop_grace_s: float = 30.0, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.stop_grace_s = stop_grace_s

    def cancel(self, job_ids: list[str]) -> list[bool]:
        ids = " ".join(job_ids)
        self.execute_wait(f"condor_rm {ids}")
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline:
            retcode, stdout, _ = self.execute_wait(f"condor_q {ids} -af RemoteHost")
            if retcode == 0 and all(host == "undefined" for host in stdout.split()):
                break
            time.sleep(0.5)
        return super().cancel(job_ids)


def condor_requirements(spec: CondorProviderSpec) -> str:
    parts = [spec.requirements]
    if isinstance(spec, GlideinWMSProviderSpec):
        parts.append(spec.triton_requirements)
    return " && ".join(f"({p})" for p in parts if p)


def condor_submit_lines(spec: CondorProviderSpec) -> str:
    lines = []
    # On glideins the GPU belongs to the glidein's server; the blocks are CPU clients.
    if spec.gpus_per_node and not isinstance(spec, GlideinWMSProviderSpec):
        lines.append(f"request_GPUs = {spec.gpus_per_node}")
    if spec.singularity_image:
        lines.append(f'+SingularityImage = "{spec.singularity_image}"')
    return "\n".join(lines + spec.submit_lines)


def make_provider(spec: ProviderBase) -> ExecutionProvider:
    common = dict(
        init_blocks=spec.init_blocks, min_blocks=spec.min_blocks, max_blocks=spec.max_blocks,
        nodes_per_block=spec.nodes_per_block, worker_init=worker_init(spec),
    )
    if isinstance(spec, LocalProviderSpec):
        return LocalProvider(launcher=SingleNodeLauncher(debug=False), **common)
    if isinstance(spec, SlurmProviderSpec):
        launcher = SrunLauncher() if spec.launcher == "srun" else SingleNodeLauncher(debug=False)
        return SlurmProvider(
            partition=spec.partition, account=spec.account, walltime=spec.walltime,
            exclusive=spec.exclusive, scheduler_options=slurm_scheduler_options(spec),
            mem_per_node=spec.mem_per_node_gb, launcher=launcher, cmd_timeout=30, **common,
        )
    if isinstance(spec, CondorProviderSpec):
        return GracefulCondorProvider(
            cores_per_slot=max(1, round(spec.workers_per_node * spec.cores_per_worker)),
            mem_per_slot=spec.request_memory_mb / 1024, requirements=condor_requirements(spec),
            scheduler_options=condor_submit_lines(spec), launcher=SingleNodeLauncher(debug=False),
            cmd_timeout=60, **common,
        )
    raise UserError(f"provider {spec.name}: kind {spec.kind!r} is not supported")


def make_config(spec: ProviderBase, run_dir: Path, pilot_config: Path | None, retries: int) -> Config:
    executor = HighThroughputExecutor(
        label=EXECUTOR_LABEL,
        address=spec.address or ("127.0.0.1" if isinstance(spec, LocalProviderSpec) else None),
        provider=make_provider(spec),
        max_workers_per_node=spec.workers_per_node,
        # a task waiting at each worker's node, so a worker starts its next chunk as it returns one
        # instead of after a round trip through the interchange: 4-6 % more items/s at 300k items
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
    )
    return Config(
        executors=[executor], run_dir=str(run_dir), retries=retries,
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
    if isinstance(spec, LocalProviderSpec):
        raise UserError("render: the local provider submits no batch script; choose a slurm or htcondor one")
    pilot = None if isinstance(spec, GlideinWMSProviderSpec) else pilot_config
    provider = make_provider(spec)
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


def load(spec: ProviderBase, run_dir: Path, pilot_config: Path | None, retries: int) -> DataFlowKernel:
    """parsl.load of make_config, whose first blocks are submitted as soon as the executor is up.
    Parsl submits init_blocks at its strategy's first poll after the executor has started, which
    comes up to a strategy period later (half a second on the local profile, a second by default,
    on the path to the first result); so the DataFlowKernel polls every FIRST_POLL_S while its
    interchange starts, and at the profile's period from its next poll on, which submits them."""
    config = make_config(spec, run_dir, pilot_config, retries)
    config.strategy_period = FIRST_POLL_S
    dfk = parsl.load(config)
    dfk.job_status_poller.interval = spec.strategy_period_s
    return dfk
