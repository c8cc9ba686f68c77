"""Parsl on the campaign's own executor configuration, for the paths that run their tasks without
Triton (naive, floor): the same block, workers and bound on tasks in flight as a campaign."""

from __future__ import annotations

import builtins
import types
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from dgaas_flow.sites.executor import load
from dgaas_flow.specs import Workflow


def load_parsl(wf: Workflow, run_dir: Path) -> Any:
    """parsl.load with the campaign's configuration (its worker pools start by this interpreter's path)."""
    return load(wf.provider, run_dir, None, 0)


def stop_parsl(dfk: Any) -> None:
    """Stop the block and forget the DataFlowKernel, so that the next path can load its own."""
    import parsl

    dfk.cleanup()
    parsl.clear()


def bounded(submit: Callable[[Any], Future], jobs: Iterable, limit: int, on_done: Callable[[Any], None]) -> None:
    """Keep at most `limit` futures in flight, as the campaign does."""
    import concurrent.futures as cf

    in_flight: set = set()
    for job in jobs:
        while len(in_flight) >= limit:
            done, in_flight = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for f in done:
                on_done(f.result())
        in_flight.add(submit(job))
    for f in cf.as_completed(in_flight):
        on_done(f.result())


def by_value(task: Callable) -> Callable:
    """A copy of a self-contained task function that dill ships by value, as it ships a function of
    a script's __main__. dill sends a function of an importable module by reference, and Parsl's
    workers cannot import this package (it is not installed): the copy keeps the code and none of
    the module's globals."""
    copy = types.FunctionType(task.__code__, {"__builtins__": builtins}, task.__name__, task.__defaults__,
                              task.__closure__)
    copy.__module__ = "__main__"
    copy.__doc__ = task.__doc__
    return copy
