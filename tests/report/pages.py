"""Run folders in the documented formats (summary.json, timeline.jsonl, workflow.json, scale.json),
written by the tests themselves, and a small reader of the report pages (stdlib html.parser)."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

SUMMARY: dict[str, Any] = {
    "workflow": "digits", "provider": "local", "model": "digits", "out_dir": "runs/digits",
    "started_at": "2026-11-28T10:00:00+00:00", "items_total": 2000, "items_ok": 1993, "items_failed": 7,
    "items_this_run": 1500, "items_resumed": 500, "wall_seconds": 12.5, "items_per_second": 120.37,
    "steady_items_per_second": 163.04, "requests": 57,
    "latency_ms": {"p50": 12.25, "p95": 40.125, "p99": 80.5, "mean": 15.2, "max": 95.0,
                   "histogram": [[0.05, 0], [1.0, 0], [5.0, 3], [10.0, 20], [20.0, 25], [50.0, 7], [100.0, 2],
                                 [200.0, 0]]},
    "time_to_first_result_s": 3.25,
    "pilots": [
        {"endpoint": "http://127.0.0.1:8000", "grpc": "grpc://127.0.0.1:8001", "host": "node1", "block": "0",
         "batch_job": "4242", "gpus": ["0"], "restarts": 0, "state": "stopped", "items": 1100},
        {"endpoint": "http://127.0.0.1:9000", "grpc": "grpc://127.0.0.1:9001", "host": "node2", "block": "1",
         "batch_job": "4243", "gpus": [], "restarts": 1, "state": "stopped", "items": 893},
    ],
    "restarts": 1, "failures_by_reason": {"ValueError": 5, "TimeoutError": 2}, "accuracy": 0.9661,
    "complete": True,
    "triton": [
        {"endpoint": "http://127.0.0.1:8000", "metrics_url": "http://127.0.0.1:8002/metrics", "requests": 30,
         "failures": 0, "inferences": 1100, "executions": 40, "avg_batch": 27.5, "queue_ms_per_request": 0.5,
         "compute_ms_per_execution": 3.25, "gpu_utilization": 0.875},
        {"endpoint": "http://127.0.0.1:9000", "metrics_url": "http://127.0.0.1:9002/metrics", "requests": 27,
         "failures": 1, "inferences": 893, "executions": 30, "avg_batch": 29.77, "queue_ms_per_request": 0.75,
         "compute_ms_per_execution": 3.0, "gpu_utilization": None},
    ],
    "workers": 4, "blocks": 2,
}

# what dgaas-flow wrote before the report existed: no triton, histogram, mean/max, blocks, workers,
# time to first result or steady rate, and no timeline.jsonl beside it
NEW_KEYS = ("triton", "time_to_first_result_s", "workers", "blocks", "steady_items_per_second")
OLD_SUMMARY: dict[str, Any] = {
    k: v for k, v in SUMMARY.items() if k not in NEW_KEYS
} | {"latency_ms": {"p50": 12.25, "p95": 40.125, "p99": 80.5}}

TIMELINE = [
    {"t": 1.0, "items": 0, "failed": 0, "pilots_up": 1, "pilots_ready": 0},
    {"t": 2.0, "items": 0, "failed": 0, "pilots_up": 2, "pilots_ready": 1},
    {"t": 3.5, "items": 100, "failed": 1, "pilots_up": 2, "pilots_ready": 2},
    {"t": 6.0, "items": 600, "failed": 3, "pilots_up": 2, "pilots_ready": 2},
    {"t": 9.0, "items": 1100, "failed": 5, "pilots_up": 2, "pilots_ready": 2},
    {"t": 12.5, "items": 1500, "failed": 7, "pilots_up": 2, "pilots_ready": 2},
]

WORKFLOW = {"name": "digits", "model": {"name": "digits", "repository": "/work/model_repository"},
            "inputs": {"files": "data/images/*/*.png", "format": "image", "labels": "parent_dir"},
            "chunk_size": 128}


def write_campaign(run_dir: Path, summary: dict | None = None, timeline: list[dict] | None = TIMELINE,
                   workflow: dict | None = WORKFLOW) -> dict:
    """A campaign run folder as `dgaas-flow run` leaves it; returns the summary written."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = copy.deepcopy(SUMMARY if summary is None else summary)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if timeline is not None:
        (run_dir / "timeline.jsonl").write_text("".join(json.dumps(p) + "\n" for p in timeline))
    if workflow is not None:
        (run_dir / "workflow.json").write_text(json.dumps(workflow, indent=2))
    return summary


def scale_step(n: int, blocks: int, items_per_second: float, per_pilot: list[int]) -> dict[str, Any]:
    pilots = {f"http://127.0.0.1:{8000 + 10 * k}": items for k, items in enumerate(per_pilot)}
    return {
        "name": f"step-{n}", "blocks": blocks, "workers_per_node": 2, "workers": 2 * blocks, "run_dir": f"step-{n}",
        "items": sum(per_pilot), "failed": n - 1, "wall_seconds": 10.0 + n, "items_per_second": items_per_second,
        "latency_ms": {"p50": 5.0 * n, "p95": 9.0 * n, "p99": 12.5 * n, "mean": 6.0 * n, "max": 20.0 * n,
                       "histogram": [[1.0, 0], [5.0, 10], [10.0, 20 * n], [20.0, 5]]},
        "items_per_pilot": pilots, "pilots": len(per_pilot),
        "triton": [{"endpoint": url, "metrics_url": url + "/metrics", "requests": 10 * (k + 1), "failures": 0,
                    "inferences": items, "executions": 5 * (k + 1), "avg_batch": items / (5 * (k + 1)),
                    "queue_ms_per_request": 0.5 * (k + 1), "compute_ms_per_execution": 2.0,
                    "gpu_utilization": None} for k, (url, items) in enumerate(pilots.items())],
    }


def write_scale(out: Path, steps: list[dict], with_step_dirs: int | None = None) -> dict:
    """A scale-test folder: scale.json, and an ordinary campaign run folder per step (the first
    `with_step_dirs` steps only, when given: the others did not run)."""
    out.mkdir(parents=True, exist_ok=True)
    scale = {"workflow": "digits", "provider": "local", "started_at": "2026-11-28T11:00:00+00:00", "steps": steps}
    (out / "scale.json").write_text(json.dumps(scale, indent=2))
    for step in steps[:with_step_dirs]:
        summary = copy.deepcopy(SUMMARY) | {
            "workflow": "digits", "items_total": step["items"] + step["failed"], "items_ok": step["items"],
            "items_failed": step["failed"], "items_per_second": step["items_per_second"],
            "latency_ms": step["latency_ms"], "triton": step["triton"],
            "pilots": [{"endpoint": url, "items": n} for url, n in step["items_per_pilot"].items()],
            "failures_by_reason": {"TimeoutError": step["failed"]} if step["failed"] else {},
        }
        write_campaign(out / step["run_dir"], summary)
    return scale


class Page(HTMLParser):
    """The parts of a report page the tests read: tables by id (rows of cell texts), images, links,
    elements' texts by id, and the page's text (text nodes joined as they are)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []
        self.by_id: dict[str, str] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._open_ids: list[tuple[str, str, list[str]]] = []  # (tag, id, texts)
        self._depth: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "a":
            self.links.append(a)
        if "id" in a and tag not in ("img",):
            self._open_ids.append((tag, a["id"], []))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            _, ident, texts = self._open_ids.pop()
            self.by_id[ident] = "".join(texts)

    def handle_data(self, data: str) -> None:
        if self.lasttag != "style":
            self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        for _, _, texts in self._open_ids:
            texts.append(data)

    @property
    def visible(self) -> str:
        return " ".join("".join(self.text).split())

    def column(self, table: str, header: str) -> list[str]:
        rows = self.tables[table]
        k = rows[0].index(header)
        return [row[k] for row in rows[1:]]


def number(text: str) -> float:
    """A number as the page shows it (thousands separators, maybe a unit)."""
    return float(text.replace(",", "").split()[0])
