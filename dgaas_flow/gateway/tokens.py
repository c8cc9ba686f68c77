"""Tokens for the gateway: ES256 keys, a JWKS for Envoy, and JWTs shaped like SciTokens.

A token carries `iss`, `aud`, `sub`, `scope` (space separated: `triton.infer` for inference,
metadata and health calls; `triton.admin` adds the model-repository, shared-memory, trace and
logging calls), `exp`, `iat`, `nbf`, `jti` and `ver` ("scitoken:2.0"). The private key signs;
Envoy is given only the public JWKS (`gateway start --key` also accepts the private key file and
derives the public half from it, but the gateway needs only jwks.json).

A client finds its token with `dgaas_flow.gateway.bearer`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dgaas_flow.gateway.bearer import TokenError
from dgaas_flow.processes import write_atomic

ALGORITHM = "ES256"
SCOPE_INFER = "triton.infer"
SCOPE_ADMIN = "triton.admin"
DEFAULT_ISSUER = "dgaas-flow"
DEFAULT_AUDIENCE = "dgaas-flow-gateway"
DEFAULT_LIFETIME_S = 3 * 3600
# The gateway refuses tokens that live longer (a stolen one is good until it expires); WLCG's
# profile keeps access tokens to hours. `token issue` refuses a longer lifetime.
MAX_LIFETIME_S = 24 * 3600
ENV_TOKEN_DIR = "DGAAS_TOKEN_DIR"
PRIVATE_KEY = "signing.pem"
PUBLIC_KEY = "public.pem"
JWKS_FILE = "jwks.json"


def default_key_dir() -> Path:
    return Path(os.environ.get(ENV_TOKEN_DIR, Path.home() / ".dgaas-flow" / "tokens"))


# ------------------------------------------------------------------------------------ keys


def generate_keypair(key_dir: Path, force: bool = False) -> dict[str, Path]:
    """Write signing.pem (private, mode 0600), public.pem and jwks.json into key_dir."""
    key_dir = Path(key_dir)
    private_path = key_dir / PRIVATE_KEY
    if private_path.exists() and not force:
        raise TokenError(f"{private_path} exists; pass --force to replace it (tokens signed by it stop working)")
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomic(private_path, pem)  # mkstemp: mode 0600, O_EXCL, never through a planted link
    public_path = key_dir / PUBLIC_KEY
    write_atomic(public_path, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    jwks_path = key_dir / JWKS_FILE
    write_atomic(jwks_path, json.dumps(jwks([key.public_key()]), indent=2).encode())
    return {"private": private_path, "public": public_path, "jwks": jwks_path}


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise TokenError(f"{path}: cannot read the signing key ({exc.strerror}); "
                         "create one with `dgaas-flow token keygen`") from None
    except (ValueError, TypeError) as exc:
        raise TokenError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise TokenError(f"{path}: expected an EC P-256 (ES256) private key")
    return key


def load_public_keys(path: Path) -> list[ec.EllipticCurvePublicKey]:
    """Public keys from a JWKS file, a public PEM or a private PEM (its public half)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenError(f"{path}: cannot read ({exc.strerror})") from None
    text = data.decode(errors="replace").lstrip()
    if text.startswith("{"):
        try:
            keys = [k.key for k in jwt.PyJWKSet.from_json(text).keys]
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            raise TokenError(f"{path}: not a usable JWKS ({exc})") from None
        found = [k for k in keys if isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp256r1"]
        if not found:
            raise TokenError(f"{path}: the JWKS holds no EC P-256 public key")
        return found
    if "PRIVATE KEY" in text:
        return [load_private_key(path).public_key()]
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise TokenError(f"{path}: not a JWKS, a public PEM or a private PEM ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise TokenError(f"{path}: expected an EC P-256 (ES256) public key")
    return [key]


def _b64url_uint(n: int, length: int = 32) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(length, "big")).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": _b64url_uint(numbers.x), "y": _b64url_uint(numbers.y)}
    # RFC 7638 thumbprint: SHA-256 of the required members, sorted, no whitespace
    thumb = hashlib.sha256(json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()).digest()
    return {**jwk, "kid": base64.urlsafe_b64encode(thumb).rstrip(b"=").decode(), "alg": ALGORITHM, "use": "sig"}


def jwks(keys: list[ec.EllipticCurvePublicKey]) -> dict[str, Any]:
    return {"keys": [public_jwk(k) for k in keys]}


# ------------------------------------------------------------------------------------ tokens


def parse_lifetime(text: str | int | float) -> int:
    """'3h', '90m', '45s', '2d' or a number of seconds."""
    if isinstance(text, int | float):
        seconds = int(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
        if not m:
            raise TokenError(f"lifetime {text!r}: expected a number with an optional unit s, m, h or d (e.g. 3h)")
        seconds = int(float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
    if seconds <= 0:
        raise TokenError(f"lifetime {text!r}: must be positive")
    return seconds


def issue_token(
    private_key: ec.EllipticCurvePrivateKey | Path | str,
    *,
    sub: str,
    scope: str | list[str] = SCOPE_INFER,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    lifetime: str | int = DEFAULT_LIFETIME_S,
    max_lifetime: str | int = MAX_LIFETIME_S,
    now: float | None = None,
) -> str:
    """A signed token; TokenError for a lifetime above max_lifetime (the gateway would refuse it)."""
    seconds, longest = parse_lifetime(lifetime), parse_lifetime(max_lifetime)
    if seconds > longest:
        raise TokenError(f"lifetime {lifetime}: longer than the maximum of {longest} s that gateways accept "
                         "by default (gateway start --max-token-lifetime; token issue --max-lifetime)")
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        private_key = load_private_key(Path(private_key))
    scopes = scope.split() if isinstance(scope, str) else list(scope)
    if not scopes:
        raise TokenError("scope: give at least one, e.g. triton.infer")
    issued = int(time.time() if now is None else now)
    claims = {
        "ver": "scitoken:2.0",
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "scope": " ".join(scopes),
        "iat": issued,
        "nbf": issued,
        "exp": issued + seconds,
        "jti": str(uuid.uuid4()),
    }
    kid = public_jwk(private_key.public_key())["kid"]
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})


def verify_token(
    token: str,
    public_keys: list[ec.EllipticCurvePublicKey] | Path | str,
    *,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    require_scope: str | None = None,
    leeway_s: float = 0,
    max_lifetime_s: int = MAX_LIFETIME_S,
) -> dict[str, Any]:
    """The token's claims if it is valid for this issuer and audience (and scope), with an `exp`
    at most max_lifetime_s after its `iat`, as the gateway checks; else TokenError."""
    if not isinstance(public_keys, list):
        public_keys = load_public_keys(Path(public_keys))
    options = {"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "scope", "jti"]}
    errors = []
    for key in public_keys:
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=audience, issuer=issuer,
                                options=options, leeway=leeway_s)
        except jwt.InvalidSignatureError as exc:
            errors.append(str(exc))
            continue
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        if claims["exp"] - claims["iat"] > max_lifetime_s:
            raise TokenError(f"invalid token: it lives {claims['exp'] - claims['iat']} s, longer than the "
                             f"maximum of {max_lifetime_s} s")
        if require_scope and not has_scope(claims, require_scope):
            raise TokenError(f"token scope {claims.get('scope')!r} lacks {require_scope}")
        return claims
    raise TokenError(f"invalid token: {errors[0] if errors else 'no key'} (signed by another key?)")


def has_scope(claims: Mapping[str, Any], scope: str) -> bool:
    value = claims.get("scope", "")
    scopes = value.split() if isinstance(value, str) else list(value)
    return scope in scopes or (scope == SCOPE_INFER and SCOPE_ADMIN in scopes)
