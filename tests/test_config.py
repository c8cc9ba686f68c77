"""Provider profiles become Parsl configs whose worker pools run under the pilot wrapper."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from parsl.logconfigs.file import FileLogging
from parsl.providers import LocalProvider

from dgaas_flow.sites import LocalProviderSpec
from dgaas_flow.sites.executor import FORWARD_TERM, make_config, pilot_launch_cmd, worker_init


def test_local_provider_wraps_the_worker_pool_in_one_pilot_per_block(tmp_path: Path):
    spec = LocalProviderSpec(kind="local", workers_per_node=3, worker_init="module load x")
    config = make_config(spec, tmp_path / "parsl", tmp_path / "pilot.json", retries=2)
    (executor,) = config.executors
    assert isinstance(executor.provider, LocalProvider)
    assert executor.max_workers_per_node == 3 and executor.prefetch_capacity == 3 and config.retries == 2
    assert executor.launch_cmd.startswith(f"{sys.executable} -m dgaas_flow pilot wrap --config {tmp_path}/pilot.json")
    # formatted twice by the executor: at start, then per block; Parsl's processes run as modules of the
    # nodes' Python, so its scripts need not be on PATH
    htex = "parsl.executors.high_throughput"
    assert f" --block {{{{block_id}}}} -- {sys.executable} -m {htex}.process_worker_pool " in executor.launch_cmd
    assert executor.interchange_launch_cmd == [
        sys.executable, "-m", "dgaas_flow.lifetime", sys.executable, "-m", f"{htex}.interchange"]
    assert worker_init(spec).splitlines() == [
        *FORWARD_TERM.splitlines(), f'export PATH={Path(sys.executable).parent}:"$PATH"',
        'export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"', 'export MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"',
        "module load x"]


def test_workers_blas_threads_are_their_cores_unless_the_site_set_them():
    """A worker of 4 cores gets 4 BLAS threads; a value already in the environment stays."""
    script = worker_init(LocalProviderSpec(kind="local", cores_per_worker=4))
    shown = subprocess.run(["bash", "-c", script + "\necho $OPENBLAS_NUM_THREADS $MKL_NUM_THREADS"],
                           env={"PATH": os.environ["PATH"], "MKL_NUM_THREADS": "8"}, capture_output=True, text=True)
    assert shown.stdout.split() == ["4", "8"]


def test_a_site_python_runs_the_pilot_and_the_pool(tmp_path: Path):
    spec = LocalProviderSpec(kind="local", python="/cvmfs/site/bin/python3")
    launch = pilot_launch_cmd(spec, tmp_path / "pilot.json")
    assert launch.startswith("/cvmfs/site/bin/python3 -m dgaas_flow pilot wrap ")
    pool = "/cvmfs/site/bin/python3 -m parsl.executors.high_throughput.process_worker_pool "
    assert f" -- {pool}" in launch and pilot_launch_cmd(spec, None).startswith(pool)


def test_parsl_log_level_follows_the_profile(tmp_path: Path):
    """Parsl's debug log writes a dozen lines a task; a campaign keeps warnings unless asked."""
    quiet = make_config(LocalProviderSpec(kind="local"), tmp_path / "a", None, retries=0)
    debug = make_config(LocalProviderSpec(kind="local", parsl_log="debug"), tmp_path / "b", None, retries=0)
    assert isinstance(quiet.initialize_logging, FileLogging) and quiet.initialize_logging.level == logging.WARNING
    assert debug.initialize_logging.level == logging.DEBUG
