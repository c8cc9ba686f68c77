"""Apps: the Parsl side of dgaas-flow, for your own apps as for the campaign's. `pilot_executor`
(executor: a Parsl executor whose blocks start pilots), `triton_client` (client: the node's server
from inside any app), and `infer_chunk` with `InferRequest` (tasks: the campaign's own app). Names
are imported on first use: a pilot's node needs no tritonclient."""

from dgaas_flow.lazy import lazy_exports

_EXPORTS = {
    "infer_chunk": "dgaas_flow.apps.tasks",
    "infer_items": "dgaas_flow.apps.tasks",
    "InferRequest": "dgaas_flow.apps.tasks",
    "PilotClient": "dgaas_flow.apps.client",
    "triton_client": "dgaas_flow.apps.client",
    "pilot_executor": "dgaas_flow.apps.executor",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
