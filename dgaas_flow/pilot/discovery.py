"""How a task finds its Triton server, in one fixed, documented order.

1. the workflow's explicit `server.url`
2. DGAAS_TRITON_URL / DGAAS_TRITON_GRPC_URL, set by the pilot for the workers of its node; the
   workers start while the server does, so when the pilot also names its endpoint file
   (DGAAS_ENDPOINT_FILE), that file's live state is used: wait while it says `starting`
3. TRITON_ADDRESS (and TRITON_GRPC_ADDRESS), published by the GlideinWMS glidein's setup script
4. the endpoint file named by DGAAS_ENDPOINT_FILE (a standalone `dgaas-flow pilot start` writes one)
5. the gateway: the workflow's `server.gateway`, or DGAAS_GATEWAY_URL (`dgaas-flow gateway start`
   prints it), which reaches pilots anywhere with a token
An explicit `server.gateway` counts as step 1: the workflow asked for it.

Fail-over (`failover_endpoints`), when a request to the server found this way failed, was retried
after a backoff, and the node's pilot still does not serve (gone, stopped, failed, or not ready
again within the backoff; a draining pilot still serves the tasks of its own node): another
serving pilot of the same registry (the folder of DGAAS_ENDPOINT_FILE) that this host can reach
(on this host, or listening on a non-loopback address), in random order so that the workers of
a lost pilot spread out; then the gateway (DGAAS_GATEWAY_URL) if one is set. An explicit
server.url or server.gateway is never failed over.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from dgaas_flow.errors import PilotError, UserError
from dgaas_flow.pilot.endpoint import ENV_ENDPOINT_FILE, ENV_GRPC_URL, ENV_URL, Endpoint, read_registry


class DiscoveryError(UserError):
    """No server could be found; the message lists every place that was tried."""


def _with_scheme(address: str, scheme: str) -> str:
    return address if "://" in address else f"{scheme}://{address}"


def _gateway(address: str) -> Endpoint:
    address = address.split("://", 1)[-1]
    return Endpoint(http_url=f"http://{address}", grpc_url=f"grpc://{address}", state="ready")


WAIT_POLL_S = 0.2


def wait_for_pilot(path: Path, timeout_s: float) -> Endpoint:
    """The node's pilot once its endpoint file says it serves (ready, or restarting: the
    client's retries then wait for it); PilotError when it failed or took too long."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            endpoint = Endpoint.read(path)
        except (OSError, ValueError):  # being replaced, or a shared filesystem's hiccup
            if time.monotonic() > deadline:
                raise
            time.sleep(WAIT_POLL_S)
            continue
        if endpoint.state in ("ready", "restarting", "draining") and not endpoint.gone():
            return endpoint  # a draining pilot still serves the tasks its node holds
        if endpoint.state in ("ready", "restarting", "draining"):
            raise PilotError(f"the pilot of this node is gone (its supervisor, pid {endpoint.supervisor_pid}, exited)")
        if endpoint.state != "starting":
            raise PilotError(f"the pilot of this node is {endpoint.state}: {endpoint.error or 'see its log'}")
        if time.monotonic() > deadline:
            raise PilotError(f"the pilot of this node was not ready within {timeout_s:.0f} s; log {endpoint.log}")
        time.sleep(WAIT_POLL_S)


def resolve_endpoint(
    explicit_url: str | None = None, environ: Mapping[str, str] = os.environ, gateway: str | None = None,
    ready_timeout_s: float = 120.0,
) -> Endpoint:
    tried = []
    if explicit_url:
        key = "http_url" if explicit_url.startswith("http://") else "grpc_url"
        return Endpoint(**{key: explicit_url}, state="ready")
    if gateway:
        return _gateway(gateway)
    tried.append("workflow server.url / server.gateway: not set")

    if environ.get(ENV_URL) or environ.get(ENV_GRPC_URL):
        if environ.get(ENV_ENDPOINT_FILE) and Path(environ[ENV_ENDPOINT_FILE]).is_file():
            return wait_for_pilot(Path(environ[ENV_ENDPOINT_FILE]), ready_timeout_s)
        return Endpoint(http_url=environ.get(ENV_URL) or None, grpc_url=environ.get(ENV_GRPC_URL) or None,
                        state="ready")
    tried.append(f"{ENV_URL}: not set")

    if environ.get("TRITON_ADDRESS"):
        grpc = environ.get("TRITON_GRPC_ADDRESS")
        return Endpoint(
            http_url=_with_scheme(environ["TRITON_ADDRESS"], "http"),
            grpc_url=_with_scheme(grpc, "grpc") if grpc else None,
            state="ready",
        )
    tried.append("TRITON_ADDRESS (glidein): not set")

    path = environ.get(ENV_ENDPOINT_FILE)
    if path:
        try:
            return Endpoint.read(Path(path))
        except (OSError, ValueError) as exc:
            tried.append(f"{ENV_ENDPOINT_FILE}={path}: unreadable ({exc})")
    else:
        tried.append(f"{ENV_ENDPOINT_FILE}: not set")

    if environ.get("DGAAS_GATEWAY_URL"):
        return _gateway(environ["DGAAS_GATEWAY_URL"])
    tried.append("DGAAS_GATEWAY_URL: not set")

    raise DiscoveryError(
        "no Triton server found; tried, in order: " + "; ".join(tried)
        + ". Set server.url or server.gateway in the workflow, run inside a dgaas-flow pilot, start one "
        "with `dgaas-flow pilot start` and export DGAAS_ENDPOINT_FILE, or export DGAAS_GATEWAY_URL"
    )


LOOPBACK_HOSTS = ("127.", "localhost", "[::1]", "::1")


def reachable_from(endpoint: Endpoint, host: str) -> bool:
    """Whether a process on `host` can reach the endpoint: its server is on that host, or it
    listens on an address other than the loopback."""
    if endpoint.host == host:
        return True
    address = (endpoint.http_url or endpoint.grpc_url or "").split("://", 1)[-1]
    return not address.startswith(LOOPBACK_HOSTS)


def failover_endpoints(environ: Mapping[str, str] = os.environ, exclude: set[str] | frozenset[str] = frozenset(),
                       rng: random.Random | None = None) -> list[Endpoint]:
    """Where a request goes when the node's pilot no longer serves (see the module's docstring):
    the other serving pilots of its registry this host reaches, shuffled, then the gateway.
    `exclude`: URLs already tried."""
    found: list[Endpoint] = []
    own = environ.get(ENV_ENDPOINT_FILE)
    if own:
        here = socket.gethostname()
        own_name = Path(own).stem
        found = [e for e in read_registry(Path(own).parent)
                 if e.name != own_name and e.serving() and reachable_from(e, here)
                 and not {e.http_url, e.grpc_url} & set(exclude)]
        (rng or random).shuffle(found)
    if environ.get("DGAAS_GATEWAY_URL"):
        found.append(_gateway(environ["DGAAS_GATEWAY_URL"]))
    return found
