"""The summary JSON: the headline run of each model (its largest run with ceiling, dgaas and naive),
the driver's peak memory by item count, and every run."""

from __future__ import annotations

from typing import Any

from .run import Run


def summary_json(runs: list[Run], info: dict) -> dict[str, Any]:
    """The JSON written to <tag>.json and printed as the last line."""
    models: dict[str, Any] = {}
    for name in dict.fromkeys(r.model for r in runs):
        mine = [r for r in runs if r.model == name]
        full = [r for r in mine if r.ceiling and r.dgaas and r.naive] or mine
        head = max(full, key=lambda r: (r.items, -mine.index(r)))
        models[name] = {
            **head.row(),
            "driver_peak_rss_mb_by_items": {str(r.items): r.dgaas["driver_peak_rss_mb"] for r in mine
                                            if r.dgaas and r.workers == head.workers},
            "runs": [r.row() for r in mine],
        }
    return {"benchmark": "fanout", "date": info["date"], "command": info["command"], "machine": info["machine"],
            "models": models}
