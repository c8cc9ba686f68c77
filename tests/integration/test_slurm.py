"""SLURM: the digits workflow through real sbatch on the single-node test cluster
(tests/clusters/slurm: slurmctld, slurmd, munge from Debian packages, 2 GPUs as generic resources
backed by character devices; there is no real GPU here, so Triton serves on CPU instances)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from dgaas_flow.pilot.endpoint import read_registry
from tests.conftest import ROOT, WORKFLOW, copy_workflow, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
CLUSTER = ROOT / "tests" / "clusters" / "slurm"
PROFILE = ROOT / "providers" / "slurm-local.yaml"


def cluster_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return ping.returncode == 0 and "UP" in ping.stdout


def queue() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[:-1]


@pytest.fixture(scope="module")
def slurm_cluster():
    """Starts the test cluster (idempotent) and fails loudly if it cannot; afterwards checks the
    queue drained and no server is left, and stops the cluster if this fixture started it."""
    was_up = cluster_up()
    started = subprocess.run(["bash", str(CLUSTER / "start.sh")], capture_output=True, text=True)
    assert started.returncode == 0, f"the SLURM test cluster did not start:\n{started.stdout}\n{started.stderr}"
    yield
    deadline = time.monotonic() + 30
    while queue() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = queue()
    if not was_up:
        subprocess.run(["bash", str(CLUSTER / "stop.sh")], check=True, capture_output=True)
    assert not left, f"jobs left in the queue: {left}"


def slurm_workflow(tmp_path: Path, digits_data: Path, **changes: str) -> Path:
    text = WORKFLOW.read_text().replace("provider: local", f"provider: {PROFILE}")
    for old, new in changes.items():
        text = text.replace(old, new)
    return copy_workflow(tmp_path / "wf", text, digits_data / "images")


def test_two_gpu_blocks_each_run_their_own_pilot(slurm_cluster, tmp_path, digits_data):
    path = slurm_workflow(tmp_path, digits_data, **{"chunk_size: auto": "chunk_size: 16"})
    out = tmp_path / "run"
    result = run_cli("run", path, "--out", out, "--progress", "log")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items_ok"], summary["items_failed"]) == (1797, 0) and summary["accuracy"] >= 0.95

    pilots = {p["block"]: p for p in summary["pilots"]}
    assert set(pilots) == {"0", "1"}
    assert pilots["0"]["endpoint"] != pilots["1"]["endpoint"]
    assert sorted(p["gpus"][0] for p in pilots.values()) == ["0", "1"]  # each its own allocated GPU
    assert all(p["batch_job"] and p["state"] == "stopped" for p in pilots.values())
    used = Counter((r["block"], r["pilot"]) for r in map(json.loads, (out / "results.jsonl").open()))
    assert {block for block, _ in used} == {"0", "1"}
    assert all(pilot == pilots[block]["endpoint"] for block, pilot in used)  # node-local server only


def test_a_cancelled_block_loses_no_item(slurm_cluster, tmp_path, digits_data):
    path = slurm_workflow(tmp_path, digits_data, **{"chunk_size: auto": "chunk_size: 8"})
    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-m", "dgaas_flow", "run", str(path), "--out", str(out),
                               "--progress", "quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = [e for e in read_registry(out / "pilots") if e.state == "ready"]
        if len(ready) == 2 and results.exists() and results.stat().st_size > 0:
            break
        time.sleep(0.1)
    victim = next(e for e in ready if e.block == "1")
    subprocess.run(["scancel", victim.batch_job], check=True)
    done_at_cancel = len(results.read_text().splitlines())
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr
    assert done_at_cancel < 1797, "the campaign ended before the block was cancelled; nothing was tested"

    counts = Counter(json.loads(line)["id"] for line in results.open())
    assert len(counts) == 1797 and set(counts.values()) == {1}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items_failed"] == 0
    cancelled = next(p for p in summary["pilots"] if p["batch_job"] == victim.batch_job)
    assert cancelled["state"] == "stopped"
    assert not psutil.pid_exists(victim.pid) or psutil.Process(victim.pid).status() == psutil.STATUS_ZOMBIE


def test_render_shows_the_script_for_the_test_cluster_without_submitting(slurm_cluster, tmp_path, digits_data):
    before = {line.split()[0] for line in queue()}
    result = run_cli("render", slurm_workflow(tmp_path, digits_data), "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --partition=gpu" in result.stdout and "#SBATCH --gres=gpu:1" in result.stdout
    assert {line.split()[0] for line in queue()} <= before  # nothing was submitted


def test_blocks_the_scheduler_refuses_are_said_and_stop_the_campaign_with_items_undone(slurm_cluster, tmp_path,
                                                                                       digits_data):
    profile = tmp_path / "refused.yaml"
    profile.write_text(PROFILE.read_text().replace("partition: gpu", "partition: nosuch")
                       + "  submit_retry_s: 5\n")
    text = WORKFLOW.read_text().replace("provider: local", f"provider: {profile}")
    path = copy_workflow(tmp_path / "wf", text, digits_data / "images")
    out = tmp_path / "run"
    result = run_cli("run", path, "--out", out, "--progress", "log")
    assert result.returncode == 4, result.stderr
    assert "Invalid partition name specified" in result.stderr  # the scheduler's own words, on screen
    assert "could not be submitted (attempt 1" in result.stderr and "cannot start" in result.stderr
    results = out / "results.jsonl"
    assert not results.exists() or results.read_text() == ""  # nothing recorded as failed: all left to resume
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["items_failed"] == 0
