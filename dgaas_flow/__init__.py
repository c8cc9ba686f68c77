"""dgaas-flow: Parsl workflows whose many small inference tasks share one Triton pilot per node.

Campaigns of a workflow file::

    from dgaas_flow import Session, load_workflow, run_campaign
    wf = load_workflow("workflows/digits/workflow.yaml")
    summary = run_campaign(wf)

Your own Parsl apps, on pilots serving your models::

    from dgaas_flow import Session, triton_client
    with Session(provider="local", repository="models", models=["tagger"]) as session:
        future = session.submit(my_function)   # inside it: triton_client().infer("tagger", {...})

or `pilot_executor(...)` in a Parsl `Config` of your own. Names are imported on first use, so
`dgaas-flow validate` and other light commands start without loading Parsl and tritonclient.
"""

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from dgaas_flow.lazy import lazy_exports

if TYPE_CHECKING:  # what a type checker sees of the names imported on first use
    from dgaas_flow.apps.client import PilotClient, triton_client
    from dgaas_flow.apps.executor import pilot_executor
    from dgaas_flow.apps.tasks import InferRequest, infer_chunk, infer_items
    from dgaas_flow.campaign.elastic import autoscaling
    from dgaas_flow.campaign.fanout import run_campaign
    from dgaas_flow.campaign.session import Session
    from dgaas_flow.campaign.summary import format_summary
    from dgaas_flow.errors import PilotError, UserError
    from dgaas_flow.pilot.discovery import resolve_endpoint
    from dgaas_flow.pilot.settings import PilotConfig, TritonSettings
    from dgaas_flow.pilot.supervisor import Pilot
    from dgaas_flow.specs import Workflow, load_workflow

try:
    __version__ = version("dgaas-flow")
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"

# Silent unless the application configures logging (the `dgaas-flow` command does), as Parsl is.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "load_workflow": "dgaas_flow.specs",
    "Workflow": "dgaas_flow.specs",
    "run_campaign": "dgaas_flow.campaign.fanout",
    "format_summary": "dgaas_flow.campaign.summary",
    "Session": "dgaas_flow.campaign.session",
    "pilot_executor": "dgaas_flow.apps.executor",
    "autoscaling": "dgaas_flow.campaign.elastic",
    "triton_client": "dgaas_flow.apps.client",
    "PilotClient": "dgaas_flow.apps.client",
    "infer_chunk": "dgaas_flow.apps.tasks",
    "infer_items": "dgaas_flow.apps.tasks",
    "InferRequest": "dgaas_flow.apps.tasks",
    "Pilot": "dgaas_flow.pilot.supervisor",
    "PilotConfig": "dgaas_flow.pilot.settings",
    "TritonSettings": "dgaas_flow.pilot.settings",
    "resolve_endpoint": "dgaas_flow.pilot.discovery",
    "UserError": "dgaas_flow.errors",
    "PilotError": "dgaas_flow.errors",
}

__all__ = [
    "InferRequest",
    "Pilot",
    "PilotClient",
    "PilotConfig",
    "PilotError",
    "Session",
    "TritonSettings",
    "UserError",
    "Workflow",
    "autoscaling",
    "format_summary",
    "infer_chunk",
    "infer_items",
    "load_workflow",
    "pilot_executor",
    "resolve_endpoint",
    "run_campaign",
    "triton_client",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
