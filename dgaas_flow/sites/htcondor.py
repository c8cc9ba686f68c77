"""`kind: htcondor`: each block is a vanilla-universe job (Parsl's CondorProvider) that starts its
own pilot on the slot's GPU."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dgaas_flow.sites.base import WALLTIME_PATTERN, ProviderBase

if TYPE_CHECKING:
    from parsl.providers.base import ExecutionProvider


class CondorProviderSpec(ProviderBase):
    kind: Literal["htcondor"] = Field(description="the scheduler")
    request_memory_mb: int = Field(2000, ge=1, description="RequestMemory of a block job")
    requirements: str = Field("", description="ClassAd expression the slots must match")
    singularity_image: str | None = Field(None, description="+SingularityImage of the block jobs")
    submit_lines: list[str] = Field(default_factory=list, description="extra submit description lines")
    walltime: str | None = Field(
        None, pattern=WALLTIME_PATTERN, description="[D-]HH:MM:SS a block may run: the schedd "
        "removes its job after that (periodic_remove) and its pilot drains triton.drain_s before; None: no "
        "limit but the pool's own policy (a glidein's end is read from GLIDEIN_ToDie)",
    )

    @property
    def walltime_s(self) -> int | None:
        if self.walltime is None:
            return None
        days, _, clock = self.walltime.rpartition("-")
        hours, minutes, seconds = (int(x) for x in clock.split(":"))
        return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds

    def block_lines(self) -> list[str]:
        """HTCondor does not tell a job when it will be removed: the block says so itself."""
        if self.walltime_s is None:
            return []
        return [f"export DGAAS_BLOCK_END=$(( $(date +%s) + {self.walltime_s} ))"]

    def job_requirements(self) -> str:
        return self.requirements

    def job_submit_lines(self) -> list[str]:
        """request_GPUs, how long an ended job stays, the walltime's removal, the image and the
        profile's own lines. Parsl's submit file keeps every job in the queue once it ends
        (`leave_in_queue = TRUE`, so that its status poll sees it end): a block that ended on its
        own (drained, its walltime) would stay in the user's queue for good; here it leaves once
        several status polls have seen it (a later line of a submit file wins)."""
        keep_s = max(30, round(3 * min(60.0, self.status_poll_s or 60.0)))
        lines = [f"leave_in_queue = (JobStatus == 4) && ((time() - EnteredCurrentStatus) < {keep_s})"]
        if self.gpus_per_node:
            lines.append(f"request_GPUs = {self.gpus_per_node}")
        if self.walltime_s is not None:  # evaluated by the schedd every PERIODIC_EXPR_INTERVAL (60 s by default)
            lines.append(f"periodic_remove = (JobStatus == 2) && (time() - EnteredCurrentStatus > {self.walltime_s})")
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
