"""Faults injected into real campaigns (real Triton, real Parsl workers on the local provider).
Each test ends with an exact check of results.jsonl: every input id exactly once, none missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from dgaas_flow.pilot.endpoint import read_registry
from tests.conftest import WORKFLOW, copy_workflow, stray_processes, wait_for
from tests.integration.conftest import FAULT_ROWS

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAST_RECOVERY = """
provider: {kind: local, workers_per_node: 2, heartbeat_threshold_s: 10, strategy_period_s: 0.5}
triton: {max_restarts: 1000, health_interval_s: 1, health_failures: 2}
client: {protocol: http, timeout_s: 3, retries: 8, backoff_s: 0.25}
"""


def fault_workflow(folder: Path, images: Path, chunk_size: int = 64) -> Path:
    text = WORKFLOW.read_text().split("provider:")[0]  # keep name and comments only
    text += FAST_RECOVERY + f"""
model: {{name: digits, repository: model_repository}}
inputs: {{files: "data/images/*/*.png", labels: parent_dir}}
chunk_size: {chunk_size}
task_retries: 3
"""
    return copy_workflow(folder, text, images)


def many_images(folder: Path, source: Path, count: int) -> Path:
    """`count` input files (links to the digit images, under their label folders)."""
    originals = sorted(source.glob("*/*.png"))
    for n in range(count):
        src = originals[n % len(originals)]
        dst = folder / src.parent.name / f"{n:06d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    return folder


def start_run(workflow: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dgaas_flow", "run", str(workflow), "--out", str(out),
                             "--progress", "log"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_results(out: Path, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if results_so_far(out) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} results after {timeout} s")


def results_so_far(out: Path) -> int:
    path = out / "results.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def ready_server_pid(out: Path) -> int | None:
    ready = [e for e in read_registry(out / "pilots") if e.state == "ready"]
    return ready[-1].pid if ready else None


def check_exactly_once(out: Path, expected: int, fault: str, injected: int) -> dict:
    ids = Counter(json.loads(line)["id"] for line in (out / "results.jsonl").open())
    summary = json.loads((out / "summary.json").read_text())
    lost, duplicated = expected - len(ids), sum(n - 1 for n in ids.values())
    FAULT_ROWS.append((fault, injected, expected, lost, duplicated, summary["items_failed"]))
    assert (lost, duplicated) == (0, 0)
    assert summary["items_total"] == expected and summary["items_ok"] + summary["items_failed"] == expected
    return summary


def test_server_sigkilled_every_few_seconds_loses_nothing(tmp_path, digits_data):
    images = many_images(tmp_path / "images", digits_data / "images", 20_000)
    out = tmp_path / "run"
    driver = start_run(fault_workflow(tmp_path / "wf", images, chunk_size=128), out)
    kills, done = [], threading.Event()

    def killer() -> None:
        """SIGKILL the serving server when 1k, 5k, 9k and 13k items are done (by progress, not by
        time, so a fast machine cannot finish first), each time a restarted one serves again."""
        for at in (1_000, 5_000, 9_000, 13_000):
            while not done.is_set():
                pid = ready_server_pid(out)
                if pid is not None and pid not in kills and results_so_far(out) >= at:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                    break
                done.wait(0.02)

    wait_results(out, 1)
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    _, err = driver.communicate(timeout=900)
    done.set()
    thread.join()
    assert driver.returncode == 0, err
    summary = check_exactly_once(out, 20_000, "tritonserver SIGKILL at 1k/5k/9k/13k done", len(kills))
    assert len(kills) == 4 and summary["items_failed"] == 0
    assert summary["restarts"] == 4


def digits_campaign_with_fault(tmp_path: Path, images: Path, fault: str, inject) -> dict:
    """The digits campaign, with `inject(run folder)` once 100 items are done; checked exactly."""
    out = tmp_path / "run"
    driver = start_run(fault_workflow(tmp_path / "wf", images, chunk_size=16), out)
    wait_results(out, 100)
    inject(out)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    return check_exactly_once(out, 1797, fault, 1)


def test_hung_server_is_detected_and_replaced(tmp_path, digits_data):
    summary = digits_campaign_with_fault(tmp_path, digits_data / "images", "tritonserver SIGSTOP (hung)",
                                         lambda out: os.kill(ready_server_pid(out), signal.SIGSTOP))
    assert summary["restarts"] >= 1 and summary["items_failed"] == 0


def kill_worker_pool(out: Path) -> None:
    commands = {p: " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])}
    (pool,) = [p for p, cmd in commands.items()
               if "process_worker_pool" in cmd and str(out) in cmd and "pilot wrap" not in cmd]
    pool.kill()


def started_for(out: Path) -> list[psutil.Process]:
    """Live processes a pilot of this run started its command with (DGAAS_ENDPOINT_FILE names the
    run's pilot folder): Parsl's worker pool, its workers and its multiprocessing manager."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and str(out) in proc.environ().get("DGAAS_ENDPOINT_FILE", ""):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_lost_worker_pool_is_replaced_by_a_new_block(tmp_path, digits_data):
    summary = digits_campaign_with_fault(tmp_path, digits_data / "images", "Parsl worker pool SIGKILL (block lost)",
                                         kill_worker_pool)
    assert summary["items_failed"] == 0
    assert len(summary["pilots"]) == 2  # the lost block's pilot stopped; a new block brought its own
    # the killed pool's orphans (Parsl's manager process) were stopped by its pilot, not left behind
    assert started_for(tmp_path / "run") == []


def test_killed_driver_leaves_nothing_behind_and_a_rerun_completes(tmp_path, digits_data):
    out = tmp_path / "run"
    workflow = fault_workflow(tmp_path / "wf", digits_data / "images", chunk_size=16)
    driver = start_run(workflow, out)
    wait_results(out, 200)
    driver.kill()
    driver.communicate()
    with open(out / "results.jsonl", "a") as f:
        f.write('{"id": "torn')  # as if the driver died in the middle of a line
    # the interchange dies with the driver; the worker pool misses its heartbeats and exits, and
    # the pilot stops its server: nothing of the killed run may survive
    wait_for(lambda: not [p for p in stray_processes() if str(out) in p or "interchange" in p], timeout=60,
             what="the killed run's processes to end")

    rerun = start_run(workflow, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    summary = check_exactly_once(out, 1797, "campaign driver SIGKILL + rerun", 1)
    assert summary["items_resumed"] >= 200 and summary["items_failed"] == 0


def test_sigterm_stops_the_campaign_and_everything_it_started(tmp_path, digits_data):
    out = tmp_path / "run"
    driver = start_run(fault_workflow(tmp_path / "wf", digits_data / "images", chunk_size=16), out)
    wait_results(out, 100)
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 143 and "SIGTERM: stopping blocks and pilots" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["items_ok"] >= 100
    assert all(p["state"] == "stopped" for p in summary["pilots"])
    assert not [p for p in stray_processes() if str(out) in p]


def test_a_second_sigint_exits_at_once_and_nothing_survives(tmp_path, digits_data):
    out = tmp_path / "run"
    driver = start_run(fault_workflow(tmp_path / "wf", digits_data / "images", chunk_size=16), out)
    wait_results(out, 100)
    driver.send_signal(signal.SIGINT)
    time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130 and time.monotonic() - started < 5, err
    # whatever the first signal had not stopped yet stops by itself: the interchange dies with the
    # driver, the worker pool misses its heartbeats, the pilot stops its server
    wait_for(lambda: not [p for p in stray_processes() if str(out) in p or "interchange" in p], timeout=90,
             what="the interrupted run's processes to end")
