"""Scale tests: the same workflow at growing numbers of pilots and client workers, to learn how
far a site and a model go. Each step is an ordinary campaign in its own folder (its blocks and
pilots start and stop with it), so every step has the full record a campaign has; scale.json
puts the steps side by side. A rerun keeps the steps that completed and redoes the rest."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dgaas_flow.campaign.chunking import base_size
from dgaas_flow.campaign.fanout import run_campaign, workflow_slices
from dgaas_flow.campaign.files import SCALE, STEP, SUMMARY
from dgaas_flow.errors import UserError
from dgaas_flow.inputs import FileSlice
from dgaas_flow.specs import ScaleStep, Workflow


def step_workflow(wf: Workflow, step: ScaleStep) -> Workflow:
    """The workflow with exactly step.blocks blocks (so pilots) and the step's workers."""
    provider = wf.provider.model_copy(update={
        "init_blocks": step.blocks, "min_blocks": step.blocks, "max_blocks": step.blocks,
        "workers_per_node": step.workers_per_node or wf.provider.workers_per_node,
    })
    step_wf = wf.model_copy(update={"provider": provider, "scale_test": None})
    step_wf._source = wf.source
    return step_wf


def step_runs(wf: Workflow, step: ScaleStep) -> Iterator[FileSlice]:
    """The inputs, cycled until the step has its items or its time (hold_s, start-up included);
    later rounds get ids suffixed #1, #2... so each inferred item keeps one line in results. Runs
    come in pieces of at most a chunk, so that the time is checked between chunks."""
    deadline = time.monotonic() + step.hold_s if step.hold_s else None
    size = base_size(wf)
    left = step.items if step.items is not None else math.inf
    for round_ in itertools.count():
        empty = True
        for run in workflow_slices(wf):
            for offset in range(0, run.count, size):
                if left <= 0 or (deadline and time.monotonic() > deadline):
                    return
                empty = False
                piece = run.part(offset, int(min(size, run.count - offset, left)))
                left -= piece.count
                yield replace(piece, suffix=f"#{round_}") if round_ else piece
        if empty:
            return


def step_record(name: str, step_wf: Workflow, summary: dict[str, Any]) -> dict[str, Any]:
    p = step_wf.provider
    pilots = [pilot for pilot in summary["pilots"] if "host" in pilot]
    return {
        "name": name, "run_dir": name, "blocks": p.init_blocks, "workers_per_node": p.workers_per_node,
        "workers": summary["workers"], "pilots": len(pilots), "items": summary["items_this_run"],
        "failed": summary["items_failed"], "wall_seconds": summary["wall_seconds"],
        "items_per_second": summary["steady_items_per_second"] or summary["items_per_second"],
        "time_to_first_result_s": summary["time_to_first_result_s"], "latency_ms": summary["latency_ms"],
        "items_per_pilot": {pilot["endpoint"]: pilot["items"] for pilot in summary["pilots"]},
        "restarts": summary["restarts"], "triton": summary["triton"],
        "queue_ms_per_execution": queue_ms_per_execution(summary["triton"]),
    }


def queue_ms_per_execution(triton: list[dict[str, Any]] | None) -> float | None:
    """The autoscaler's metric over a whole step: Triton's queue time per execution, all its
    pilots together (queue ms per request x requests / executions)."""
    queue_ms = executions = 0.0
    for t in triton or []:
        if t.get("queue_ms_per_request") is None or not t.get("executions"):
            continue
        queue_ms += t["queue_ms_per_request"] * (t.get("requests") or 0)
        executions += t["executions"]
    return round(queue_ms / executions, 3) if executions else None


BREAK_EVEN_WORKERS = (1, 2, 4, 8, 16, 32, 64, 128)


def break_even(steps: list[dict[str, Any]], target_ms: float) -> dict[str, Any]:
    """From steps of one pilot at growing client workers: the most clients one pilot serves with
    its queue time per execution at or below target_ms, and the items/s it then gives."""
    below = [s for s in steps if s["queue_ms_per_execution"] is not None and s["queue_ms_per_execution"] <= target_ms]
    crossed = next((s for s in steps if (s["queue_ms_per_execution"] or 0.0) > target_ms), None)
    best = below[-1] if below else None
    return {
        "target_ms": target_ms,
        "clients_per_pilot": best["workers"] if best else None,
        "items_per_second_per_pilot": best["items_per_second"] if best else None,
        "crossed_at_clients": crossed["workers"] if crossed else None,
        "crossed": crossed is not None,
    }


def run_break_even(wf: Workflow, target_ms: float, out: str | Path | None = None, progress: str = "auto",
                   stop: threading.Event | None = None, items: int = 5000,
                   workers: tuple[int, ...] = BREAK_EVEN_WORKERS) -> dict[str, Any]:
    """Ramp client workers against one pilot (one block) until its queue time per execution
    crosses target_ms; scale.json gets `break_even` (clients per pilot, items/s per pilot), the
    ratio an autoscaler can plan with."""
    steps = [ScaleStep(blocks=1, workers_per_node=w, items=items) for w in workers]
    scale = run_scale_test(wf, out, progress, stop, steps=steps,
                           until=lambda record: (record["queue_ms_per_execution"] or 0.0) > target_ms)
    scale["break_even"] = break_even(scale["steps"], target_ms)
    (wf.out_dir(out) / SCALE).write_text(json.dumps(scale, indent=2) + "\n")
    return scale


def run_scale_test(wf: Workflow, out: str | Path | None = None, progress: str = "auto",
                   stop: threading.Event | None = None, steps: list[ScaleStep] | None = None,
                   until: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """The workflow's scale_test steps (or `steps`), in order; `until(step record)` true ends
    the ramp after that step."""
    if steps is None and wf.scale_test is None:
        raise UserError(f"{wf.source}: scale_test: not set; add e.g. `scale_test: {{steps: [{{blocks: 1, "
                        "items: 5000}, {blocks: 2, items: 5000}]}}` to the workflow")
    out_dir = wf.out_dir(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale: dict[str, Any] = {"workflow": wf.name, "provider": wf.provider.name, "model": wf.model.name,
                             "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "steps": []}
    for n, step in enumerate(steps if steps is not None else wf.scale_test.steps, 1):  # type: ignore[union-attr]
        name, step_wf = f"step-{n}", step_workflow(wf, step)
        run_dir = out_dir / name
        summary = _completed(run_dir, step)
        if summary is None:
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            (run_dir / STEP).write_text(step.model_dump_json())
            summary = run_campaign(step_wf, out=run_dir, progress=progress, stop=stop,
                                   runs=step_runs(wf, step), total=step.items)
        scale["steps"].append(step_record(name, step_wf, summary))
        (out_dir / SCALE).write_text(json.dumps(scale, indent=2) + "\n")
        if until is not None and until(scale["steps"][-1]):
            break
    return scale


def _completed(run_dir: Path, step: ScaleStep) -> dict[str, Any] | None:
    """The summary of this step from an earlier run, if that run completed the same step."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
        same = ScaleStep.model_validate_json((run_dir / STEP).read_text()) == step
    except (OSError, ValueError):
        return None
    return summary if same and summary.get("complete") else None


def format_scale(scale: dict[str, Any]) -> str:
    lines = [f"scale test of {scale['workflow']} on provider {scale['provider']}",
             f"  {'step':<8}{'pilots':>7}{'workers':>8}{'items':>9}{'failed':>7}{'items/s':>10}"
             f"{'p50 ms':>9}{'p99 ms':>9}{'batch':>7}"]
    for s in scale["steps"]:
        lat = s["latency_ms"]
        batches = [t["avg_batch"] for t in s["triton"] if t["avg_batch"]]
        lines.append(
            f"  {s['name']:<8}{s['pilots']:>7}{s['workers']:>8}{s['items']:>9}{s['failed']:>7}"
            f"{s['items_per_second']:>10.1f}{_ms(lat['p50']):>9}{_ms(lat['p99']):>9}"
            f"{(f'{sum(batches) / len(batches):.1f}' if batches else '-'):>7}"
        )
    if scale.get("break_even"):
        b = scale["break_even"]
        lines.append(f"  break-even at {b['target_ms']:g} ms queue/execution: {b['clients_per_pilot'] or '-'} clients "
                     f"per pilot, {b['items_per_second_per_pilot'] or '-'} items/s per pilot"
                     + ("" if b["crossed"] else " (not crossed: more clients would still fit)"))
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"
