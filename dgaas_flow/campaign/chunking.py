"""How many items each task of a campaign gets (`chunk_size`, a number or `auto`).

A Parsl task costs about a millisecond across the driver, the interchange and the worker, so a
chunk should hold several of the server's requests; but each worker's first chunk is what its first
result waits for, and a campaign's last chunks are what its end waits for. `auto` sizes chunks by
the model's `max_batch_size` (one full request) and grows them after each worker's first."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from pathlib import Path

from dgaas_flow.specs import Workflow

GROWTH = 8  # requests in a grown chunk: Parsl's cost per task falls to a few percent of a tiny model's
UNKNOWN_BATCH = 256  # when the driver cannot read the model's config.pbtxt (the repository is on the nodes)
MAX_BATCH_SIZE = re.compile(r"^\s*max_batch_size\s*:\s*(\d+)", re.MULTILINE)


def max_batch_size(repository: Path, model: str) -> int | None:
    """The model's max_batch_size from its config.pbtxt (a top-level field), where the driver can read
    it; None where it cannot, or where the model takes no batches (0)."""
    try:
        found = MAX_BATCH_SIZE.search((repository / model / "config.pbtxt").read_text())
    except OSError:
        return None
    return (int(found.group(1)) or None) if found else None


def base_size(wf: Workflow) -> int:
    """A chunk of one full request: the workflow's own number, or under `auto` the model's batch."""
    if wf.chunk_size != "auto":
        return wf.chunk_size
    return max_batch_size(wf.model.repository, wf.model.name) or UNKNOWN_BATCH


def steady_size(wf: Workflow, items: int | None) -> int:
    """The size of the chunks after each worker's first, for about `items` items still to do: under
    `auto`, GROWTH requests' worth, but no more than gives every worker two chunks (the last ones
    end together)."""
    base = base_size(wf)
    if wf.chunk_size != "auto":
        return base
    if items is None:
        return base * GROWTH
    return max(base, min(base * GROWTH, math.ceil(items / (2 * wf.provider.max_workers))))


def chunk_sizes(wf: Workflow, items: int | None) -> Iterator[int]:
    """The sizes of a campaign's chunks, in order. Under `auto`, one request's worth for each
    worker's first chunk (the first results come as soon as they can), then `steady_size`."""
    steady = itertools.repeat(steady_size(wf, items))
    if wf.chunk_size != "auto":
        return steady
    return itertools.chain(itertools.repeat(base_size(wf), wf.provider.max_workers), steady)
