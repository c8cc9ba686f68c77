"""`dgaas-flow render` prints the batch script a block would submit; pinned for the Wilson Cluster."""

from __future__ import annotations

import subprocess
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


def test_render_htcondor_walltime_removes_the_job_and_tells_the_pilot_its_end(tmp_path, digits_data):
    """HTCondor tells a job nothing of its removal: the block computes its end at start
    (DGAAS_BLOCK_END, which its pilot drains before) and the job description removes it then."""
    profile = tmp_path / "pool.yaml"
    profile.write_text('provider: {kind: htcondor, gpus_per_node: 1, walltime: "1-02:00:30"}\n')
    result = run_cli("render", WORKFLOW, "--provider", profile, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    seconds = 86400 + 2 * 3600 + 30
    assert f"periodic_remove = (JobStatus == 2) && (time() - EnteredCurrentStatus > {seconds})" in result.stdout
    assert "leave_in_queue = (JobStatus == 4) && ((time() - EnteredCurrentStatus) < 30)" in result.stdout
    export = f"export DGAAS_BLOCK_END=$(( $(date +%s) + {seconds} ))"
    assert export in result.stdout
    clock = tmp_path / "bin" / "date"  # the node's clock, fixed: the line is evaluated as the block starts
    clock.parent.mkdir()
    clock.write_text("#!/bin/sh\necho 1800000000\n")
    clock.chmod(0o755)
    shown = subprocess.run(["bash", "-c", f"{export}; echo $DGAAS_BLOCK_END"], capture_output=True, text=True,
                           env={"PATH": f"{clock.parent}:/usr/bin:/bin"})
    assert int(shown.stdout) == 1800000000 + seconds
