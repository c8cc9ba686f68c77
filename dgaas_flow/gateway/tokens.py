"""Tokens for the gateway: ES256 keys, a JWKS for Envoy, and JWTs shaped like SciTokens.

A token carries `iss`, `aud`, `sub`, `scope` (space separated: `triton.infer` for inference,
metadata and health calls; `triton.admin` adds the model-repository, shared-memory, trace and
logging calls), `exp`, `iat`, `nbf`, `jti` and `ver` ("scitoken:2.0"). The private key signs;
Envoy is given only the public JWKS (`gateway start --key` also accepts the private key file and
derives the public half from it, but the gateway needs only jwks.json).

A client finds its token in this order (`find_token`): an explicit value > `DGAAS_TOKEN` > the
WLCG Bearer Token Discovery steps: `BEARER_TOKEN` > the file named by `BEARER_TOKEN_FILE` >
`$XDG_RUNTIME_DIR/bt_u$EUID` (when XDG_RUNTIME_DIR is set) > `/tmp/bt_u$EUID`. As that
specification says, surrounding whitespace is stripped, an empty value moves on to the next step,
and a value that is not an RFC 6750 token stops the search with an error.
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

from dgaas_flow.errors import UserError
from dgaas_flow.processes import write_atomic

ALGORITHM = "ES256"
SCOPE_INFER = "triton.infer"
SCOPE_ADMIN = "triton.admin"
DEFAULT_ISSUER = "dgaas-flow"
DEFAULT_AUDIENCE = "dgaas-flow-gateway"
DEFAULT_LIFETIME_S = 3 * 3600
ENV_TOKEN = "DGAAS_TOKEN"
ENV_TOKEN_DIR = "DGAAS_TOKEN_DIR"
PRIVATE_KEY = "signing.pem"
PUBLIC_KEY = "public.pem"
JWKS_FILE = "jwks.json"
# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_C99_SPACE = " \t\n\v\f\r"


class TokenError(UserError):
    """A token that cannot be used: missing, malformed, expired, badly signed, wrong audience..."""


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
    now: float | None = None,
) -> str:
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
        "exp": issued + parse_lifetime(lifetime),
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
) -> dict[str, Any]:
    """The token's claims if it is valid for this issuer and audience (and scope); else TokenError."""
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
        if require_scope and not has_scope(claims, require_scope):
            raise TokenError(f"token scope {claims.get('scope')!r} lacks {require_scope}")
        return claims
    raise TokenError(f"invalid token: {errors[0] if errors else 'no key'} (signed by another key?)")


def has_scope(claims: Mapping[str, Any], scope: str) -> bool:
    value = claims.get("scope", "")
    scopes = value.split() if isinstance(value, str) else list(value)
    return scope in scopes or (scope == SCOPE_INFER and SCOPE_ADMIN in scopes)


# ------------------------------------------------------------------------------------ discovery


def token_locations(environ: Mapping[str, str] = os.environ, euid: int | None = None) -> list[tuple[str, Any]]:
    """Where `find_token` looks, in order: (name, value or Path)."""
    euid = os.geteuid() if euid is None else euid
    steps: list[tuple[str, Any]] = [(ENV_TOKEN, environ.get(ENV_TOKEN)), ("BEARER_TOKEN", environ.get("BEARER_TOKEN"))]
    if environ.get("BEARER_TOKEN_FILE"):
        steps.append(("BEARER_TOKEN_FILE", Path(environ["BEARER_TOKEN_FILE"])))
    if environ.get("XDG_RUNTIME_DIR"):
        steps.append(("XDG_RUNTIME_DIR", Path(environ["XDG_RUNTIME_DIR"]) / f"bt_u{euid}"))
    steps.append(("/tmp", Path("/tmp") / f"bt_u{euid}"))
    return steps


def find_token(explicit: str | None = None, environ: Mapping[str, str] = os.environ,
               euid: int | None = None) -> str:
    """The client's token: explicit > DGAAS_TOKEN > WLCG Bearer Token Discovery."""
    tried = []
    candidates: list[tuple[str, Any]] = [("explicit token", explicit)] + token_locations(environ, euid)
    for name, where in candidates:
        if isinstance(where, Path):
            try:
                value = where.read_text()
            except FileNotFoundError:
                tried.append(f"{where}: no file")
                continue
            except OSError as exc:
                tried.append(f"{where}: unreadable ({exc.strerror})")
                continue
            label = f"{name} file {where}" if name != "/tmp" else str(where)
        else:
            value, label = where, name
            if value is None:
                if name != "explicit token":
                    tried.append(f"{name}: not set")
                continue
        value = value.strip(_C99_SPACE)
        if not value:
            tried.append(f"{label}: empty")
            continue
        if not _B64TOKEN.match(value):
            raise TokenError(f"{label}: not a bearer token (RFC 6750 allows letters, digits and -._~+/ only)")
        return value
    raise TokenError("no token found; tried, in order: " + "; ".join(tried)
                     + ". Get one with `dgaas-flow token issue` and set DGAAS_TOKEN or BEARER_TOKEN_FILE")


def optional_auth_headers(token_file: str | None = None) -> dict[str, str]:
    """A client's headers: the token from token_file if given (it must be readable), else one found
    by discovery, else none (a pilot reached directly needs none; the gateway then answers 401)."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise TokenError(f"client.token_file {token_file}: cannot read ({exc.strerror})") from None
        if not token:
            raise TokenError(f"client.token_file {token_file}: the file is empty")
        return auth_headers(token)
    try:
        return auth_headers()
    except TokenError:
        return {}


def auth_headers(token: str | None = None) -> dict[str, str]:
    """Headers for tritonclient through the gateway: `headers=` of HTTP calls and gRPC calls
    (gRPC metadata keys must be lower case, hence `authorization`). A new dict each call: give
    each client its own, since tritonclient's HTTP `infer` adds an int-valued header to the dict
    it is passed, which gRPC metadata then refuses."""
    return {"authorization": f"Bearer {find_token(token)}"}
