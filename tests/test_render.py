"""`dgaas-flow render` prints the batch script a block would submit; pinned for the Wilson Cluster."""

from __future__ import annotations

import sys

from tests.conftest import WORKFLOW, run_cli


def test_render_wilson_cluster_has_partition_gpus_and_pilot_wrapper(tmp_path, digits_data):
    result = run_cli("render", WORKFLOW, "--provider", "wilson-cluster", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in ("#!/bin/bash", "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:1", "#SBATCH --nodes=1",
                 "#SBATCH --time=60", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=8",
                 f"#SBATCH --output={tmp_path}/run/parsl/submit_scripts/dgaas."):
        assert line in script, line
    assert "--exclusive" not in script  # nodes are shared unless the profile says otherwise
    assert (f"{sys.executable} -m dgaas_flow pilot wrap --config {tmp_path}/run/pilot.json --start-with-server "
            "--block 0 -- "
            f"{sys.executable} -m parsl.executors.high_throughput.process_worker_pool  --max_workers_per_node=8 "
            "-a <addresses>") in script
    assert "srun --ntasks 1 -l  bash" in script  # srun: one pilot on every node of the block


def test_render_cpu_test_partition_asks_for_no_gpu(tmp_path, digits_data):
    result = run_cli("render", WORKFLOW, "--provider", "wilson-cluster-cpu", "--out", tmp_path / "run")
    assert "#SBATCH --partition=cpu_test" in result.stdout and "gpu" not in result.stdout.replace("cpu_test", "")


def test_render_local_provider_is_a_clear_user_error(digits_data):
    result = run_cli("render", WORKFLOW)
    assert result.returncode == 2 and "local provider submits no batch script" in result.stderr
