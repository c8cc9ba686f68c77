"""The gateway: Envoy in front of Triton pilots, with token authentication (see gateway.py)."""

from dgaas_flow.gateway.gateway import Gateway, GatewaySettings, GatewayState
from dgaas_flow.gateway.tokens import auth_headers, find_token, issue_token, verify_token

__all__ = ["Gateway", "GatewaySettings", "GatewayState", "auth_headers", "find_token", "issue_token",
           "verify_token"]
