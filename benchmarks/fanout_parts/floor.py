"""(4) the floor: empty Parsl tasks through the campaign's executor configuration. Tasks/s x chunk
size is the most items/s any Parsl app could move with these chunks."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from dgaas_flow.specs import Workflow

from .parsl_tasks import bounded, by_value, load_parsl, stop_parsl


def empty_task() -> None:
    """Nothing: what is left of a task is Parsl's own cost."""
    return None


def run_floor(wf: Workflow, folder: Path, tasks: int, chunk: int) -> dict[str, Any]:
    """Empty tasks/s after one warm-up task (the block started), at most the campaign's bound in flight."""
    from parsl import python_app

    app = python_app(by_value(empty_task))
    shutil.rmtree(folder / "floor", ignore_errors=True)
    dfk = load_parsl(wf, folder / "floor" / "parsl")
    try:
        app().result()  # the block is up and a worker answers: what follows is Parsl's cost per task
        count = [0]
        t0 = time.perf_counter()
        bounded(lambda _: app(), range(tasks), wf.in_flight_limit(), lambda _: count.__setitem__(0, count[0] + 1))
        wall = time.perf_counter() - t0
    finally:
        stop_parsl(dfk)
    return {"tasks": count[0], "seconds": round(wall, 3), "tasks_per_s": round(count[0] / wall, 1),
            "items_per_s": round(count[0] / wall * chunk, 1), "chunk_size": chunk}
