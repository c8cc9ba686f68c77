"""dgaas-flow: Parsl workflows whose many small inference tasks share one Triton pilot per node.

Python API::

    from dgaas_flow import load_workflow, run_campaign
    summary = run_campaign(load_workflow("workflows/digits/workflow.yaml"))

For your own Parsl scripts, `infer_chunk(items, request)` is the Parsl app and `infer_items` the
same function in-process.
"""

from dgaas_flow.campaign import format_summary, run_campaign
from dgaas_flow.errors import PilotError, UserError
from dgaas_flow.pilot.discovery import resolve_endpoint
from dgaas_flow.pilot.supervisor import Pilot, PilotConfig
from dgaas_flow.spec import load_workflow
from dgaas_flow.tasks import InferRequest, infer_chunk, infer_items

__all__ = [
    "InferRequest", "Pilot", "PilotConfig", "PilotError", "UserError", "format_summary", "infer_chunk",
    "infer_items", "load_workflow", "resolve_endpoint", "run_campaign",
]
