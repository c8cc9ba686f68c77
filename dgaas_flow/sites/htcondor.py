"""`kind: htcondor`: each block is a vanilla-universe job (Parsl's CondorProvider) that starts its
own pilot on the slot's GPU."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dgaas_flow.sites.base import ProviderBase

if TYPE_CHECKING:
    from parsl.providers.base import ExecutionProvider


class CondorProviderSpec(ProviderBase):
    kind: Literal["htcondor"] = Field(description="the scheduler")
    request_memory_mb: int = Field(2000, ge=1, description="RequestMemory of a block job")
    requirements: str = Field("", description="ClassAd expression the slots must match")
    singularity_image: str | None = Field(None, description="+SingularityImage of the block jobs")
    submit_lines: list[str] = Field(default_factory=list, description="extra submit description lines")

    def job_requirements(self) -> str:
        return self.requirements

    def job_submit_lines(self) -> list[str]:
        """request_GPUs, the image and the profile's own lines."""
        lines = [f"request_GPUs = {self.gpus_per_node}"] if self.gpus_per_node else []
        if self.singularity_image:
            lines.append(f'+SingularityImage = "{self.singularity_image}"')
        return lines + self.submit_lines

    def parsl_provider(self, worker_init: str) -> ExecutionProvider:
        from parsl.launchers import SingleNodeLauncher

        from dgaas_flow.sites.graceful_condor import GracefulCondorProvider

        return GracefulCondorProvider(
            cores_per_slot=max(1, round(self.workers_per_node * self.cores_per_worker)),
            mem_per_slot=self.request_memory_mb / 1024, requirements=self.job_requirements(),
            scheduler_options="\n".join(self.job_submit_lines()), launcher=SingleNodeLauncher(debug=False),
            cmd_timeout=60, **self.block_options(worker_init),
        )
