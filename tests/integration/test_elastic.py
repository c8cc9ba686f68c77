"""Elastic pilots on the real single-node SLURM cluster (two fake GPUs, profile slurm-local):
fail-over between pilots, draining before a block's end, autoscaling on Triton's queue time.
Each campaign ends with an exact check of results.jsonl: every item once, none failed.

Each campaign is paced (tests.conftest.paced_workflow) so that blocks come, fail and go while it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from dgaas_flow.pilot.endpoint import Endpoint, read_registry
from tests.conftest import WORKFLOW, paced_workflow, wait_for
from tests.integration.test_faults import many_images, start_run
from tests.integration.test_slurm import PROFILE, slurm_cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.elastic, pytest.mark.usefixtures("slurm_cluster")]


def elastic_workflow(tmp_path: Path, images: Path, profile: str = "", workflow: str = "",
                     chunk_size: int = 2, pace_s: float = 0.01) -> Path:
    """The digits workflow on slurm-local over `images`, its profile changed by `profile` (YAML
    lines appended under provider:), the workflow by `workflow` (top-level YAML lines); each
    batch's preprocessing takes `pace_s`."""
    provider = tmp_path / "provider.yaml"
    provider.write_text(PROFILE.read_text() + profile)
    text = WORKFLOW.read_text().replace("provider: local", f"provider: {provider}")
    text = text.replace("chunk_size: auto", f"chunk_size: {chunk_size}")
    return paced_workflow(tmp_path / "wf", text + workflow, images, pace_s)


def results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.open()] if path.exists() else []


@contextmanager
def server_down(pilot: Endpoint) -> Iterator[None]:
    """The pilot's server killed while the pilot itself is stopped, so that it cannot restart it
    at once (a CPU Triton restarts within a retry's backoff; on a GPU a GPU reset or a big model's
    reload keeps it away for minutes); the pilot goes on, and restarts it, when the `with` ends."""
    os.kill(pilot.supervisor_pid, signal.SIGSTOP)
    try:
        os.kill(pilot.pid, signal.SIGKILL)
        yield
    finally:
        os.kill(pilot.supervisor_pid, signal.SIGCONT)


def exactly_once(out: Path, expected: int) -> dict:
    ids = Counter(r["id"] for r in results(out))
    assert len(ids) == expected and set(ids.values()) == {1}, "items lost or duplicated"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items_failed"] == 0 and summary["items_ok"] == expected
    return summary


def test_a_pilot_whose_server_dies_sends_its_requests_to_the_other_meanwhile(tmp_path, digits_data):
    """Block 1's server is down for a while (`server_down`): the tasks of block 1 send their
    requests to block 0's pilot meanwhile, instead of failing or waiting; once the pilot restarts
    its server the campaign ends with every item once."""
    images = many_images(tmp_path / "images", digits_data / "images", 6000)
    out = tmp_path / "run"
    driver = start_run(elastic_workflow(tmp_path, images), out)
    ready = wait_for(lambda: len(r := [e for e in read_registry(out / "pilots") if e.state == "ready"]) == 2
                     and {x["block"] for x in results(out)} == {"0", "1"} and r,
                     timeout=180, what="two ready pilots, each with a result")
    victim = next(e for e in ready if e.block == "1")
    survivor = next(e for e in ready if e.block == "0")
    moved = lambda: [r for r in results(out) if r["block"] == "1" and r["pilot"] == survivor.http_url]  # noqa: E731
    with server_down(victim):
        wait_for(moved, timeout=60, what="a request of block 1 answered by block 0's pilot")
    done_at_kill = len(results(out))
    _, err = driver.communicate(timeout=400)
    assert driver.returncode == 0, err
    assert done_at_kill < 6000, "the campaign ended before the server was killed; nothing was tested"
    exactly_once(out, 6000)
    restarted = next(e for e in read_registry(out / "pilots") if e.block == "1")
    assert restarted.restarts == 1, "the killed server was not restarted by its pilot"


def test_blocks_drain_before_their_walltime_and_the_campaign_loses_nothing(tmp_path, digits_data):
    """Blocks of one minute, draining 55 s before their end: each pilot goes `draining`, its pool
    takes no new task and finishes those it holds, the server stops, and replacement blocks take
    over; no item is lost, duplicated or failed."""

    images = many_images(tmp_path / "images", digits_data / "images", 6000)
    path = elastic_workflow(tmp_path, images, profile='  walltime: "00:01:00"\n  max_blocks: 2\n',
                            workflow="triton: {drain_s: 55}\n")
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
    # a drained block ends early, and the scheduler is asked again within status_poll_s: its
    # replacement starts before the drained block's walltime would have freed the slot
    first = min(drained, key=lambda e: e.draining_since)
    started = [datetime.fromisoformat(e.started_at).timestamp() for e in pilots]
    assert any(first.draining_since < t < first.ends_at for t in started), "no block replaced a drained one early"


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

    images = many_images(tmp_path / "images", digits_data / "images", 8000)
    wf = load_workflow(elastic_workflow(tmp_path, images, profile=AUTOSCALE,
                                        workflow="triton: {health_interval_s: 0.5}\n"))
    out = tmp_path / "run"
    with Session(wf, tmp_path / "session") as session:
        summary = run_campaign(wf, out=out, progress="log", session=session)
        decisions = lambda: [json.loads(line) for line in (session.dir / "autoscale.jsonl").open()]  # noqa: E731
        wait_for(lambda: any(d["action"] == "scale_in" for d in decisions()), timeout=120,
                   what="the idle block to be released")
        wait_for(lambda: session.executor().active_blocks() == 1, timeout=60, what="one block left")
    assert summary["items_failed"] == 0
    exactly_once(out, 8000)
    first = decisions()[0]
    assert (first["action"], first["blocks_before"], first["blocks_after"]) == ("scale_out", 1, 2)
    assert first["metric"] > 0.01
    assert {r["block"] for r in results(out)} == {"0", "1"}  # the added block's pilot took traffic
    assert any(d["action"] == "scale_out" for d in read_decisions(out / "timeline.jsonl"))
    report = subprocess.run([sys.executable, "-m", "dgaas_flow", "report", str(out)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "Autoscaler decisions" in (out / "report.html").read_text()
