"""Elastic pilots on the real single-node SLURM cluster (two fake GPUs, profile slurm-local):
fail-over between pilots, draining before a block's end, autoscaling on Triton's queue time.
Each campaign ends with an exact check of results.jsonl: every item once, none failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dgaas_flow.pilot.endpoint import read_registry
from tests.conftest import WORKFLOW, copy_workflow
from tests.integration.test_slurm import PROFILE, slurm_cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.elastic, pytest.mark.usefixtures("slurm_cluster")]


def elastic_workflow(tmp_path: Path, digits_data: Path, profile: str = "", workflow: str = "",
                     chunk_size: int = 8, images: Path | None = None) -> Path:
    """The digits workflow on slurm-local, its profile changed by `profile` (YAML lines appended
    under provider:), the workflow by `workflow` (top-level YAML lines)."""
    provider = tmp_path / "provider.yaml"
    provider.write_text(PROFILE.read_text() + profile)
    text = WORKFLOW.read_text().replace("provider: local", f"provider: {provider}")
    text = text.replace("chunk_size: 128", f"chunk_size: {chunk_size}") + workflow
    return copy_workflow(tmp_path / "wf", text, images or digits_data / "images")


def start_run(path: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dgaas_flow", "run", str(path), "--out", str(out),
                             "--progress", "log"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(predicate, timeout: float = 180, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.open()] if path.exists() else []


def exactly_once(out: Path, expected: int = 1797) -> dict:
    ids = Counter(r["id"] for r in results(out))
    assert len(ids) == expected and set(ids.values()) == {1}, "items lost or duplicated"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items_failed"] == 0 and summary["items_ok"] == expected
    return summary


def test_killing_one_of_two_pilots_moves_its_requests_to_the_other(tmp_path, digits_data):
    out = tmp_path / "run"
    driver = start_run(elastic_workflow(tmp_path, digits_data), out)
    ready = wait_until(lambda: len(r := [e for e in read_registry(out / "pilots") if e.state == "ready"]) == 2
                       and len(results(out)) > 0 and r, what="two ready pilots and a first result")
    victim = next(e for e in ready if e.block == "1")
    survivor = next(e for e in ready if e.block == "0")
    os.kill(victim.supervisor_pid, signal.SIGKILL)  # the pilot (and with it its server) is gone
    done_at_kill = len(results(out))
    _, err = driver.communicate(timeout=400)
    assert driver.returncode == 0, err
    assert done_at_kill < 1797, "the campaign ended before the pilot was killed; nothing was tested"
    exactly_once(out)
    moved = [r for r in results(out) if r["block"] == "1" and r["pilot"] == survivor.http_url]
    assert moved, "no request of block 1 went to the other pilot"


def test_blocks_drain_before_their_walltime_and_the_campaign_loses_nothing(tmp_path, digits_data):
    """Blocks of one minute, draining 55 s before their end: each pilot goes `draining`, its pool
    takes no new task and finishes those it holds, the server stops, and replacement blocks take
    over; no item is lost, duplicated or failed."""
    from tests.integration.test_faults import many_images

    images = many_images(tmp_path / "images", digits_data / "images", 6000)
    path = elastic_workflow(tmp_path, digits_data, profile='  walltime: "00:01:00"\n  max_blocks: 2\n',
                            workflow="triton: {drain_s: 55}\n", images=images, chunk_size=2)
    out = tmp_path / "run"
    driver = start_run(path, out)
    _, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err
    exactly_once(out, 6000)
    pilots = read_registry(out / "pilots")
    drained = [e for e in pilots if e.draining_since is not None]
    assert drained, "no pilot drained: the campaign did not cross a block's end"
    assert all(e.ends_at and e.draining_since < e.ends_at for e in drained)
    assert all(e.state == "stopped" for e in drained)


AUTOSCALE = """  init_blocks: 1
  min_blocks: 1
  max_blocks: 2
  autoscale: {target: 0.01, window_s: 2, cooldown_s: 5, idle_s: 5, tick_s: 0.5}
"""


def test_queue_time_above_target_adds_a_block_and_idle_ones_are_released(tmp_path, digits_data):
    """One pilot under load keeps its queue time per execution above a (deliberately tiny) target:
    a second block starts within the window and its pilot takes traffic; once the load stops the
    idle block is released, down to min_blocks. The decisions are in timeline.jsonl and the report."""
    from dgaas_flow import load_workflow
    from dgaas_flow.campaign.fanout import run_campaign
    from dgaas_flow.campaign.session import Session
    from dgaas_flow.report.data import read_decisions
    from tests.integration.test_faults import many_images

    images = many_images(tmp_path / "images", digits_data / "images", 20000)
    wf = load_workflow(elastic_workflow(tmp_path, digits_data, profile=AUTOSCALE, images=images, chunk_size=2,
                                        workflow="triton: {health_interval_s: 0.5}\n"))
    out = tmp_path / "run"
    with Session(wf, tmp_path / "session") as session:
        summary = run_campaign(wf, out=out, progress="log", session=session)
        decisions = lambda: [json.loads(line) for line in (session.dir / "autoscale.jsonl").open()]  # noqa: E731
        wait_until(lambda: any(d["action"] == "scale_in" for d in decisions()), timeout=120,
                   what="the idle block to be released")
        wait_until(lambda: session.executor().active_blocks() == 1, timeout=60, what="one block left")
    assert summary["items_failed"] == 0
    exactly_once(out, 20000)
    first = decisions()[0]
    assert (first["action"], first["blocks_before"], first["blocks_after"]) == ("scale_out", 1, 2)
    assert first["metric"] > 0.01
    assert {r["block"] for r in results(out)} == {"0", "1"}  # the added block's pilot took traffic
    assert any(d["action"] == "scale_out" for d in read_decisions(out / "timeline.jsonl"))
    report = subprocess.run([sys.executable, "-m", "dgaas_flow", "report", str(out)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "Autoscaler decisions" in (out / "report.html").read_text()
