"""Apps: the Parsl side of dgaas-flow. `infer_chunk` (the campaign's own app, usable in any Parsl
script), `InferRequest` (what it infers with), and the client of the node's Triton server (client).
Names are imported on first use: a pilot's node needs no tritonclient."""

from dgaas_flow.lazy import lazy_exports

_EXPORTS = {
    "infer_chunk": "dgaas_flow.apps.tasks",
    "infer_items": "dgaas_flow.apps.tasks",
    "InferRequest": "dgaas_flow.apps.tasks",
    "TritonClient": "dgaas_flow.apps.client",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
