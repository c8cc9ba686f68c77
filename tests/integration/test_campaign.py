"""Whole campaigns on the local provider: Parsl, a real pilot per block, results on disk."""

from __future__ import annotations

import glob
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dgaas_flow.campaign import run_campaign
from dgaas_flow.specs import load_workflow
from tests.conftest import WORKFLOW, copy_workflow, run_cli, wait_for

pytestmark = pytest.mark.integration


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_digits_campaign_end_to_end(tmp_path, digits_data):
    """The README's main job: every item once, accurate, served by the block's own pilot."""
    out = tmp_path / "run"
    semaphores = set(glob.glob("/dev/shm/sem.mp-*"))
    result = run_cli("run", WORKFLOW, "--out", out, "--progress", "log")
    assert result.returncode == 0, result.stderr
    # the block's worker pool leaves no multiprocessing semaphores in /dev/shm (memory, until a reboot)
    wait_for(lambda: not set(glob.glob("/dev/shm/sem.mp-*")) - semaphores, timeout=15,
             what="the block's semaphores to be unlinked")
    assert "1797/1797 items ok, 0 failed" in result.stdout and "accuracy:" in result.stdout
    assert "progress: 1797/1797 items" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("0 failed, pilots 1/1 ready")  # the last line is now

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items_total"], summary["items_ok"], summary["items_failed"]) == (1797, 1797, 0)
    assert summary["accuracy"] >= 0.95
    assert all(summary["latency_ms"][p] > 0 for p in ("p50", "p95", "p99"))
    (pilot,) = summary["pilots"]
    assert pilot["items"] == 1797 and pilot["block"] == "0" and pilot["state"] == "stopped"
    assert pilot["endpoint"].startswith("http://127.0.0.1:")

    # What the server saw, from the pilot's Triton metrics, agrees with what the clients recorded.
    (triton,) = summary["triton"]
    assert triton["endpoint"] == pilot["endpoint"] and triton["inferences"] == 1797
    assert triton["requests"] == summary["requests"] == sum(n for _, n in summary["latency_ms"]["histogram"])
    assert triton["failures"] == 0 and 1 <= triton["avg_batch"] <= 1024 and triton["gpu_utilization"] is None
    assert 0 < summary["time_to_first_result_s"] < summary["wall_seconds"]
    timeline = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert timeline[-1]["items"] == 1797 and timeline[-1]["failed"] == 0
    assert [t["items"] for t in timeline] == sorted(t["items"] for t in timeline)
    assert max(t["pilots_ready"] for t in timeline) == 1

    records = read_results(out)
    assert sorted(r["id"] for r in records) == sorted(p.relative_to(digits_data / "images").as_posix()
                                                       for p in (digits_data / "images").glob("*/*.png"))
    heldout = set((digits_data / "heldout.txt").read_text().split())
    held = [r for r in records if r["id"] in heldout]
    assert len(held) == 450
    assert sum(r["correct"] for r in held) / len(held) >= 0.95


def test_interrupted_campaign_resumes_without_duplicates(tmp_path, digits_data):
    out = tmp_path / "run"
    # small chunks, so that the campaign is still running when its first results are written
    workflow = copy_workflow(tmp_path / "wf", WORKFLOW.read_text().replace("chunk_size: auto", "chunk_size: 32"),
                             digits_data / "images")
    driver = subprocess.Popen([sys.executable, "-m", "dgaas_flow", "run", str(workflow), "--out", str(out),
                               "--progress", "quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and results.stat().st_size > 0):
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    first = len(read_results(out))
    assert 0 < first < 1797
    with open(results, "a") as f:
        f.write('{"id": "9/1796.png", "ok": tr')  # a line torn by a crash

    rerun = run_cli("run", workflow, "--out", out, "--progress", "quiet")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items_resumed"] == first and summary["items_this_run"] == 1797 - first
    counts = Counter(r["id"] for r in read_results(out))
    assert len(counts) == 1797 and set(counts.values()) == {1}


def test_bad_input_files_become_recorded_errors(tmp_path, digits_data):
    images = tmp_path / "images"
    for label in ("1", "7"):
        (images / label).mkdir(parents=True)
        for src in sorted((digits_data / "images" / label).glob("*.png"))[:10]:
            shutil.copy(src, images / label / src.name)
    (images / "7" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    from PIL import Image

    Image.new("L", (9, 9)).save(images / "1" / "wrong-shape.png")
    good = (images / "1").glob("*.png").__next__().read_bytes()
    (images / "1" / "truncated.png").write_bytes(good[: len(good) // 2])
    text = WORKFLOW.read_text().replace("provider: local", "provider: {kind: local, workers_per_node: 1}")
    wf = load_workflow(copy_workflow(tmp_path / "wf", text, images))
    summary = run_campaign(wf, out=tmp_path / "run", progress="quiet")

    records = {r["id"]: r for r in read_results(tmp_path / "run")}
    assert len(records) == 23 and summary["items_failed"] == 3 and summary["items_ok"] == 20
    assert records["7/corrupt.png"]["error"].startswith("cannot read: ")
    assert "[9, 9], model input IMAGE takes [1, 8, 8]" in records["1/wrong-shape.png"]["error"]
    assert records["1/truncated.png"]["error"].startswith("cannot read: ")
    assert summary["failures_by_reason"] == {"cannot read": 2, "wrong shape": 1}  # grouped, not one per file
    assert summary["accuracy"] >= 0.9


def test_grpc_campaign_with_two_workers_sharing_one_pilot(tmp_path, digits_data):
    text = (WORKFLOW.read_text().replace("protocol: http", "protocol: grpc")
            .replace("chunk_size: auto", "chunk_size: 32"))
    wf = load_workflow(copy_workflow(tmp_path / "wf", text, digits_data / "images"))
    summary = run_campaign(wf, out=tmp_path / "run", limit=400, progress="quiet")
    assert (summary["items_total"], summary["items_ok"]) == (400, 400)
    (pilot,) = summary["pilots"]
    assert pilot["items"] == 400
    assert all(r["pilot"] == pilot["grpc"] for r in read_results(tmp_path / "run"))


def test_a_pilot_that_cannot_start_fails_the_campaign_fast_and_clearly(tmp_path, digits_data):
    repo = tmp_path / "wf" / "model_repository" / "digits"
    repo.mkdir(parents=True)
    (repo / "config.pbtxt").write_text('name: "digits"\nbackend: "python"\nmax_batch_size: "lots"\n')
    (tmp_path / "wf" / "data").mkdir()
    (tmp_path / "wf" / "data" / "images").symlink_to(digits_data / "images")
    (tmp_path / "wf" / "workflow.yaml").write_text(WORKFLOW.read_text())
    # a config.pbtxt that does not parse is the workflow's mistake, found before any pilot starts
    result = run_cli("run", tmp_path / "wf" / "workflow.yaml", "--out", tmp_path / "run", "--progress", "quiet")
    assert result.returncode == 2 and "Couldn't parse integer" in result.stderr and not (tmp_path / "run").exists()
    # one that parses but whose model the server cannot load (no version folder) fails the pilot
    (repo / "config.pbtxt").write_text((WORKFLOW.parent / "model_repository" / "digits" / "config.pbtxt").read_text())
    started = time.monotonic()
    result = run_cli("run", tmp_path / "wf" / "workflow.yaml", "--out", tmp_path / "run", "--progress", "quiet")
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 90
    assert "every pilot failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_server_binary_fails_the_campaign_fast(tmp_path, digits_data):
    text = WORKFLOW.read_text() + "triton:\n  binary: /opt/nowhere/tritonserver\n"
    path = copy_workflow(tmp_path / "wf", text, digits_data / "images")
    result = run_cli("run", path, "--out", tmp_path / "run", "--progress", "quiet")
    assert result.returncode == 3, result.stderr
    assert "every pilot failed" in result.stderr
    assert "triton.binary: /opt/nowhere/tritonserver is not an executable file" in result.stderr
