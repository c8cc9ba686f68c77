"""A provider profile becomes a Parsl Config: one HighThroughputExecutor whose worker pool on each
node is started under `dgaas-flow pilot wrap`, so that each block (node) runs exactly one pilot and
all workers of that node share it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD
from parsl.launchers import SingleNodeLauncher, SrunLauncher
from parsl.providers import LocalProvider, SlurmProvider
from parsl.providers.base import ExecutionProvider

from dgaas_flow.errors import UserError
from dgaas_flow.spec import LocalProviderSpec, ProviderBase, SlurmProviderSpec

EXECUTOR_LABEL = "dgaas"


def python_on_nodes(spec: ProviderBase) -> str:
    return spec.python or sys.executable


def pilot_launch_cmd(spec: ProviderBase, pilot_config: Path | None) -> str:
    """The worker pool command, wrapped by the pilot when this provider starts pilots."""
    if pilot_config is None:
        return DEFAULT_LAUNCH_CMD
    wrap = [python_on_nodes(spec), "-m", "dgaas_flow", "pilot", "wrap", "--config", str(pilot_config)]
    # {{block_id}} survives the executor's first str.format and is filled per block.
    return shlex.join(wrap) + " --block {{block_id}} -- " + DEFAULT_LAUNCH_CMD


def worker_init(spec: ProviderBase) -> str:
    """Put the environment of the nodes' Python first on PATH (process_worker_pool.py lives there)."""
    bin_dir = Path(python_on_nodes(spec)).parent
    return "\n".join(filter(None, [f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"', spec.worker_init]))


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
            launcher=launcher, cmd_timeout=30, **common,
        )
    raise UserError(f"provider {spec.name}: kind {spec.kind!r} cannot run campaigns in this version")


def make_config(spec: ProviderBase, run_dir: Path, pilot_config: Path | None, retries: int) -> Config:
    executor = HighThroughputExecutor(
        label=EXECUTOR_LABEL,
        address="127.0.0.1" if isinstance(spec, LocalProviderSpec) else None,
        provider=make_provider(spec),
        max_workers_per_node=spec.workers_per_node,
        cores_per_worker=spec.cores_per_worker,
        launch_cmd=pilot_launch_cmd(spec, pilot_config),
        heartbeat_period=5,
        heartbeat_threshold=30,
    )
    return Config(
        executors=[executor], run_dir=str(run_dir), retries=retries,
        strategy_period=spec.strategy_period_s, usage_tracking=0,
    )
