"""The gateway: Envoy in front of Triton pilots, with token authentication (see gateway.py).
Names are imported on first use: tasks need only `bearer`, not Envoy's configuration or cryptography."""

from dgaas_flow.lazy import lazy_exports

_EXPORTS = {
    "Gateway": "dgaas_flow.gateway.gateway", "GatewaySettings": "dgaas_flow.gateway.gateway",
    "GatewayState": "dgaas_flow.gateway.gateway", "auth_headers": "dgaas_flow.gateway.bearer",
    "find_token": "dgaas_flow.gateway.bearer", "issue_token": "dgaas_flow.gateway.tokens",
    "verify_token": "dgaas_flow.gateway.tokens",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
