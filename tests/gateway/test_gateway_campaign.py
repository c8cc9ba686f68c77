"""Campaigns through the gateway: CPU-only blocks (local provider, no pilot of their own) reach two
real pilots through a real Envoy with a token; one pilot stops mid-campaign."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import WORKFLOW, copy_workflow, run_cli, wait_for
from tests.gateway.test_gateway import Servers, successes, two_pilots_and_a_gateway
from tests.integration.test_faults import many_images

pytestmark = [pytest.mark.integration, pytest.mark.gateway]


@pytest.fixture
def two_pilots_behind_a_gateway(tmp_path, digits_data):
    with two_pilots_and_a_gateway(tmp_path / "servers") as servers:
        yield servers


def gateway_workflow(tmp_path: Path, servers: Servers, images: Path, chunk_size: int = 128) -> Path:
    token = tmp_path / "token"
    token.write_text(servers.token(scope="triton.infer"))
    address = servers.gateway.state.http_url.split("://", 1)[1]
    text = (WORKFLOW.read_text().replace("chunk_size: auto", f"chunk_size: {chunk_size}")
            .replace("  retries: 3\n", f"  retries: 5\n  token_file: {token}\n")
            + f"server:\n  gateway: {address}\n")
    return copy_workflow(tmp_path / "wf", text, images)


def test_campaign_through_the_gateway_uses_both_pilots(two_pilots_behind_a_gateway, tmp_path, digits_data):
    servers = two_pilots_behind_a_gateway
    before = [successes(p) for p in servers.pilots]
    out = tmp_path / "run"
    result = run_cli("run", gateway_workflow(tmp_path, servers, digits_data / "images", chunk_size=16), "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items_ok"], summary["items_failed"]) == (1797, 0) and summary["accuracy"] >= 0.95
    assert summary["pilots"] == [{"endpoint": servers.gateway.state.http_url, "items": 1797}]  # none of its own
    served = [successes(p) - b for p, b in zip(servers.pilots, before, strict=True)]
    assert all(n > 10 for n in served), served  # requests spread over both pilots


def test_a_pilot_stopping_mid_campaign_loses_nothing(two_pilots_behind_a_gateway, tmp_path, digits_data):
    servers = two_pilots_behind_a_gateway
    out = tmp_path / "run"
    results = out / "results.jsonl"
    stopped_at: list[int] = []  # results on disk when the pilot's server was told to stop

    def stop_a_pilot_mid_campaign() -> None:
        wait_for(lambda: results.exists() and results.stat().st_size > 0, timeout=120, what="first results")
        stopped_at.append(len(results.read_text().splitlines()))
        servers.pilots[0].stop()  # SIGTERM: the server refuses new requests at once, exits in seconds

    stopper = threading.Thread(target=stop_a_pilot_mid_campaign)
    stopper.start()
    images = many_images(tmp_path / "images", digits_data / "images", 5000)
    result = run_cli("run", gateway_workflow(tmp_path, servers, images, chunk_size=8), "--out", out)
    stopper.join()
    assert result.returncode == 0, result.stderr
    assert stopped_at and stopped_at[0] < 5000, "the pilot was not stopped while the campaign ran"
    assert servers.pilots[0].endpoint.state == "stopped"
    counts = Counter(json.loads(line)["id"] for line in results.open())
    assert len(counts) == 5000 and set(counts.values()) == {1}
    assert json.loads((out / "summary.json").read_text())["items_failed"] == 0
