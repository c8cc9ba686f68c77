"""summary.json: what a campaign did (counts of the whole run folder, this run's speed, each
pilot's items, restarts and Triton figures), the requests and latency of every run of the folder
(`segments`, one per call, a resumed run adding its own to those its folder had), and its readable
form."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dgaas_flow.campaign.files import MANIFEST, PARTS, RESULTS, SUMMARY
from dgaas_flow.campaign.session import Session
from dgaas_flow.campaign.sink import Tally
from dgaas_flow.campaign.stats import Latencies, RunStats
from dgaas_flow.pilot import metrics
from dgaas_flow.pilot.endpoint import Endpoint, pilots_since, read_registry
from dgaas_flow.specs import Workflow

logger = logging.getLogger(__name__)

SEGMENT_KEYS = ("started_at", "complete", "items", "failed", "resumed", "wall_seconds", "items_per_second",
                "steady_items_per_second", "time_to_first_result_s", "requests", "latency_ms", "latency_hdr",
                "latency_sum_us")


def earlier_segments(out_dir: Path) -> list[dict[str, Any]]:
    """The runs of a folder before this one, from its summary.json: its `segments`, or, for a summary
    written before they existed, its own figures as one segment (its latency then known by its
    histogram's buckets only). Nothing when there is no summary or it cannot be read (said in the log)."""
    path = out_dir / SUMMARY
    if not path.exists():
        return []
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        logger.warning("%s cannot be read (%s): the runs before this one are left out of its summary", path, exc)
        return []
    if not isinstance(earlier, dict):
        return []
    segments = earlier.get("segments")
    if isinstance(segments, list):
        return [s for s in segments if isinstance(s, dict)]
    if "items_this_run" not in earlier:
        return []
    segment = {"started_at": earlier.get("started_at"), "complete": earlier.get("complete"),
               "items": earlier.get("items_this_run"), "failed": None, "resumed": earlier.get("items_resumed"),
               **{k: earlier.get(k) for k in SEGMENT_KEYS[5:10]}, "latency_ms": earlier.get("latency_ms")}
    return [segment]


def _merged_latency(segments: list[dict[str, Any]], this_run: Latencies) -> tuple[Latencies, bool]:
    """Every segment's latencies in one histogram, and whether that is exact (every segment kept its
    encoded histogram, or had no requests)."""
    merged, exact = Latencies(), True
    merged.merge(this_run.encode(), this_run.sum_us)
    for s in segments:
        if isinstance(s.get("latency_hdr"), str):
            merged.merge(s["latency_hdr"], s.get("latency_sum_us") or 0)
        elif s.get("requests"):
            latency = s.get("latency_ms") if isinstance(s.get("latency_ms"), dict) else {}
            buckets = latency.get("histogram")
            if isinstance(buckets, list):
                merged.merge_buckets(buckets, latency.get("mean"))
            exact = False
    return merged, exact


def this_segment(stats: RunStats, complete: bool) -> dict[str, Any]:
    """This run's own figures, as `segments` keeps them."""
    wall = stats.wall_s
    latency = stats.latencies.summary()
    latency.pop("histogram")
    return {
        "started_at": stats.started_at, "complete": complete, "items": stats.items, "failed": stats.failed,
        "resumed": stats.resumed, "wall_seconds": round(wall, 3),
        "items_per_second": round(stats.items / wall, 2) if wall > 0 else 0.0,
        "steady_items_per_second": stats.steady_rate(),
        "time_to_first_result_s": round(stats.first_result_s, 3) if stats.first_result_s is not None else None,
        "requests": stats.latencies.count, "latency_ms": latency, "latency_hdr": stats.latencies.encode(),
        "latency_sum_us": stats.latencies.sum_us,
    }


def summarize(wf: Workflow, out_dir: Path, total: int | None, stats: RunStats, tally: Tally, session: Session,
              before: dict[tuple, Endpoint], fresh: set[tuple] | None, earlier_runs: list[dict[str, Any]] | None = None,
              complete: bool = True) -> dict[str, Any]:
    """Counts are of the results (the whole campaign, resumed runs included); `requests` and
    `latency_ms` are of every run of the folder (the `earlier_runs` segments and this run's); speed,
    restarts and Triton's figures are this run's: for each pilot of the session that was up during
    it, the counters as it ended (`fresh`: current then; None: final, the pilots have stopped) less
    those it had published when it began (`before`)."""
    per_pilot = tally.pilots.copy()
    wall = stats.wall_s
    gone = ("stopped", "failed")
    this_run = [e for e in pilots_since(session.registry, session.started_at)
                if e.key not in before or before[e.key].state not in gone]
    up = {e.key for e in this_run}
    pilots, triton = [], []
    for e in read_registry(session.registry):
        served = per_pilot.pop(e.http_url or "", 0) + per_pilot.pop(e.grpc_url or "", 0)
        earlier = before.get(e.key)
        pilots.append({"endpoint": e.http_url, "grpc": e.grpc_url, "host": e.host, "block": e.block,
                       "batch_job": e.batch_job, "gpus": e.gpus, "state": e.state, "items": served,
                       "restarts": e.restarts - (earlier.restarts if earlier else 0)})
        if e.key in up and e.metrics:
            counted = metrics.subtract(e.metrics, earlier.metrics if earlier else {})
            entry = {"endpoint": e.http_url, "metrics_url": e.metrics_url, **metrics.describe(counted)}
            if fresh is not None and e.key not in fresh:
                entry["stale"] = True  # the pilot did not answer: its counters as it last published them
            triton.append(entry)
    pilots += [{"endpoint": url, "items": n} for url, n in per_pilot.items()]
    p = wf.provider
    nodes = len(this_run) or p.init_blocks * p.nodes_per_block  # a pilot per node; none: a gateway's
    segments = [*(earlier_runs or []), this_segment(stats, complete)]
    latencies, exact = _merged_latency(earlier_runs or [], stats.latencies)
    summary: dict[str, Any] = {
        "workflow": wf.name,
        "provider": wf.provider.name,
        "model": wf.model.name,
        "out_dir": str(out_dir),
        "started_at": stats.started_at,
        "items_total": total,
        "items_ok": tally.ok,
        "items_failed": tally.failed,
        "items_this_run": stats.items,
        "items_resumed": stats.resumed,
        "wall_seconds": round(wall, 3),
        "items_per_second": round(stats.items / wall, 2) if wall > 0 else 0.0,
        "steady_items_per_second": stats.steady_rate(),
        "time_to_first_result_s": round(stats.first_result_s, 3) if stats.first_result_s is not None else None,
        "time_to_last_result_s": round(stats.last_result_s, 3) if stats.last_result_s is not None else None,
        "requests": latencies.count,
        "requests_this_run": stats.latencies.count,
        "latency_ms": latencies.summary(),
        **({} if exact else {"latency_exact": False}),
        "blocks": len({e.block for e in this_run}) or p.init_blocks,
        "workers": nodes * p.workers_per_node,
        "pilots": pilots,
        "restarts": sum(p.get("restarts", 0) for p in pilots),
        "triton": triton,
        "failures_by_reason": dict(tally.reasons.most_common(10)),
        "results": f"{PARTS}/{MANIFEST}" if wf.outputs.format == "parquet" else RESULTS,
        "complete": complete,
        "segments": segments,
    }
    if tally.labelled:
        summary["accuracy"] = round(tally.correct / tally.labelled, 4)
    return summary


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"workflow {s['workflow']} on provider {s['provider']}: "
        f"{s['items_ok']}/{s['items_total'] if s['items_total'] is not None else '?'} items ok, "
        f"{s['items_failed']} failed"
        + (f", {s['items_resumed']} resumed from an earlier run" if s["items_resumed"] else ""),
        f"  this run: {s['items_this_run']} items in {s['wall_seconds']:.1f} s "
        f"({s['items_per_second']:.1f} items/s), {s.get('requests_this_run', s['requests'])} requests",
    ]
    if s["time_to_first_result_s"] is not None:  # one shape whatever the timing: scripts and the docs match it
        last = s.get("time_to_last_result_s")
        lines.append(f"  first result after {s['time_to_first_result_s']:.1f} s"
                     + (f", the last after {last:.1f} s" if last is not None else ""))
        if s["steady_items_per_second"]:
            lines.append(f"  between them: {s['steady_items_per_second']:.1f} items/s")
    lat = s["latency_ms"]
    runs = len(s.get("segments") or ())
    if lat["p50"] is not None:
        lines.append(
            f"  request latency ms: p50 {lat['p50']:.2f}  p95 {lat['p95']:.2f}  p99 {lat['p99']:.2f}"
            + (f"  ({s['requests']} requests over {runs} runs of this folder)" if runs > 1 else "")
        )
    if "accuracy" in s:
        lines.append(f"  accuracy: {s['accuracy']:.4f}")
    for p in s["pilots"]:
        extra = f" on {p['host']} block {p['block']}, restarts {p['restarts']}" if "host" in p else ""
        lines.append(f"  pilot {p['endpoint']}{extra}: {p['items']} items")
    for t in s["triton"]:
        if t["requests"]:
            lines.append(f"  triton {t['endpoint']}: {t['requests']} requests, batch {t['avg_batch']} on average, "
                         f"queue {t['queue_ms_per_request']} ms/request, compute {t['compute_ms_per_execution']} "
                         f"ms/execution" + (" (as last published: the pilot did not answer)" if t.get("stale") else ""))
            models = t.get("models") or {}
            for model, m in models.items() if len(models) > 1 else ():
                lines.append(f"    model {model}: {m['requests']} requests, batch {m['avg_batch']} on average, "
                             f"queue {m['queue_ms_per_request']} ms/request")
    for reason, n in s["failures_by_reason"].items():
        lines.append(f"  failed: {n} x {reason}")
    lines.append(f"  results: {s['out_dir']}/{s.get('results', RESULTS)}   summary: {s['out_dir']}/{SUMMARY}")
    return "\n".join(lines)
