"""Who the gateway trusts, without servers: collector ads by their authenticated identity, tokens
by their lifetime, and the gateway's settings refusing an open collector by default."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from dgaas_flow.gateway import tokens
from dgaas_flow.gateway.bearer import TokenError
from dgaas_flow.gateway.gateway import GatewaySettings, redact
from dgaas_flow.gateway.targets import COLLECTOR_PROJECTION, CollectorSource, collect

pytestmark = pytest.mark.security
ADS = [
    {"Name": "slot1@glidein-1", "TRITON_ADDRESS": "10.1.0.1:8000", "AuthenticatedIdentity": "pilot@pool.example"},
    {"Name": "slot1@glidein-2", "TRITON_ADDRESS": "10.1.0.2:8000", "AuthenticatedIdentity": "pilot@site2.example"},
    {"Name": "slot1@evil", "TRITON_ADDRESS": "10.6.6.6:8000", "AuthenticatedIdentity": "mallory@pool.example"},
    {"Name": "slot1@anonymous", "TRITON_ADDRESS": "10.6.6.7:8000"},
]


def query(pool, constraint):
    return ADS


def test_an_untrusted_collector_ad_is_not_a_target():
    assert "AuthenticatedIdentity" in COLLECTOR_PROJECTION
    source = CollectorSource(query=query, identities=("pilot@pool.example",))
    assert [t.http for t in collect([source])] == [("10.1.0.1", 8000)]
    assert source.untrusted == ["slot1@glidein-2 (pilot@site2.example)", "slot1@evil (mallory@pool.example)",
                                "slot1@anonymous (no identity)"]
    patterns = CollectorSource(query=query, identities=("pilot@*",))
    assert [t.http[0] for t in collect([patterns])] == ["10.1.0.1", "10.1.0.2"]
    assert collect([CollectorSource(query=query)]) == []  # no identity given: nothing is trusted
    assert len(collect([CollectorSource(query=query, any_identity=True)])) == 4


def test_a_collector_gateway_must_say_whom_it_trusts(keys):
    with pytest.raises(ValueError, match="collector_identities"):
        GatewaySettings(jwks=keys["jwks"], collector=True)
    assert GatewaySettings(jwks=keys["jwks"], collector=True, collector_identities=["pilot@pool.example"])


def test_token_issue_refuses_a_lifetime_above_the_maximum(keys):
    with pytest.raises(TokenError, match="longer than the maximum"):
        tokens.issue_token(keys["private"], sub="alice", lifetime="2d")
    assert tokens.issue_token(keys["private"], sub="alice", lifetime="2d", max_lifetime="7d")


def test_verify_refuses_tokens_without_exp_or_living_too_long(keys):
    key = tokens.load_private_key(keys["private"])
    now = int(time.time())
    claims = {"iss": tokens.DEFAULT_ISSUER, "aud": tokens.DEFAULT_AUDIENCE, "sub": "alice", "scope": "triton.infer",
              "iat": now, "nbf": now, "jti": "1"}
    forever = jwt.encode(claims, key, algorithm="ES256")
    with pytest.raises(TokenError, match="exp"):
        tokens.verify_token(forever, keys["jwks"])
    long_lived = jwt.encode({**claims, "exp": now + 10 * 86400}, key, algorithm="ES256")
    with pytest.raises(TokenError, match="longer than the maximum"):
        tokens.verify_token(long_lived, keys["jwks"])


def test_log_lines_lose_tokens_and_pilot_secrets(keys):
    token = tokens.issue_token(keys["private"], sub="alice")
    secret = "0123456789abcdef" * 2
    lines = [f"'authorization', 'Bearer {token}'", f"Parse Jwt {token}", f"'dgaas-pilot-key', '{secret}'",
             f"'triton-grpc-protocol-dgaas-pilot-key', '{secret}'", f"string_value: \"{secret}\""]
    for line in lines:
        cleaned = redact(line)
        assert token not in cleaned and secret not in cleaned and "[redacted]" in cleaned, cleaned
    assert redact("cluster 'triton_http' match for URL '/v2/models/digits/infer'") == \
        "cluster 'triton_http' match for URL '/v2/models/digits/infer'"


def test_key_files_are_read_only_by_the_gateway_that_may(tmp_path: Path):
    from dgaas_flow.pilot.endpoint import key_file, read_key

    endpoint = tmp_path / "dgaas-node-1.json"
    assert key_file(endpoint) == tmp_path / "dgaas-node-1.key"
    assert read_key(key_file(endpoint)) is None  # no file: no secret, admin calls to that pilot refused
