"""The endpoint a pilot publishes: where its Triton server answers, and in what state it is.
Written atomically, for readers on a shared filesystem (tasks, the campaign driver, the gateway)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from dgaas_flow.processes import alive, write_atomic

ENV_URL = "DGAAS_TRITON_URL"
ENV_GRPC_URL = "DGAAS_TRITON_GRPC_URL"
ENV_ENDPOINT_FILE = "DGAAS_ENDPOINT_FILE"
KEY_SUFFIX = ".key"
METRICS_REQUEST = "metrics-request"  # in a registry: the id of the latest request for fresh counters
# A remote pilot's file must be older than this to count as gone: the reader's clock is not the
# pilot's, and clusters run with up to 5 minutes between them (munge's and Kerberos's tolerance).
SILENT_MIN_S = 300.0


def batch_job_id(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """SLURM's job id, or HTCondor's ClusterId.ProcId read from the job ad the starter provides."""
    if environ.get("SLURM_JOB_ID"):
        return environ["SLURM_JOB_ID"]
    ad = environ.get("_CONDOR_JOB_AD")
    if ad:
        try:
            attrs = dict(line.split(" = ", 1) for line in Path(ad).read_text().splitlines() if " = " in line)
            return f"{attrs['ClusterId'].strip()}.{attrs['ProcId'].strip()}"
        except (OSError, KeyError):
            return None
    return None


class Endpoint(BaseModel):
    name: str | None = Field(None, description="the pilot's name, unique on its host (its endpoint file's)")
    http_url: str | None = None
    grpc_url: str | None = None
    metrics_url: str | None = None
    models: list[str] = Field(default_factory=list)
    gpus: list[str] = Field(default_factory=list, description="GPU ids given to the server")
    host: str = Field(default_factory=socket.gethostname)
    pid: int | None = Field(None, description="pid of the tritonserver process")
    supervisor_pid: int = Field(default_factory=os.getpid)
    block: str | None = Field(None, description="the Parsl block whose node runs this pilot")
    batch_job: str | None = Field(default_factory=lambda: batch_job_id(), description="the batch system's job id")
    launch: str = "binary"
    state: Literal["starting", "ready", "restarting", "draining", "stopped", "failed"] = Field(
        "starting", description="draining: its block ends soon; it finishes what it holds and takes no new work"
    )
    restarts: int = 0
    started_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    log: str | None = None
    error: str | None = Field(None, description="why the pilot failed, when it did")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Triton's counters over all its server lifetimes (dgaas_flow.pilot.metrics)"
    )
    metrics_answered: str | None = Field(None, description="the last counter request these counters answer")
    heartbeat_at: float | None = Field(None, description="when the pilot last wrote this file (Unix time, its clock)")
    ends_at: float | None = Field(None, description="when its block ends (Unix time), if known")
    draining_since: float | None = Field(None, description="when it began draining (Unix time)")
    heartbeat_every_s: float | None = Field(None, description="how often it writes it, at least, while ready")

    @property
    def key(self) -> tuple[str, str | None, str]:
        """Which pilot this is, however often its file is rewritten (its ports may change)."""
        return self.host, self.name, self.started_at

    def gone(self, now: float | None = None) -> bool:
        """Whether a pilot that may say it serves cannot: on this host, its supervisor has exited
        (a killed pilot cannot mark its file stopped); on another, it is ready but has not written
        its file for three of its intervals, and at least SILENT_MIN_S (its node died without a
        word). Pilots that publish no heartbeat (older versions) are taken at their word."""
        if self.host == socket.gethostname():
            return not alive(self.supervisor_pid)
        if self.state != "ready" or self.heartbeat_at is None or not self.heartbeat_every_s:
            return False
        silent = (time.time() if now is None else now) - self.heartbeat_at
        return silent > max(SILENT_MIN_S, 3 * self.heartbeat_every_s)

    def serving(self) -> bool:
        """Ready, and not gone."""
        return self.state == "ready" and not self.gone()

    def url(self, protocol: str) -> str | None:
        return self.http_url if protocol == "http" else self.grpc_url

    def worker_env(self, path: Path | None) -> dict[str, str]:
        """What the workers wrapped by this pilot find in their environment."""
        env = {ENV_URL: self.http_url or "", ENV_GRPC_URL: self.grpc_url or ""}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the GPUs are the server's; workers are CPU clients
        if path is not None:
            env[ENV_ENDPOINT_FILE] = str(path)
        return env

    def write(self, path: Path) -> None:
        write_atomic(path, self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> Endpoint:
        return cls.model_validate_json(Path(path).read_text())


def key_file(endpoint_file: Path) -> Path:
    """Where a pilot keeps the secret its server's control plane asks for: beside its endpoint
    file, mode 0600, never inside the endpoint, which every reader of the registry sees."""
    return Path(endpoint_file).with_suffix(KEY_SUFFIX)


def read_key(path: Path) -> str | None:
    """A pilot's secret, if this user may read it (the pilot's owner, its gateway); else None."""
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def read_registry(registry: Path) -> list[Endpoint]:
    """Every pilot that has published into a registry folder, oldest first."""
    found = []
    for path in sorted(Path(registry).glob("*.json")):
        try:
            found.append(Endpoint.read(path))
        except (OSError, ValueError, json.JSONDecodeError):
            continue
    return sorted(found, key=lambda e: e.started_at)


def pilots_since(registry: Path, since: str) -> list[Endpoint]:
    """The pilots that started at or after `since` (an ISO time in seconds, as endpoints record)."""
    return [e for e in read_registry(registry) if e.started_at >= since]


def request_metrics(registry: Path) -> str:
    """Ask every pilot publishing into `registry` to read Triton's counters now (a campaign that
    ends in a session needs its own figures, not those of the last health probe); returns the
    request's id, which each pilot's endpoint names in `metrics_answered` once it has."""
    request = uuid.uuid4().hex
    write_atomic(Path(registry) / METRICS_REQUEST, request)
    return request


def metrics_request(registry: Path) -> str | None:
    """The latest request for counters, None if there is none."""
    try:
        return (Path(registry) / METRICS_REQUEST).read_text().strip() or None
    except OSError:
        return None
