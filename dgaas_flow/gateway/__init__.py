"""The gateway: Envoy in front of Triton pilots, with token authentication (see gateway.py).
Names are imported on first use: tasks need only `tokens`, not Envoy's configuration."""

from importlib import import_module

_EXPORTS = {
    "Gateway": "dgaas_flow.gateway.gateway", "GatewaySettings": "dgaas_flow.gateway.gateway",
    "GatewayState": "dgaas_flow.gateway.gateway", "auth_headers": "dgaas_flow.gateway.tokens",
    "find_token": "dgaas_flow.gateway.tokens", "issue_token": "dgaas_flow.gateway.tokens",
    "verify_token": "dgaas_flow.gateway.tokens",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dgaas_flow.gateway' has no attribute {name!r}")
