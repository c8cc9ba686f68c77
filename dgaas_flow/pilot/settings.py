"""What a pilot is told: how to start its Triton server, and what to serve where. The pilot takes
these settings alone, never a workflow, so that it depends on nothing above it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TritonSettings(BaseModel):
    """How the pilot starts its Triton server."""

    model_config = ConfigDict(extra="forbid")

    launch: Literal["binary", "apptainer", "docker"] = Field(
        "binary", description="binary: a tritonserver executable; apptainer/docker: a server image"
    )
    binary: str | None = Field(
        None, description="tritonserver path; default: the one in the nvidia-pytriton wheel, else PATH"
    )
    image: str = Field(
        "nvcr.io/nvidia/tritonserver:24.09-py3", description="server image for apptainer/docker"
    )
    container_options: list[str] = Field(
        default_factory=list, description="extra options for `apptainer instance start` / `docker run`"
    )
    listen: str = Field(
        "127.0.0.1", description="address Triton binds; keep 127.0.0.1 unless a gateway reaches it"
    )
    ready_timeout_s: float = Field(120.0, gt=0, description="deadline for /v2/health/ready")
    max_restarts: int = Field(
        3, ge=0, description="restarts of a dead or hung server within restart_window_s before the pilot gives up"
    )
    restart_window_s: float = Field(600.0, gt=0, description="the window max_restarts counts in")
    health_interval_s: float = Field(5.0, gt=0, description="how often the pilot probes its server")
    exit_timeout_s: int = Field(
        1, ge=0, description="how long a stopping server lets requests in flight finish (a stopped block's "
        "unfinished chunks are retried elsewhere anyway); each second here is a second longer at every block's end"
    )
    drain_s: float = Field(
        120.0, ge=0, description="how long before its block ends a pilot drains: it is `draining` (no new work "
        "comes to it; the gateway drops it), its node's worker pool takes no new task and finishes those it holds, "
        "then the server stops; the block's end comes from SLURM, a glidein's GLIDEIN_ToDie, DGAAS_BLOCK_END or "
        "block_lifetime_s"
    )
    block_lifetime_s: float | None = Field(
        None, gt=0, description="how long a block lives after its pilot starts, for sites whose scheduler says "
        "no end time (None: ask the scheduler; no draining if it cannot say)"
    )
    health_failures: int = Field(3, ge=1, description="failed probes in a row that mean the server hung")
    auto_complete_config: bool = Field(
        False, description="let Triton complete model configs (slower start; needed for bare ONNX)"
    )
    extra_args: list[str] = Field(default_factory=list, description="extra tritonserver flags")


class PilotConfig(BaseModel):
    """Everything a pilot needs, as one JSON file a batch job can read on its node."""

    model_config = ConfigDict(extra="forbid")

    triton: TritonSettings = Field(default_factory=TritonSettings)
    repository: Path
    models: list[str] = Field(default_factory=list)
    registry: Path | None = Field(None, description="folder the endpoint file is published into")
    log_dir: Path
