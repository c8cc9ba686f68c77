"""One benchmark: prepare the items and the workflow copy, then measure the paths asked for."""

from __future__ import annotations

import argparse
import os
import time

from dgaas_flow.campaign.chunking import steady_size
from dgaas_flow.specs import load_workflow

from .campaign import run_dgaas, warm_session
from .ceiling import recheck_ceiling, run_ceiling
from .floor import run_floor
from .models import ModelCase, bench_workflow, load_rows
from .naive import run_naive
from .progress import say
from .run import Run

PATHS = ("ceiling", "dgaas", "warm", "naive", "floor")
WARMUP_ITEMS = 10_000  # the warm path's first campaign: enough for every worker's first chunks


def median_of(tries: list[dict]) -> dict:
    """The try of median rate (the lower of the middle two for an even count), with every try's rate:
    a warm campaign of 100k digits lasts a sixth of a second, and one such sample on a shared machine
    moves by a tenth from one campaign to the next."""
    ranked = sorted(tries, key=lambda t: t["items_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "repeats_items_per_s": [t["items_per_s"] for t in tries]}


def run_one(case: ModelCase, n: int, workers: int, paths: set[str], args: argparse.Namespace,
            ceilings: dict[int, dict]) -> Run:
    """Measure `paths` for one model, item count and worker count. The ceiling does not depend on the
    workers: it is measured once per item count and kept in `ceilings`."""
    items_dir = args.work / case.name / f"items-{n}"
    case.write_items(items_dir, n)
    folder = args.work / case.name / f"n{n}-w{workers}"
    wf_path = bench_workflow(case, items_dir, workers, folder, args.chunk_size, args.outputs)
    wf = load_workflow(wf_path)
    run = Run(case.name, n, workers, wf.chunk_size, [round(x, 2) for x in os.getloadavg()])
    t0 = time.perf_counter()
    rows = load_rows(items_dir) if "ceiling" in paths else None
    if rows is not None:
        if n not in ceilings:
            ceilings[n] = run_ceiling(wf, rows, folder / "ceiling", args)
        run.ceiling = dict(ceilings[n])
        say(f"{case.name} {n} items: ceiling {run.ceiling['items_per_s']:.0f} items/s "
            f"({run.ceiling['protocol']}, batch {run.ceiling['batch']}, {run.ceiling['procs']} processes)")
    if "dgaas" in paths:
        run.dgaas = run_dgaas(wf_path, folder, n)
        say(f"{case.name} {n} items, {workers} workers: dgaas {run.dgaas['items_per_s']:.0f} items/s "
            f"(steady {run.dgaas['steady_items_per_s']}), first result {run.dgaas['time_to_first_result_s']} s, "
            f"driver peak RSS {run.dgaas['driver_peak_rss_mb']} MB")
    if "warm" in paths:
        warmup = min(n, WARMUP_ITEMS)
        case.write_items(args.work / case.name / f"items-{warmup}", warmup)
        run.warm = median_of([c for _ in range(args.warm_repeats)
                              for c in warm_session(wf_path, args.work / case.name / f"items-{warmup}",
                                                    folder / "warm", args.warm_campaigns)])
        say(f"{case.name} {n} items, {workers} workers: warm {run.warm['items_per_s']:.0f} items/s, the median of "
            f"{run.warm['repeats_items_per_s']}, first result {run.warm['time_to_first_result_s']} s "
            f"after the campaign started, call {run.warm['call_wall_s']} s")
    if "naive" in paths:
        run.naive = run_naive(case, wf, folder, n)
        say(f"{case.name} {n} items, {workers} workers: naive {run.naive['items_per_s']:.0f} items/s "
            f"(load {run.naive['load_s_per_task']:.3f} s + infer {run.naive['infer_s_per_task']:.3f} s per task)")
    if "floor" in paths:
        chunk = steady_size(wf, n)
        run.floor = run_floor(wf, folder, max(args.floor_tasks, -(-n // chunk)), chunk)
        say(f"{case.name} {workers} workers: Parsl floor {run.floor['tasks_per_s']:.0f} empty tasks/s "
            f"(x chunk {chunk} = {run.floor['items_per_s']:.0f} items/s)")
    if rows is not None and len(paths) > 1:
        run.ceiling["after_items_per_s"] = recheck_ceiling(wf, rows, folder / "ceiling", run.ceiling, args)
        say(f"{case.name} {n} items: ceiling again after the other paths {run.ceiling['after_items_per_s']:.0f} "
            f"items/s")
    run.seconds = round(time.perf_counter() - t0, 1)
    return run
