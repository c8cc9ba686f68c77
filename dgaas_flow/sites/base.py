"""What every site profile has, whatever its scheduler: how many workers and blocks, the nodes'
Python and environment, and how Parsl's blocks are watched. A scheduler's module subclasses
`ProviderBase` with its own fields and its translation to a Parsl provider."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # Parsl is imported by the translation alone: `dgaas-flow validate` stays light
    from parsl.providers.base import ExecutionProvider


WALLTIME_PATTERN = r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$"  # [D-]HH:MM:SS, as sbatch --time takes it


class AutoscaleSpec(BaseModel):
    """Blocks follow Triton's own pressure instead of Parsl's task backlog (see
    `dgaas_flow.campaign.autoscaler`)."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["queue_ms_per_execution"] = Field(
        "queue_ms_per_execution", description="the servers' queue time per execution over the window (SuperSONIC's)"
    )
    target: float = Field(
        20.0, gt=0, description="ms: above it for a whole window, with tasks waiting, a block is added"
    )
    window_s: float = Field(30.0, gt=0, description="how long the metric must stay above target")
    cooldown_s: float = Field(60.0, ge=0, description="no decision this soon after the previous one")
    idle_s: float = Field(120.0, gt=0, description="a pilot that served nothing this long lets a block go")
    min_blocks: int | None = Field(None, ge=0, description="blocks kept at least; default: the profile's min_blocks")
    max_blocks: int | None = Field(None, ge=1, description="blocks at most; default: the profile's max_blocks")
    tick_s: float = Field(2.0, gt=0, description="how often the pilots' counters are read")
    clients_per_pilot: int | None = Field(
        None, ge=1, description="a scale test's break-even (`scale-test --break-even`): keep at least one pilot "
        "block per this many client workers, whatever the queue time says (None: the queue time alone)",
    )


class ProviderBase(BaseModel):
    """The fields common to every kind of provider profile."""

    model_config = ConfigDict(extra="forbid")

    # What the executor needs to know of a kind, beyond its fields.
    starts_pilots: ClassVar[bool] = True  # False: the site starts the pilots (a glidein's setup phase)
    submits_batch_jobs: ClassVar[bool] = True  # False: blocks are processes here (nothing to render)
    default_address: ClassVar[str | None] = None  # how workers reach the driver when `address` is unset

    name: str | None = Field(None, description="the profile's name; default: its file name")
    workers_per_node: int = Field(2, ge=1, description="Parsl workers (CPU clients) per node")
    cores_per_worker: float = Field(1.0, gt=0, description="cores each worker is given")
    nodes_per_block: int = Field(1, ge=1, description="nodes of one block (one pilot on each)")
    init_blocks: int = Field(1, ge=0, description="blocks started with the session")
    min_blocks: int = Field(0, ge=0, description="blocks kept when there is no work")
    max_blocks: int = Field(1, ge=1, description="blocks at most")
    gpus_per_node: int = Field(0, ge=0, description="GPUs each node's pilot gets")
    worker_init: str = Field("", description="shell lines run before the workers start")
    python: str | None = Field(None, description="python on the nodes; default: the driver's own")
    address: str | None = Field(
        None, description="address the workers reach the driver at; default: 127.0.0.1 for local, else probed"
    )
    strategy_period_s: float = Field(1.0, gt=0, description="how often Parsl rescales blocks")
    status_poll_s: float | None = Field(
        10.0, gt=0, description="how often the scheduler is asked how the blocks are (squeue, condor_q): a block "
        "that ended early (its pilot drained, its node failed) is replaced at most this much later; never "
        "less often than Parsl's own period (60 s for SLURM and HTCondor, 5 s for local); None: Parsl's",
    )
    heartbeat_threshold_s: int = Field(
        30, ge=2, description="a block silent this long is lost and its tasks are retried elsewhere"
    )
    submit_retry_s: float = Field(
        300.0, ge=0, description="how long block submissions the scheduler refuses (unreachable, job rejected, "
        "bad account or partition) are retried, with backoff, before the campaign stops with exit status 4, "
        "its items left undone for a rerun"
    )
    autoscale: AutoscaleSpec | None = Field(
        None, description="scale pilot blocks on Triton's queue time per execution (None: Parsl's backlog rule)"
    )
    parsl_log: Literal["debug", "info", "warning"] = Field(
        "warning", description="level of Parsl's own log (the session's parsl/NNN/parsl.log and the "
        "interchange's); debug writes a dozen lines a task: set it when debugging Parsl itself",
    )

    @property
    def max_workers(self) -> int:
        """Workers of every block the provider may run at once."""
        return self.workers_per_node * self.nodes_per_block * self.max_blocks

    def block_options(self, worker_init: str) -> dict[str, Any]:
        """The arguments every Parsl provider takes alike."""
        return dict(init_blocks=self.init_blocks, min_blocks=self.min_blocks, max_blocks=self.max_blocks,
                    nodes_per_block=self.nodes_per_block, worker_init=worker_init)

    def block_lines(self) -> list[str]:
        """Shell lines a block of this kind runs first (e.g. exporting when it ends, DGAAS_BLOCK_END,
        where the scheduler does not tell the job itself)."""
        return []

    def parsl_provider(self, worker_init: str) -> ExecutionProvider:
        """The Parsl provider whose blocks this profile describes; `worker_init` is the complete
        shell preamble of a block (see `sites.executor.worker_init`)."""
        raise NotImplementedError
