"""`client.fallback: local` (CMS SONIC's last resort), on the local provider with the real Triton.

The node's pilot cannot serve for a while (`server_down`) and there is no other pilot: a task starts a
Triton server on its own node from the session's pilot settings, the node's other worker uses the
same one, and the campaign ends with every item once, none failed; the fallback stops with the
worker that started it."""

from __future__ import annotations

import socket

import pytest

from dgaas_flow.pilot.endpoint import read_registry
from dgaas_flow.pilot.fallback import FALLBACK_BLOCK
from tests.conftest import WORKFLOW, paced_workflow, wait_for
from tests.integration.test_elastic import exactly_once, results, server_down
from tests.integration.test_faults import many_images, start_run

pytestmark = pytest.mark.integration


def test_with_no_pilot_serving_tasks_start_one_local_fallback_server_and_lose_nothing(tmp_path, digits_data):
    text = WORKFLOW.read_text().replace("chunk_size: auto", "chunk_size: 2").replace(
        "  retries: 3\n", "  retries: 3\n  fallback: local\n")
    assert "fallback: local" in text
    images = many_images(tmp_path / "images", digits_data / "images", 6000)
    out = tmp_path / "run"
    driver = start_run(paced_workflow(tmp_path / "wf", text, images), out)
    (pilot,) = wait_for(lambda: results(out) and [e for e in read_registry(out / "pilots") if e.state == "ready"],
                        timeout=120, what="the pilot ready and a first result")
    elsewhere = lambda: [r for r in results(out) if r["pilot"] != pilot.http_url]  # noqa: E731
    with server_down(pilot):
        wait_for(elsewhere, timeout=120, what="results from a fallback server")
    _, err = driver.communicate(timeout=400)
    assert driver.returncode == 0, err
    exactly_once(out, 6000)

    fallbacks = [e for e in read_registry(out / "pilots") if e.block == FALLBACK_BLOCK]
    assert len(fallbacks) == 1, "one fallback server for the node, shared by its workers"
    (fallback,) = fallbacks
    assert fallback.host == socket.gethostname() and fallback.http_url.startswith("http://127.0.0.1:")
    assert {r["pilot"] for r in elsewhere()} == {fallback.http_url}
    wait_for(lambda: read_registry(out / "pilots") and next(
        e for e in read_registry(out / "pilots") if e.block == FALLBACK_BLOCK).state == "stopped",
        timeout=30, what="the fallback server to stop with its worker")
