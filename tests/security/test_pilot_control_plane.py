"""Attacks on a real pilot from another process of the node, which reaches its loopback ports
without any credential (docs/security.md): its control plane refuses them, and a model that goes
away anyway makes the pilot non-serving until it is back."""

from __future__ import annotations

import base64
import glob
import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from dgaas_flow.pilot.endpoint import Endpoint
from dgaas_flow.pilot.launch import SECRET_HEADER
from dgaas_flow.pilot.settings import PilotConfig, TritonSettings
from dgaas_flow.pilot.supervisor import BACKEND_SHM, Pilot
from dgaas_flow.processes import shared_memory
from tests.conftest import DIGITS, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security]
EVIL = '''
import pathlib
class TritonPythonModel:
    def initialize(self, args):
        pathlib.Path({marker!r}).write_text("code ran as the pilot's user")
'''


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def pilot(tmp_path_factory, digits_data):
    root = tmp_path_factory.mktemp("closed-pilot")
    config = PilotConfig(repository=DIGITS / "model_repository", models=["digits"], registry=root / "pilots",
                         log_dir=root / "logs", triton=TritonSettings(health_interval_s=1.0))
    with Pilot(config) as p:
        yield p


def test_uploaded_code_and_unload_are_refused_and_the_model_stays_ready(pilot, tmp_path):
    http = pilot.endpoint.http_url
    marker = tmp_path / "pwned"
    upload = {"parameters": {
        "config": json.dumps({"name": "evil", "backend": "python", "max_batch_size": 0, "input": [], "output": []}),
        "file:1/model.py": base64.b64encode(EVIL.format(marker=str(marker)).encode()).decode(),
    }}
    status, body = call(f"{http}/v2/repository/models/evil/load", "POST", json.dumps(upload).encode())
    assert status == 403 and "restricted" in body.lower(), (status, body)
    assert call(f"{http}/v2/repository/models/digits/unload", "POST", b"{}")[0] == 403
    assert not marker.exists()
    assert call(f"{http}/v2/models/digits/ready")[0] == 200
    grpc = grpcclient.InferenceServerClient(pilot.endpoint.grpc_url.removeprefix("grpc://"))
    with pytest.raises(InferenceServerException) as err:
        grpc.unload_model("digits")
    assert "restricted" in str(err.value).lower() or err.value.status() == "StatusCode.UNAVAILABLE", err.value
    assert grpc.is_model_ready("digits")
    grpc.close()
    assert Endpoint.read(pilot.endpoint_file).state == "ready"


@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/repository/index"), ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/systemsharedmemory/region/x/register"), ("GET", "/v2/models/digits/stats"),
    ("GET", "/v2/trace/setting"), ("POST", "/v2/logging"),
])
def test_the_control_plane_needs_the_pilots_secret(pilot, method, path):
    url = pilot.endpoint.http_url + path
    assert call(url, method, b"{}" if method == "POST" else None)[0] == 403
    assert call(url, method, b"{}" if method == "POST" else None, {SECRET_HEADER: "guess"})[0] == 403


def test_the_secret_opens_it_and_inference_health_and_metrics_stay_open(pilot):
    http = pilot.endpoint.http_url
    owner = {SECRET_HEADER: pilot.key_file.read_text().strip()}
    status, body = call(f"{http}/v2/repository/index", "POST", b"{}", owner)
    assert status == 200 and [m["name"] for m in json.loads(body)] == ["digits"]
    assert call(f"{http}/v2/models/digits/stats", headers=owner)[0] == 200
    assert call(f"{http}/v2/health/ready")[0] == 200 and call(f"{http}/v2/models/digits/config")[0] == 200
    assert call(pilot.endpoint.metrics_url)[0] == 200


def test_the_secret_and_the_pilots_files_are_its_owners_alone(pilot):
    mode = stat.S_IMODE(os.stat(pilot.key_file).st_mode)
    assert mode == 0o600 and pilot.key_file.parent == pilot.endpoint_file.parent
    secret = pilot.key_file.read_text().strip()
    assert len(secret) >= 32 and secret not in pilot.endpoint_file.read_text()
    assert stat.S_IMODE(os.stat(pilot.log_file).st_mode) == 0o600
    regions = shared_memory(pilot.server_pid, BACKEND_SHM)
    assert regions and all(stat.S_IMODE(os.stat(r).st_mode) == 0o600 for r in regions), \
        {r: oct(os.stat(r).st_mode) for r in glob.glob(f"/dev/shm/{BACKEND_SHM}*")}


def test_a_model_that_goes_away_makes_the_pilot_non_serving_until_it_is_back(pilot):
    owner = {SECRET_HEADER: pilot.key_file.read_text().strip()}
    server = pilot.server_pid
    assert call(f"{pilot.endpoint.http_url}/v2/repository/models/digits/unload", "POST", b"{}", owner)[0] == 200
    wait_for(lambda: Endpoint.read(pilot.endpoint_file).state == "restarting", what="the pilot not serving")
    assert not Endpoint.read(pilot.endpoint_file).serving()
    wait_for(lambda: Endpoint.read(pilot.endpoint_file).state == "ready", what="the model loaded again")
    assert call(f"{pilot.endpoint.http_url}/v2/models/digits/ready")[0] == 200
    assert pilot.server_pid == server  # loaded again, not restarted
    assert "loading it again" in Path(pilot.log_file).read_text()


def test_a_stopped_pilot_removes_its_secret(tmp_path, digits_data):
    config = PilotConfig(repository=DIGITS / "model_repository", models=["digits"], registry=tmp_path / "pilots",
                         log_dir=tmp_path / "logs")
    with Pilot(config) as p:
        assert p.key_file.exists()
    assert not p.key_file.exists()
