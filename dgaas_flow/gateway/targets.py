"""The gateway's targets, the pilots it fronts: from a registry folder of endpoint files, and/or the HTCondor
collector (the startd ads of glideins that publish TRITON_ADDRESS / TRITON_GRPC_ADDRESS).

Each source returns `Target`s: one pilot's HTTP and gRPC addresses, resolved to IP addresses
(Envoy's EDS endpoints must be IPs), and the secret its control plane asks for when this user
may read it (a registry pilot's key file beside its endpoint file). The collector gives only the
ads of startds whose authenticated identity is trusted: anyone who can advertise a startd could
otherwise draw the gateway's authenticated traffic to a server of theirs. `collect` merges the
sources and drops duplicates, so the gateway's sync loop can compare one set with the last one
and rewrite its EDS files only when the set changed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from dgaas_flow.pilot.endpoint import Endpoint, key_file, read_key, read_registry

COLLECTOR_CONSTRAINT = "TRITON_ADDRESS =!= undefined"
COLLECTOR_PROJECTION = ["Name", "Machine", "TRITON_ADDRESS", "TRITON_GRPC_ADDRESS", "GLIDEIN_Site",
                        "AuthenticatedIdentity"]


@dataclass(frozen=True)
class Target:
    """One pilot as the gateway sees it. http/grpc are (ip, port) or None; key is the secret its
    control plane asks for (None when unknown: admin calls to it are then refused by Triton)."""

    http: tuple[str, int] | None
    grpc: tuple[str, int] | None
    key: str | None = field(default=None, repr=False)
    name: str = field(default="", compare=False)
    hostname: str = field(default="", compare=False)
    source: str = field(default="", compare=False)


class Source(Protocol):
    name: str

    def targets(self) -> list[Target]: ...


# ------------------------------------------------------------------------------------ addresses

_RESOLVED: dict[str, tuple[float, str | None]] = {}
RESOLVE_TTL_S = 60.0


def resolve(host: str) -> str | None:
    """An IP address for host (IPv4 preferred); None when it does not resolve. Cached a minute."""
    host = host.strip("[]")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    now = time.monotonic()
    cached = _RESOLVED.get(host)
    if cached and now - cached[0] < RESOLVE_TTL_S:
        return cached[1]
    ip = None
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        infos.sort(key=lambda i: i[0] != socket.AF_INET)
        ip = infos[0][4][0] if infos else None
    except OSError:
        ip = None
    _RESOLVED[host] = (now, ip)
    return ip


def split_address(address: str) -> tuple[str, int]:
    """'http://host:8000', 'grpc://host:8001', 'host:8000' or '[::1]:8000' -> (host, port)."""
    text = address.strip()
    parts = urlsplit(text if "://" in text else f"tcp://{text}")
    if not parts.hostname or parts.port is None:
        raise ValueError(f"{address!r}: expected host:port or scheme://host:port")
    return parts.hostname, parts.port


def is_this_host(name: str) -> bool:
    me = socket.gethostname()
    return name in (me, socket.getfqdn()) or name.split(".")[0] == me.split(".")[0]


def _resolved(address: str | None, origin: str | None) -> tuple[tuple[str, int] | None, str]:
    """(ip, port) of an advertised address, and the host name it gave. A loopback address means
    "on the advertising host": one advertised by another host (origin) is not ours to use, or the
    gateway would send authenticated traffic to whatever listens on that port here."""
    if not address:
        return None, ""
    try:
        host, port = split_address(address)
    except ValueError:
        return None, ""
    ip = resolve(host)
    if ip and origin and ipaddress.ip_address(ip).is_loopback and not is_this_host(origin):
        return None, host
    return ((ip, port) if ip else None), host


# ------------------------------------------------------------------------------------ registry


def endpoint_target(endpoint: Endpoint, source: str = "registry", key: str | None = None) -> Target | None:
    http, host = _resolved(endpoint.http_url, endpoint.host)
    grpc, ghost = _resolved(endpoint.grpc_url, endpoint.host)
    if http is None and grpc is None:
        return None
    name = f"{endpoint.host}:{endpoint.supervisor_pid}"
    return Target(http=http, grpc=grpc, key=key, name=name, hostname=host or ghost, source=source)


@dataclass
class RegistrySource:
    """Pilots that published into a registry folder (`pilot start --dir`, a campaign's pilots).
    Only pilots that serve count: ready, and not gone (a pilot of this host whose supervisor has
    exited, or one elsewhere whose heartbeat stopped: see Endpoint.gone)."""

    path: Path
    name: str = "registry"

    def targets(self) -> list[Target]:
        found = []
        for endpoint in read_registry(Path(self.path)):
            if not endpoint.serving():
                continue
            key = read_key(key_file(Path(self.path) / f"{endpoint.name}.json")) if endpoint.name else None
            target = endpoint_target(endpoint, f"{self.name}:{self.path}", key)
            if target is not None:
                found.append(target)
        return found


# ------------------------------------------------------------------------------------ collector


def _ad_value(ad: Mapping[str, Any], key: str) -> str | None:
    try:
        value = ad.get(key)
    except Exception:  # noqa: BLE001 - ClassAd lookups may raise on odd expressions
        return None
    if value is None:
        return None
    text = str(value).strip().strip('"')
    return text or None


def ad_target(ad: Mapping[str, Any]) -> Target | None:
    """A startd ad (a glidein's slot) -> Target, from TRITON_ADDRESS (HTTP) and TRITON_GRPC_ADDRESS.
    Addresses may be `host:port` or carry a scheme; an ad without a usable address gives None."""
    machine = _ad_value(ad, "Machine")
    http, host = _resolved(_ad_value(ad, "TRITON_ADDRESS"), machine)
    grpc, ghost = _resolved(_ad_value(ad, "TRITON_GRPC_ADDRESS"), machine)
    if http is None and grpc is None:
        return None
    name = _ad_value(ad, "Name") or _ad_value(ad, "Machine") or (host or ghost)
    site = _ad_value(ad, "GLIDEIN_Site")
    return Target(http=http, grpc=grpc, name=name, hostname=host or ghost,
                  source=f"collector{':' + site if site else ''}")


def htcondor_query(pool: str | None, constraint: str) -> list[Mapping[str, Any]]:
    """The startd ads that publish a Triton address, from the htcondor2 bindings."""
    import htcondor2  # optional: PyPI `htcondor`

    collector = htcondor2.Collector(pool) if pool else htcondor2.Collector()
    return collector.query(htcondor2.AdTypes.Startd, constraint=constraint, projection=COLLECTOR_PROJECTION)


def collector_available() -> bool:
    try:
        import htcondor2  # noqa: F401
    except ImportError:
        return False
    return True


def trusted(ad: Mapping[str, Any], identities: Iterable[str]) -> bool:
    """Whether the collector authenticated the ad's startd as one of `identities` (shell-style
    patterns, e.g. `glidein@*.example.org`). An ad without AuthenticatedIdentity is not trusted."""
    identity = _ad_value(ad, "AuthenticatedIdentity")
    return identity is not None and any(fnmatch.fnmatchcase(identity, pattern) for pattern in identities)


@dataclass
class CollectorSource:
    """Glideins (startds) that advertise TRITON_ADDRESS in the HTCondor collector, whose
    authenticated identity matches one of `identities` (or any, with any_identity: only where
    no one else can advertise a startd). Several slots of one glidein publish the same address:
    `collect` keeps one. `untrusted` names the ads of the last query that were left out."""

    pool: str | None = None
    constraint: str = COLLECTOR_CONSTRAINT
    identities: tuple[str, ...] = ()
    any_identity: bool = False
    query: Callable[[str | None, str], Iterable[Mapping[str, Any]]] = htcondor_query
    name: str = "collector"
    untrusted: list[str] = field(default_factory=list)

    def targets(self) -> list[Target]:
        kept, self.untrusted = [], []
        for ad in self.query(self.pool, self.constraint):
            if self.any_identity or trusted(ad, self.identities):
                kept.append(ad)
            else:
                identity = _ad_value(ad, "AuthenticatedIdentity") or "no identity"
                self.untrusted.append(f"{_ad_value(ad, 'Name')} ({identity})")
        return [t for t in (ad_target(ad) for ad in kept) if t is not None]


# ------------------------------------------------------------------------------------ merging


def collect(sources: Iterable[Source], errors: list[str] | None = None) -> list[Target]:
    """Every target of every source, sorted, without duplicate addresses. A source that fails is
    reported in `errors` and contributes nothing this round (the others still count)."""
    seen: dict[tuple, Target] = {}
    for source in sources:
        try:
            found = source.targets()
        except Exception as exc:  # noqa: BLE001 - one broken source must not stop the sync loop
            if errors is not None:
                errors.append(f"{source.name}: {type(exc).__name__}: {exc}")
            continue
        for t in found:
            seen.setdefault((t.http, t.grpc), t)
    return sorted(seen.values(), key=lambda t: (t.http or ("", 0), t.grpc or ("", 0)))


