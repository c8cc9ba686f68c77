"""When a pilot's block ends, so that it drains before (see Pilot and `pilot wrap`).

In order: DGAAS_BLOCK_END (Unix time, for sites or wrappers that know better); SLURM: the job's
end time (`squeue -h -j $SLURM_JOB_ID -o %e`); a GlideinWMS glidein: GLIDEIN_ToDie in the machine
ad HTCondor gives the job ($_CONDOR_MACHINE_AD); else `triton.block_lifetime_s` after the pilot
started (a setting for sites that expose neither); else unknown (no draining).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)


def slurm_end(job_id: str, timeout: float = 10.0) -> float | None:
    """The SLURM job's end time (its start plus its time limit, as the controller says)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True,
                             timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("cannot ask SLURM when job %s ends: %s", job_id, exc)
        return None
    return parse_slurm_time(out.stdout.strip()) if out.returncode == 0 else None


def parse_slurm_time(text: str) -> float | None:
    """SLURM's local ISO time (2026-12-02T20:21:16) as Unix time; None for N/A, Unknown, ..."""
    try:
        return datetime.fromisoformat(text.splitlines()[0]).timestamp() if text else None
    except ValueError:
        return None


def ad_attribute(path: str | None, name: str) -> float | None:
    """A numeric attribute of an HTCondor ClassAd file (`Name = 1234`)."""
    if not path:
        return None
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(" = ")
            if key.strip() == name:
                return float(value.strip().strip('"'))
    except (OSError, ValueError):
        return None
    return None


def block_end(environ: Mapping[str, str] = os.environ, lifetime_s: float | None = None,
              started: float | None = None) -> tuple[float | None, str]:
    """(Unix time the block ends or None, where that came from)."""
    if environ.get("DGAAS_BLOCK_END"):
        try:
            return float(environ["DGAAS_BLOCK_END"]), "DGAAS_BLOCK_END"
        except ValueError:
            logger.warning("DGAAS_BLOCK_END=%r is not a Unix time; ignored", environ["DGAAS_BLOCK_END"])
    if environ.get("SLURM_JOB_ID"):
        end = slurm_end(environ["SLURM_JOB_ID"])
        if end is not None:
            return end, f"SLURM job {environ['SLURM_JOB_ID']}"
    to_die = ad_attribute(environ.get("_CONDOR_MACHINE_AD"), "GLIDEIN_ToDie")
    if to_die is not None:
        return to_die, "the glidein's GLIDEIN_ToDie"
    if lifetime_s is not None and started is not None:
        return started + lifetime_s, "triton.block_lifetime_s"
    return None, "unknown"


def with_drain_period(cmd: list[str], seconds: float) -> list[str]:
    """A Parsl worker pool's command asking the pool to drain `seconds` after it starts (it then
    takes no new task, finishes those it holds, and exits): its `--drain_period=None` replaced."""
    period = f"--drain_period={max(1, int(seconds))}"
    return [period if arg.startswith("--drain_period=") else arg for arg in cmd]
