"""dgaas-flow: Parsl workflows whose many small inference tasks share one Triton pilot per node.

Python API::

    from dgaas_flow import Session, load_workflow, run_campaign
    wf = load_workflow("workflows/digits/workflow.yaml")
    summary = run_campaign(wf)

    with Session(wf) as session:            # several campaigns on the same blocks and pilots
        run_campaign(wf, session=session)

For your own Parsl scripts, `infer_chunk(items, request)` is the Parsl app and `infer_items` the
same function in-process. Names are imported on first use, so `dgaas-flow validate` and other
light commands start without loading Parsl and tritonclient.
"""

import logging
from importlib.metadata import PackageNotFoundError, version

from dgaas_flow.lazy import lazy_exports

try:
    __version__ = version("dgaas-flow")
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"

# Silent unless the application configures logging (the `dgaas-flow` command does), as Parsl is.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "load_workflow": "dgaas_flow.specs",
    "run_campaign": "dgaas_flow.campaign",
    "Session": "dgaas_flow.campaign.session",
    "format_summary": "dgaas_flow.campaign",
    "infer_chunk": "dgaas_flow.apps.tasks",
    "infer_items": "dgaas_flow.apps.tasks",
    "InferRequest": "dgaas_flow.apps.tasks",
    "Pilot": "dgaas_flow.pilot.supervisor",
    "PilotConfig": "dgaas_flow.pilot.settings",
    "resolve_endpoint": "dgaas_flow.pilot.discovery",
    "UserError": "dgaas_flow.errors",
    "PilotError": "dgaas_flow.errors",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
