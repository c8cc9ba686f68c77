"""Tokens without any server: keys, issue/verify, expiry, scope, and bearer token discovery."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from dgaas_flow.gateway import tokens
from dgaas_flow.gateway.bearer import TokenError, auth_headers, find_token
from dgaas_flow.gateway.tokens import issue_token, verify_token
from tests.gateway.conftest import child_env


def test_keygen_writes_private_key_0600_public_pem_and_jwks(keys):
    assert stat.S_IMODE(os.stat(keys["private"]).st_mode) == 0o600
    assert b"PRIVATE KEY" in keys["private"].read_bytes()
    assert b"PUBLIC KEY" in keys["public"].read_bytes()
    (jwk,) = json.loads(keys["jwks"].read_text())["keys"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256" and jwk["kid"]
    assert "d" not in jwk  # nothing private in the JWKS
    with pytest.raises(TokenError, match="--force"):
        tokens.generate_keypair(keys["private"].parent)


def test_issued_token_is_scitoken_shaped_and_verifies_with_jwks_and_pems(keys):
    token = issue_token(keys["private"], sub="alice", scope="triton.infer", lifetime="3h")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == json.loads(keys["jwks"].read_text())["keys"][0]["kid"]
    for key_file in (keys["jwks"], keys["public"], keys["private"]):
        claims = verify_token(token, key_file)
        assert claims["sub"] == "alice" and claims["scope"] == "triton.infer"
        assert claims["iss"] == tokens.DEFAULT_ISSUER and claims["aud"] == tokens.DEFAULT_AUDIENCE
        assert claims["exp"] - claims["iat"] == 3 * 3600 and claims["nbf"] == claims["iat"]
        assert claims["jti"] and claims["ver"] == "scitoken:2.0"
    assert issue_token(keys["private"], sub="a") != issue_token(keys["private"], sub="a")  # fresh jti


def test_expired_other_key_wrong_audience_wrong_issuer_are_refused(keys, tmp_path):
    other = tokens.generate_keypair(tmp_path / "other")
    expired = issue_token(keys["private"], sub="a", lifetime=60, now=time.time() - 3600)
    with pytest.raises(TokenError, match="expired"):
        verify_token(expired, keys["jwks"])
    with pytest.raises(TokenError, match="another key"):
        verify_token(issue_token(other["private"], sub="a"), keys["jwks"])
    with pytest.raises(TokenError, match="(?i)audience"):
        verify_token(issue_token(keys["private"], sub="a", audience="elsewhere"), keys["jwks"])
    with pytest.raises(TokenError, match="(?i)issuer"):
        verify_token(issue_token(keys["private"], sub="a", issuer="https://evil"), keys["jwks"])
    with pytest.raises(TokenError):
        verify_token("not.a.token", keys["jwks"])
    not_yet = issue_token(keys["private"], sub="a", now=time.time() + 600)
    with pytest.raises(TokenError, match="(?i)not yet valid"):
        verify_token(not_yet, keys["jwks"])


def test_scope(keys):
    infer = issue_token(keys["private"], sub="a", scope="triton.infer")
    admin = issue_token(keys["private"], sub="a", scope=["triton.infer", "triton.admin"])
    assert verify_token(admin, keys["jwks"], require_scope="triton.admin")["scope"] == "triton.infer triton.admin"
    with pytest.raises(TokenError, match="lacks triton.admin"):
        verify_token(infer, keys["jwks"], require_scope="triton.admin")
    assert tokens.has_scope({"scope": "triton.admin"}, "triton.infer")  # admin may also infer
    assert not tokens.has_scope({"scope": "compute.read"}, "triton.infer")
    with pytest.raises(TokenError, match="at least one"):
        issue_token(keys["private"], sub="a", scope="")


@pytest.mark.parametrize("text, seconds", [("3h", 10800), ("90m", 5400), ("45s", 45), ("2d", 172800),
                                           ("3600", 3600), (120, 120), ("1.5h", 5400)])
def test_lifetime(text, seconds):
    assert tokens.parse_lifetime(text) == seconds


@pytest.mark.parametrize("text", ["3x", "", "-1h", "0"])
def test_bad_lifetime(text):
    with pytest.raises(TokenError):
        tokens.parse_lifetime(text)


# ------------------------------------------------------------------------------------ discovery


def test_discovery_order_explicit_then_dgaas_token_then_wlcg_steps(tmp_path):
    uid = 4242
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / f"bt_u{uid}").write_text("from-xdg\n")
    token_file = tmp_path / "tok"
    token_file.write_text("  from-file \n\t")
    env = {"DGAAS_TOKEN": "from-dgaas", "BEARER_TOKEN": "from-bearer", "BEARER_TOKEN_FILE": str(token_file),
           "XDG_RUNTIME_DIR": str(xdg)}
    assert find_token("explicit", env, uid) == "explicit"
    assert find_token(None, env, uid) == "from-dgaas"
    del env["DGAAS_TOKEN"]
    assert find_token(None, env, uid) == "from-bearer"
    del env["BEARER_TOKEN"]
    assert find_token(None, env, uid) == "from-file"  # whitespace stripped, as the spec says
    del env["BEARER_TOKEN_FILE"]
    assert find_token(None, env, uid) == "from-xdg"


def test_discovery_skips_empty_values_and_missing_files(tmp_path):
    uid = 4243
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / f"bt_u{uid}").write_text("good.token-123\n")
    env = {"DGAAS_TOKEN": "  ", "BEARER_TOKEN": "", "BEARER_TOKEN_FILE": str(tmp_path / "absent"),
           "XDG_RUNTIME_DIR": str(xdg)}
    assert find_token(None, env, uid) == "good.token-123"


def test_discovery_falls_back_to_tmp_bt_u_uid(tmp_path):
    uid = 900000 + os.getpid() % 10000  # a uid whose /tmp file no one else has
    path = Path("/tmp") / f"bt_u{uid}"
    path.write_text("tmp-token\n")
    try:
        assert find_token(None, {}, uid) == "tmp-token"
        assert find_token(None, {"XDG_RUNTIME_DIR": str(tmp_path)}, uid) == "tmp-token"
    finally:
        path.unlink()


def test_discovery_errors_name_every_place_tried_and_refuse_invalid_tokens(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    with pytest.raises(TokenError) as err:
        find_token(None, env, 987654)
    text = str(err.value)
    assert text.index("DGAAS_TOKEN") < text.index("BEARER_TOKEN") < text.index("bt_u987654")
    with pytest.raises(TokenError, match="not a bearer token"):
        find_token(None, {"BEARER_TOKEN": "two words"}, 987654)


def test_auth_headers_for_tritonclient(keys):
    token = issue_token(keys["private"], sub="a")
    assert auth_headers(token) == {"authorization": f"Bearer {token}"}  # lower case: valid gRPC metadata


# ------------------------------------------------------------------------------------ CLI


def run_token_cli(*args: str, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "dgaas_flow", "token", *map(str, args)],
                          capture_output=True, text=True, env=env or child_env(), timeout=60)


def test_token_cli_keygen_issue_verify(tmp_path):
    env = child_env(DGAAS_TOKEN_DIR=str(tmp_path / "k"))
    assert run_token_cli("keygen", env=env).returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "signing.pem").st_mode) == 0o600
    issued = run_token_cli("issue", "--scope", "triton.infer", "--lifetime", "3h", "--sub", "me", env=env)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    ok = run_token_cli("verify", token, env=env)
    assert ok.returncode == 0 and json.loads(ok.stdout)["sub"] == "me"
    assert "valid: sub me, scope triton.infer" in ok.stderr
    # the token found by discovery when none is given; an admin requirement it does not meet
    admin = run_token_cli("verify", "--require-scope", "triton.admin", env={**env, "BEARER_TOKEN": token})
    assert admin.returncode == 2 and "lacks triton.admin" in admin.stderr
    out = tmp_path / "bt"
    assert run_token_cli("issue", "--out", out, "--scope", "triton.infer triton.admin", env=env).returncode == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert run_token_cli("verify", "--require-scope", "triton.admin",
                         env={**env, "BEARER_TOKEN_FILE": str(out)}).returncode == 0


def test_token_cli_mistakes_exit_2_with_a_message(tmp_path):
    env = child_env(DGAAS_TOKEN_DIR=str(tmp_path / "none"), XDG_RUNTIME_DIR=str(tmp_path))
    r = run_token_cli("issue", env=env)
    assert r.returncode == 2 and "token keygen" in r.stderr and "Traceback" not in r.stderr
    r = run_token_cli("issue", "--lifetime", "soon", "--key", tmp_path / "none" / "x.pem", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_token_cli("verify", env={**env, "BEARER_TOKEN": "abc.def.ghi"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
