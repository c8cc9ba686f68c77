"""`dgaas-flow report RUN_DIR`: a self-contained HTML page (figures embedded, and also written as PNG
files beside it) describing a campaign run folder (summary.json) or a scale-test folder (scale.json).
Matplotlib is imported on first use only."""

from dgaas_flow.lazy import lazy_exports

_EXPORTS = {"write_report": "dgaas_flow.report.build"}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
