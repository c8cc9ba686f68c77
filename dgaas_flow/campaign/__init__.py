"""Campaigns: one run of a workflow, fanned out over a session's pilot-backed workers.

session (Parsl, blocks and pilots kept up across campaigns), fanout (run_campaign: inputs to
chunks to tasks, results streamed as they come), chunking (chunk sizes), records (a result
line per item, made in the workers), sink (results.jsonl: append, resume, tally), stats (latency
and timeline), summary (summary.json), progress (bar or log lines), scale (scale tests), files (the
run folder's file names). Names are imported on first use: the report reads run folders without
Parsl."""

from dgaas_flow.lazy import lazy_exports

_EXPORTS = {
    "run_campaign": "dgaas_flow.campaign.fanout",
    "workflow_slices": "dgaas_flow.campaign.fanout",
    "Session": "dgaas_flow.campaign.session",
    "format_summary": "dgaas_flow.campaign.summary",
    "summarize": "dgaas_flow.campaign.summary",
    "run_scale_test": "dgaas_flow.campaign.scale",
    "format_scale": "dgaas_flow.campaign.scale",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
