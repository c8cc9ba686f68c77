"""Attacks on a real gateway (Envoy) in front of a real pilot, each as docs/security.md lists it:
the admin API is off the network, logs hold no token, oversized bodies and unfinished headers are
refused before Triton, tokens need exp, quotas are per subject, refusals say why in Triton's
shape, and an admin token's unload makes the pilot non-serving until it has recovered."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from dgaas_flow.gateway import Gateway, GatewaySettings, auth_headers, issue_token, tokens
from dgaas_flow.gateway.gateway import admin_get
from dgaas_flow.pilot.endpoint import Endpoint
from dgaas_flow.pilot.settings import PilotConfig, TritonSettings
from dgaas_flow.pilot.supervisor import Pilot
from tests.conftest import DIGITS, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.gateway, pytest.mark.security]
HEADERS_TIMEOUT_S = 1.0
IDLE_CONNECTIONS = 300


class Setup:
    def __init__(self, root: Path, pilot: Pilot, gateway: Gateway, keys: dict[str, Path]):
        self.root, self.pilot, self.gateway, self.keys = root, pilot, gateway, keys

    def token(self, sub: str = "alice", **kw) -> str:
        return issue_token(self.keys["private"], sub=sub, **kw)

    def raw(self, method: str, path: str, token: str | None = None, body: bytes | None = None):
        request = urllib.request.Request(self.gateway.state.http_url + path, method=method, data=body)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_data) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("attacks")
    keys = tokens.generate_keypair(root / "keys")
    config = PilotConfig(repository=DIGITS / "model_repository", models=["digits"], registry=root / "pilots",
                         log_dir=root / "logs", triton=TritonSettings(health_interval_s=1.0))
    with Pilot(config) as pilot:
        settings = GatewaySettings(jwks=keys["jwks"], registry=[root / "pilots"], sync_interval_s=0.3,
                                   health_interval_s=0.5, health_timeout_s=0.5, rate_limit_rps=5,
                                   rate_limit_burst=5, max_request_bytes=4 << 20,
                                   request_headers_timeout_s=HEADERS_TIMEOUT_S)
        with Gateway(settings, root / "gateway") as gateway:
            wait_for(lambda: sum(h["healthy"] for h in gateway.upstream_health()) == 2, what="2 healthy upstreams")
            yield Setup(root, pilot, gateway, keys)


def requests_seen(pilot: Pilot) -> int:
    """Every request Triton counted for the digits model, from the pilot's metrics port."""
    with urllib.request.urlopen(pilot.endpoint.metrics_url, timeout=5) as r:
        text = r.read().decode()
    return sum(int(float(v)) for v in re.findall(
        r'^nv_inference_(?:request_success|request_failure)\{[^}]*model="digits"[^}]*\} (\S+)', text, re.M))


def wait_quota(seconds: float = 1.2) -> None:
    time.sleep(seconds)  # the subjects' buckets refill each second


def test_no_admin_port_on_the_network_and_the_admin_socket_is_the_owners(setup):
    gw = setup.gateway
    envoy = psutil.Process(gw.envoy_pid)
    tcp = {c.laddr.port for c in envoy.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert tcp == {int(gw.state.http_url.rsplit(":", 1)[1])}, tcp
    path = Path(gw.state.admin_socket)
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert admin_get(path, "/ready") == (200, b"LIVE\n")
    for name in ("envoy.log", "gateway.log", "envoy.yaml", "gateway.json"):
        assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name


def test_trace_logging_leaks_no_token_and_no_pilot_secret(setup):
    gw = setup.gateway
    token = setup.token(scope="triton.infer triton.admin")
    assert admin_get(gw.state.admin_socket, "/logging?level=trace", method="POST")[0] == 200
    try:
        assert setup.raw("GET", "/v2/models/digits/ready", token)[0] == 200
        assert setup.raw("POST", "/v2/repository/index", token, b"{}")[0] == 200  # carries the secret upstream
        client = grpcclient.InferenceServerClient(gw.address)
        assert client.is_model_ready("digits", headers=auth_headers(token))
        client.close()
        wait_quota()
    finally:
        assert admin_get(gw.state.admin_socket, "/logging?level=info", method="POST")[0] == 200
    log = Path(gw.envoy_log).read_text()
    assert "[trace]" in log and "[redacted]" in log
    assert token not in log and token.split(".")[1] not in log
    assert setup.pilot.key_file.read_text().strip() not in log


def test_a_200_mb_body_gets_413_at_the_gateway_and_never_reaches_triton(setup):
    before = requests_seen(setup.pilot)
    token = setup.token(sub="big")
    host, port = setup.gateway.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {200 << 20}\r\n\r\n".encode())
        chunk = b"0" * (1 << 20)
        try:
            for _ in range(200):
                s.sendall(chunk)
        except OSError:
            pass  # the gateway answered and closed before the whole body was sent
        reply = s.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert json.loads(reply.split("\r\n\r\n", 1)[1].splitlines()[0]) == {"error": "Payload Too Large"}
    client = grpcclient.InferenceServerClient(setup.gateway.address)
    big = np.zeros((80_000, 1, 8, 8), np.uint8)  # 5 MB, over this gateway's 4 MB
    tensor = grpcclient.InferInput("IMAGE", list(big.shape), "UINT8")
    tensor.set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as err:
        client.infer("digits", [tensor], headers=auth_headers(token))
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    client.close()
    time.sleep(1.5)  # a health probe's metrics reading, had anything arrived
    assert requests_seen(setup.pilot) == before
    wait_quota()


def test_unfinished_headers_are_cut_off_and_valid_requests_still_answered(setup):
    host, port = setup.gateway.address.rsplit(":", 1)
    token = setup.token(sub="patient")
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            idle.append(s)
        assert setup.raw("GET", "/v2/health/ready", token)[0] == 200
        first = idle[0]
        first.settimeout(HEADERS_TIMEOUT_S + 10)
        started = time.monotonic()
        reply = first.recv(65536)  # the gateway's 408, then the end of the connection
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        while reply:
            reply = first.recv(65536)
        assert time.monotonic() - started < HEADERS_TIMEOUT_S + 10
    finally:
        for s in idle:
            s.close()
    wait_quota()


def test_a_token_without_exp_gets_401(setup):
    key = tokens.load_private_key(setup.keys["private"])
    now = int(time.time())
    claims = {"iss": tokens.DEFAULT_ISSUER, "aud": tokens.DEFAULT_AUDIENCE, "sub": "alice", "scope": "triton.infer",
              "iat": now, "nbf": now}
    kid = {"kid": tokens.public_jwk(key.public_key())["kid"]}

    def signed(**extra) -> str:
        return jwt.encode({**claims, **extra}, key, algorithm="ES256", headers=kid)

    assert setup.raw("GET", "/v2/health/ready", signed(exp=now + 600))[0] == 200  # the same token with exp
    status, body, _ = setup.raw("GET", "/v2/health/ready", signed())
    assert status == 401 and json.loads(body)["error"]
    assert setup.raw("GET", "/v2/health/ready", signed(exp=now + 30 * 86400))[0] == 401  # lives too long
    wait_quota()


def test_one_subject_over_its_quota_gets_429_while_another_is_served(setup):
    wait_quota()
    alice, bob = setup.token("alice"), setup.token("bob")
    codes = [setup.raw("GET", "/v2/health/live", alice) for _ in range(12)]
    limited = [c for c in codes if c[0] == 429]
    assert limited and codes[0][0] == 200, [c[0] for c in codes]
    status, body, headers = limited[0]
    assert headers["retry-after"] == "1" and json.loads(body) == {"error": "local_rate_limited"}
    assert [setup.raw("GET", "/v2/health/live", bob)[0] for _ in range(3)] == [200] * 3
    client = grpcclient.InferenceServerClient(setup.gateway.address)
    with pytest.raises(InferenceServerException) as err:
        for _ in range(12):
            client.is_server_live(headers=auth_headers(alice))
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    client.close()
    assert setup.raw("GET", "/v2/health/live", bob)[0] == 200
    assert setup.raw("GET", "/v2/health/live")[0] == 401  # unauthenticated: refused first, no quota used
    wait_quota()


def test_refusals_say_why_in_tritons_error_shape(setup):
    client = httpclient.InferenceServerClient(setup.gateway.address)
    cases = {"401": None, "403": setup.token("carol", scope="compute.read")}
    for code, token in cases.items():
        with pytest.raises(InferenceServerException) as err:
            client.get_model_metadata("digits", headers={"authorization": f"Bearer {token}"} if token else {})
        assert err.value.status() == code and "Parse error" not in str(err.value), str(err.value)
        assert err.value.message() in ("Jwt is missing", "Jwt is not in the form of Header.Payload.Signature "
                                       "with two dots and 3 sections", "RBAC: access denied"), err.value.message()
    client.close()
    wait_quota()


def test_unload_by_an_admin_token_makes_the_pilot_non_serving_until_it_recovers(setup):
    gw, pilot = setup.gateway, setup.pilot
    admin = setup.token("operator", scope="triton.infer triton.admin")
    client = grpcclient.InferenceServerClient(gw.address)
    client.unload_model("digits", headers=auth_headers(admin))
    wait_for(lambda: Endpoint.read(pilot.endpoint_file).state == "restarting", what="the pilot not serving")
    wait_for(lambda: Endpoint.read(pilot.endpoint_file).state == "ready", what="the pilot serving again")
    wait_for(lambda: len(gw.targets) == 1 and any(h["healthy"] for h in gw.upstream_health()),
             what="the pilot a target again")
    assert client.is_model_ready("digits", headers=auth_headers(setup.token("dave")))
    client.close()
    assert os.path.exists(pilot.key_file)
