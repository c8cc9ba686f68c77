"""A task finds its server in the documented order, and says everything it tried when it cannot."""

from __future__ import annotations

import threading

import pytest

from dgaas_flow.errors import PilotError
from dgaas_flow.pilot.discovery import DiscoveryError, resolve_endpoint
from dgaas_flow.pilot.endpoint import Endpoint, read_registry

ALL = {
    "DGAAS_TRITON_URL": "http://node1:8000",
    "DGAAS_TRITON_GRPC_URL": "grpc://node1:8001",
    "TRITON_ADDRESS": "glidein:9000",
}


def test_explicit_url_wins_over_everything():
    e = resolve_endpoint("grpc://far:1", ALL)
    assert e.grpc_url == "grpc://far:1" and e.http_url is None


def test_pilot_environment_comes_before_the_glidein_attribute():
    e = resolve_endpoint(None, ALL)
    assert (e.http_url, e.grpc_url) == ("http://node1:8000", "grpc://node1:8001")


def test_workers_started_with_their_pilot_wait_for_it_and_follow_its_file(tmp_path):
    """`pilot wrap` starts the workers while the server starts: a task waits until the endpoint
    file says ready, and takes the URL from the file (new ports if one was taken meanwhile)."""
    path = tmp_path / "ep.json"
    Endpoint(http_url="http://127.0.0.1:1", state="starting").write(path)
    env = {"DGAAS_TRITON_URL": "http://127.0.0.1:1", "DGAAS_ENDPOINT_FILE": str(path)}
    later = threading.Timer(0.3, lambda: Endpoint(http_url="http://127.0.0.1:2", state="ready").write(path))
    later.start()
    assert resolve_endpoint(None, env, ready_timeout_s=30).http_url == "http://127.0.0.1:2"
    Endpoint(http_url="http://127.0.0.1:2", state="failed", error="no GPU").write(path)
    with pytest.raises(PilotError, match="failed: no GPU"):
        resolve_endpoint(None, env)
    Endpoint(http_url="http://127.0.0.1:2", state="starting").write(path)
    with pytest.raises(PilotError, match="not ready within"):
        resolve_endpoint(None, env, ready_timeout_s=0.2)


def test_glidein_triton_address_then_endpoint_file(tmp_path):
    e = resolve_endpoint(None, {"TRITON_ADDRESS": "10.0.0.5:9000", "TRITON_GRPC_ADDRESS": "10.0.0.5:9001"})
    assert (e.http_url, e.grpc_url) == ("http://10.0.0.5:9000", "grpc://10.0.0.5:9001")
    path = tmp_path / "ep.json"
    Endpoint(http_url="http://h:1", grpc_url="grpc://h:2", state="ready").write(path)
    assert resolve_endpoint(None, {"DGAAS_ENDPOINT_FILE": str(path)}).grpc_url == "grpc://h:2"


def test_nothing_found_lists_every_place_tried(tmp_path):
    with pytest.raises(DiscoveryError) as err:
        resolve_endpoint(None, {"DGAAS_ENDPOINT_FILE": str(tmp_path / "gone.json")})
    text = str(err.value)
    for tried in ("server.url", "DGAAS_TRITON_URL", "TRITON_ADDRESS", "gone.json: unreadable"):
        assert tried in text
    assert text.index("server.url") < text.index("DGAAS_TRITON_URL") < text.index("TRITON_ADDRESS")


def test_endpoint_file_round_trip_and_registry_order(tmp_path):
    first = Endpoint(http_url="http://a:1", started_at="2026-01-01T00:00:01+00:00", gpus=["0"])
    second = Endpoint(http_url="http://b:1", started_at="2026-01-01T00:00:02+00:00")
    second.write(tmp_path / "b.json")
    first.write(tmp_path / "a.json")
    (tmp_path / "broken.json").write_text("{")
    assert [e.http_url for e in read_registry(tmp_path)] == ["http://a:1", "http://b:1"]
    env = first.worker_env(tmp_path / "a.json")
    assert env["DGAAS_TRITON_URL"] == "http://a:1" and env["CUDA_VISIBLE_DEVICES"] == ""
