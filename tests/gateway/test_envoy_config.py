"""The Envoy bootstrap and EDS files, without serving: what matters is in them, and the real envoy
binary accepts them (`envoy --mode validate`, no port opened)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dgaas_flow.gateway import envoy as E
from dgaas_flow.gateway.gateway import GatewaySettings
from dgaas_flow.gateway.targets import Target
from dgaas_flow.gateway.tokens import jwks, load_public_keys

PILOTS = [
    Target(http=("127.0.0.1", 8000), grpc=("127.0.0.1", 8001), name="a", hostname="node-a"),
    Target(http=("10.0.0.7", 9000), grpc=("10.0.0.7", 9001), name="b", hostname="node-b"),
]


@pytest.fixture
def rendered(keys, tmp_path: Path):
    settings = GatewaySettings(jwks=keys["jwks"], audiences=["gw-a", "gw-b"], issuer="https://issuer.example",
                               rate_limit_rps=500, rate_limit_burst=800)
    boot = E.render_bootstrap(settings, jwks=jwks(load_public_keys(keys["jwks"])), listen_port=18080,
                              admin_socket=tmp_path / "admin.sock", eds_dir=tmp_path / "eds")
    E.write_eds(tmp_path / "eds", PILOTS, version=1)
    path = E.write_bootstrap(boot, tmp_path / "envoy.yaml")
    return boot, path, settings


def _hcm(boot):
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _filter(boot, name):
    return next(f["typed_config"] for f in _hcm(boot)["http_filters"] if f["name"] == name)


def test_real_envoy_accepts_the_bootstrap(rendered):
    _, path, _ = rendered
    E.validate_bootstrap(path)  # raises with envoy's own message if not


def test_listener_on_loopback_both_protocols_one_port_admin_on_a_private_socket(rendered, tmp_path):
    boot, _, _ = rendered
    listener = boot["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    assert _hcm(boot)["codec_type"] == "AUTO"
    assert boot["admin"]["address"] == {"pipe": {"path": str(tmp_path / "admin.sock"), "mode": 0o600}}
    names = [f["name"] for f in _hcm(boot)["http_filters"]]
    # authentication first: unauthenticated traffic touches no quota
    assert names == ["envoy.filters.http.jwt_authn", "envoy.filters.http.local_ratelimit",
                     "envoy.filters.http.rbac", "envoy.filters.http.buffer", "envoy.filters.http.router"]


def test_jwt_authn_inline_jwks_issuer_audiences_payload_in_metadata(rendered, keys):
    boot, _, _ = rendered
    jwt_cfg = _filter(boot, "envoy.filters.http.jwt_authn")
    provider = jwt_cfg["providers"][E.JWT_PROVIDER]
    assert provider["issuer"] == "https://issuer.example" and provider["audiences"] == ["gw-a", "gw-b"]
    assert json.loads(provider["local_jwks"]["inline_string"]) == json.loads(keys["jwks"].read_text())
    assert provider["payload_in_metadata"] == E.JWT_METADATA_KEY and provider["forward"] is False
    assert jwt_cfg["rules"] == [{"match": {"prefix": "/"}, "requires": {"provider_name": E.JWT_PROVIDER}}]
    mapper = _hcm(boot)["local_reply_config"]["mappers"][0]
    assert mapper["status_code"] == 401 and "jwt_authn_access_denied" in json.dumps(mapper["filter"])


def _string_match(match: dict, value: str) -> bool:
    if "exact" in match:
        return value == match["exact"]
    if "prefix" in match:
        return value.startswith(match["prefix"])
    return re.fullmatch(match["safe_regex"]["regex"], value) is not None


def _matches(rule: dict, method: str, path: str) -> bool:
    """One RBAC permission, evaluated as Envoy does (and/or/not rules, full regex matches)."""
    if "and_rules" in rule:
        return all(_matches(r, method, path) for r in rule["and_rules"]["rules"])
    if "or_rules" in rule:
        return any(_matches(r, method, path) for r in rule["or_rules"]["rules"])
    if "not_rule" in rule:
        return not _matches(rule["not_rule"], method, path)
    if "header" in rule:
        return _string_match(rule["header"]["string_match"], method)
    return _string_match(rule["url_path"]["path"], path)


def _allowed(rules, method: str, path: str) -> bool:
    return any(_matches(rule, method, path) for rule in rules)


def test_rbac_infer_scope_allowlist_and_admin_scope_for_the_rest(rendered):
    boot, _, _ = rendered
    policies = _filter(boot, "envoy.filters.http.rbac")["rules"]["policies"]
    assert _filter(boot, "envoy.filters.http.rbac")["rules"]["action"] == "ALLOW"
    assert policies["triton-admin"]["permissions"] == [{"any": True}]
    admin_scope = policies["triton-admin"]["principals"][0]["metadata"]
    assert admin_scope["path"] == [{"key": "jwt_payload"}, {"key": "scope"}]
    admin_re = admin_scope["value"]["string_match"]["safe_regex"]["regex"]
    assert re.fullmatch(admin_re, "triton.infer triton.admin") and not re.fullmatch(admin_re, "triton.infer")
    assert not re.fullmatch(admin_re, "triton.administrator")
    infer_re = policies["triton-infer"]["principals"][0]["metadata"]["value"]["string_match"]["safe_regex"]["regex"]
    assert re.fullmatch(infer_re, "triton.infer") and not re.fullmatch(infer_re, "compute.read")

    rules = policies["triton-infer"]["permissions"][0]["or_rules"]["rules"]
    allowed = [("GET", "/v2/health/ready"), ("GET", "/v2/health/live"), ("GET", "/v2"),
               ("GET", "/v2/models/digits"), ("GET", "/v2/models/digits/versions/1"),
               ("GET", "/v2/models/digits/config"), ("GET", "/v2/models/digits/ready"),
               ("POST", "/v2/models/digits/infer"), ("POST", "/v2/models/digits/versions/1/infer")]
    allowed += [("POST", f"/inference.GRPCInferenceService/{m}") for m in
                ("ModelInfer", "ModelMetadata", "ModelConfig", "ServerReady", "ServerLive", "ModelReady",
                 "ServerMetadata", "ModelStreamInfer")]
    refused = [("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/digits/load"),
               ("POST", "/v2/repository/models/digits/unload"), ("GET", "/v2/systemsharedmemory/status"),
               ("POST", "/v2/systemsharedmemory/region/r/register"), ("GET", "/v2/cudasharedmemory/status"),
               ("POST", "/v2/trace/setting"), ("GET", "/v2/trace/setting"), ("POST", "/v2/logging"),
               ("GET", "/v2/models/digits/stats"), ("POST", "/v2/models/digits/config"),
               ("GET", "/v2/models/stats"), ("HEAD", "/v2/models/stats"), ("GET", "/v2/models/stats/"),
               ("GET", "/v2/models/digits/infer"), ("DELETE", "/v2/models/digits")]
    refused += [("POST", f"/inference.GRPCInferenceService/{m}") for m in
                ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryRegister",
                 "SystemSharedMemoryStatus", "SystemSharedMemoryUnregister", "CudaSharedMemoryRegister",
                 "CudaSharedMemoryStatus", "CudaSharedMemoryUnregister", "TraceSetting", "LogSettings",
                 "ModelStatistics")]
    assert [c for c in allowed if not _allowed(rules, *c)] == []
    assert [c for c in refused if _allowed(rules, *c)] == []


def test_routes_clusters_balancing_health_outliers_retries_ratelimit(rendered, tmp_path):
    boot, _, settings = rendered
    routes = {r["name"]: r for r in _hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]}
    grpc_route, http_route = routes["grpc"], routes["http"]
    assert grpc_route["match"] == {"prefix": "/", "grpc": {}} and grpc_route["route"]["cluster"] == E.GRPC_CLUSTER
    assert http_route["route"]["cluster"] == E.HTTP_CLUSTER
    assert set(grpc_route["route"]["retry_policy"]["retry_on"].split(",")) >= {"connect-failure", "reset",
                                                                               "unavailable"}
    assert set(http_route["route"]["retry_policy"]["retry_on"].split(",")) >= {"connect-failure", "reset"}
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    for name, c in clusters.items():
        assert c["type"] == "EDS" and c["lb_policy"] == "LEAST_REQUEST"
        assert c["eds_cluster_config"]["eds_config"]["path_config_source"]["path"] == str(
            tmp_path / "eds" / f"{name}.json")
        assert c["health_checks"][0]["http_health_check"]["path"] == "/v2/health/ready"
        assert c["outlier_detection"]["consecutive_gateway_failure"] == settings.outlier_consecutive_failures
        assert c["ignore_health_on_host_removal"] is True
    grpc_opts = clusters[E.GRPC_CLUSTER]["typed_extension_protocol_options"]
    assert "http2_protocol_options" in json.dumps(grpc_opts)
    assert "http2_protocol_options" not in json.dumps(clusters[E.HTTP_CLUSTER])  # HTTP/1.1 upstream
    limit = _filter(boot, "envoy.filters.http.local_ratelimit")
    bucket = {"max_tokens": 800, "tokens_per_fill": 500, "fill_interval": "1s"}
    assert limit["descriptors"] == [{"entries": [{"key": "sub"}], "token_bucket": bucket}]  # one bucket per subject
    assert limit["rate_limited_as_resource_exhausted"] is True
    assert {"key": "retry-after", "value": "1"} in [h["header"] for h in limit["response_headers_to_add"]]


def test_eds_files_pair_grpc_health_with_the_http_port(rendered, tmp_path):
    http = json.loads((tmp_path / "eds" / f"{E.HTTP_CLUSTER}.json").read_text())
    grpc = json.loads((tmp_path / "eds" / f"{E.GRPC_CLUSTER}.json").read_text())
    assert http["version_info"] == "1"
    (cla,) = http["resources"]
    assert cla["@type"].endswith("ClusterLoadAssignment") and cla["cluster_name"] == E.HTTP_CLUSTER
    addresses = [e["endpoint"]["address"]["socket_address"] for e in cla["endpoints"][0]["lb_endpoints"]]
    assert addresses == [{"address": "127.0.0.1", "port_value": 8000}, {"address": "10.0.0.7", "port_value": 9000}]
    lb = grpc["resources"][0]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in lb] == [8001, 9001]
    assert [e["endpoint"]["health_check_config"]["port_value"] for e in lb] == [8000, 9000]


def test_eds_files_are_replaced_by_rename_never_rewritten_in_place(tmp_path):
    E.write_eds(tmp_path, PILOTS[:1], version=1)
    path = tmp_path / f"{E.HTTP_CLUSTER}.json"
    inode = path.stat().st_ino
    E.write_eds(tmp_path, [], version=2)
    assert path.stat().st_ino != inode  # a new file moved over the old one: Envoy sees a move
    assert json.loads(path.read_text())["resources"][0]["endpoints"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{E.GRPC_CLUSTER}.json", f"{E.HTTP_CLUSTER}.json"]


def test_bootstrap_is_yaml_and_settings_reject_unknown_fields(rendered, keys):
    _, path, _ = rendered
    assert yaml.safe_load(path.read_text())["admin"]
    with pytest.raises(ValueError):
        GatewaySettings(jwks=keys["jwks"], lb_polcy="RANDOM")


def test_a_grpc_only_pilot_is_not_health_checked_on_its_grpc_port():
    grpc_only = Target(http=None, grpc=("127.0.0.1", 9001), name="glidein")
    (lb,) = E.load_assignment(E.GRPC_CLUSTER, [grpc_only])["resources"][0]["endpoints"][0]["lb_endpoints"]
    assert lb["endpoint"]["health_check_config"] == {"disable_active_health_check": True}
    assert E.load_assignment(E.HTTP_CLUSTER, [grpc_only])["resources"][0]["endpoints"] == []


def test_tokens_need_exp_and_a_bounded_lifetime_and_are_cached(rendered):
    boot, _, settings = rendered
    provider = _filter(boot, "envoy.filters.http.jwt_authn")["providers"][E.JWT_PROVIDER]
    assert provider["require_expiration"] is True
    assert provider["max_lifetime"] == f"{settings.max_token_lifetime_s}s"
    assert provider["jwt_cache_config"]["jwt_cache_size"] > 0


def test_limits_against_abuse_have_safe_defaults(rendered):
    boot, _, settings = rendered
    hcm = _hcm(boot)
    assert hcm["request_headers_timeout"] == "10.000s" and hcm["common_http_protocol_options"]["idle_timeout"]
    assert _filter(boot, "envoy.filters.http.buffer")["max_request_bytes"] == 64 << 20
    (monitor,) = boot["overload_manager"]["resource_monitors"]
    assert monitor["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    assert monitor["typed_config"]["max_active_downstream_connections"] == settings.max_connections
    assert boot["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] == 1 << 20


def test_only_admin_routes_add_the_pilots_secret_and_others_strip_it(rendered):
    boot, _, _ = rendered
    for route in _hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]:
        mutation = route.get("typed_per_filter_config", {}).get(E.HEADER_MUTATION)
        if route["name"].endswith("-admin"):
            (scope,) = route["match"]["dynamic_metadata"]
            admin_re = scope["value"]["string_match"]["safe_regex"]["regex"]
            assert re.fullmatch(admin_re, "triton.infer triton.admin") and not re.fullmatch(admin_re, "triton.infer")
            (added,) = mutation["mutations"]["request_mutations"]
            assert added["append"]["header"]["value"] == "%UPSTREAM_METADATA(dgaas:key)%"
            assert added["append"]["header"]["key"] == (E.GRPC_SECRET_HEADER if "grpc" in route["name"]
                                                        else E.SECRET_HEADER)
        else:
            assert mutation is None and set(route["request_headers_to_remove"]) == {E.SECRET_HEADER,
                                                                                     E.GRPC_SECRET_HEADER}


def test_eds_carries_a_pilots_secret_only_in_its_metadata(tmp_path):
    E.write_eds(tmp_path / "eds", [Target(http=("127.0.0.1", 8000), grpc=("127.0.0.1", 8001), key="k" * 32)])
    (endpoint,) = json.loads((tmp_path / "eds" / f"{E.HTTP_CLUSTER}.json").read_text())["resources"][0][
        "endpoints"][0]["lb_endpoints"]
    assert endpoint["metadata"]["filter_metadata"][E.PILOT_METADATA]["key"] == "k" * 32
    assert (tmp_path / "eds").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "eds" / f"{E.HTTP_CLUSTER}.json").stat().st_mode & 0o777 == 0o600
