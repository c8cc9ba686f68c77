"""A client's bearer token, found the way WLCG Bearer Token Discovery says, and the headers that
carry it. No cryptography here: every task imports this, and jwt with cryptography would add a
tenth of a second to each worker's first task.

A client finds its token in this order (`find_token`): an explicit value > `DGAAS_TOKEN` > the
WLCG Bearer Token Discovery steps: `BEARER_TOKEN` > the file named by `BEARER_TOKEN_FILE` >
`$XDG_RUNTIME_DIR/bt_u$EUID` (when XDG_RUNTIME_DIR is set) > `/tmp/bt_u$EUID`. As that
specification says, surrounding whitespace is stripped, an empty value moves on to the next step,
and a value that is not an RFC 6750 token stops the search with an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dgaas_flow.errors import UserError

ENV_TOKEN = "DGAAS_TOKEN"
# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_C99_SPACE = " \t\n\v\f\r"


class TokenError(UserError):
    """A token that cannot be used: missing, malformed, expired, badly signed, wrong audience..."""


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
