"""`kind: slurm`: each block is one `sbatch` job; `srun` starts one pilot-wrapped worker pool per
node (e.g. Fermilab's Wilson Cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dgaas_flow.sites.base import WALLTIME_PATTERN, ProviderBase

if TYPE_CHECKING:
    from parsl.providers.base import ExecutionProvider


class SlurmProviderSpec(ProviderBase):
    kind: Literal["slurm"] = Field(description="the scheduler")
    partition: str | None = Field(None, description="#SBATCH --partition")
    account: str | None = Field(None, description="#SBATCH --account")
    qos: str | None = Field(None, description="#SBATCH --qos")
    constraint: str | None = Field(None, description="#SBATCH --constraint (node features)")
    walltime: str = Field("01:00:00", pattern=WALLTIME_PATTERN, description="[D-]HH:MM:SS of a block")
    exclusive: bool = Field(False, description="whole nodes; off so nodes can be shared")
    gpu_request: Literal["gres", "gpus-per-node"] = Field(
        "gres", description="how GPUs are asked for: --gres=gpu:N or --gpus-per-node=N"
    )
    mem_per_node_gb: int | None = Field(None, ge=1, description="#SBATCH --mem")
    launcher: Literal["srun", "single_node"] = Field("srun", description="how the pool starts on each node")
    scheduler_options: list[str] = Field(default_factory=list, description="extra #SBATCH lines")

    def sbatch_lines(self) -> str:
        """The #SBATCH lines Parsl's SlurmProvider does not write itself."""
        lines = [f"#SBATCH {flag}={value}" for flag, value in (("--qos", self.qos), ("--constraint", self.constraint))
                 if value]
        if self.gpus_per_node:
            flag = "--gres=gpu:" if self.gpu_request == "gres" else "--gpus-per-node="
            lines.append(f"#SBATCH {flag}{self.gpus_per_node}")
        lines.append(f"#SBATCH --cpus-per-task={max(int(round(self.workers_per_node * self.cores_per_worker)), 1)}")
        lines += [line if line.startswith("#SBATCH") else f"#SBATCH {line}" for line in self.scheduler_options]
        return "\n".join(lines)

    def parsl_provider(self, worker_init: str) -> ExecutionProvider:
        from parsl.launchers import SingleNodeLauncher, SrunLauncher
        from parsl.providers import SlurmProvider

        launcher = SrunLauncher() if self.launcher == "srun" else SingleNodeLauncher(debug=False)
        return SlurmProvider(
            partition=self.partition, account=self.account, walltime=self.walltime, exclusive=self.exclusive,
            scheduler_options=self.sbatch_lines(), mem_per_node=self.mem_per_node_gb, launcher=launcher,
            cmd_timeout=30, **self.block_options(worker_init),
        )
