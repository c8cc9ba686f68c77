"""How many items each task of a campaign gets (`chunk_size`, a number or `auto`).

A Parsl task costs a few milliseconds across the driver, the interchange, the pool manager and the
worker, so a chunk should hold several of the server's requests; but each worker's first chunk is
what its first result waits for, and a campaign's last chunks are what its end waits for. `auto`
sizes chunks by the model's `max_batch_size` (one full request), grows them after each worker's
first, and grows them further for a model whose requests come back quickly (`ChunkSizes.observe`;
a session's later campaigns start from what its earlier ones saw)."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

from dgaas_flow.specs import Workflow

GROWTH = 8  # requests in a grown chunk: Parsl's cost per task falls to a few percent of a tiny model's
MAX_GROWTH = 16  # requests in a grown chunk of a fast model (digits: 12-16 best, 8 and 32 slower)
CHUNK_MS = 60.0  # the requests' time a grown chunk of a fast model holds, up to MAX_GROWTH of them
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


def growth(request_ms: float | None) -> int:
    """Requests in a grown chunk: GROWTH, or for requests seen to take `request_ms`, as many as fill
    CHUNK_MS, up to MAX_GROWTH (the last chunks end the campaign: they must stay short)."""
    if not request_ms or request_ms <= 0:
        return GROWTH
    return max(GROWTH, min(MAX_GROWTH, math.floor(CHUNK_MS / request_ms)))


def steady_size(wf: Workflow, items: int | None, request_ms: float | None = None) -> int:
    """The size of the chunks after each worker's first, for about `items` items still to do: under
    `auto`, `growth(request_ms)` requests' worth, but no more than gives every worker two chunks
    (the last ones end together)."""
    return _steady(wf, base_size(wf), items, request_ms)


def _steady(wf: Workflow, base: int, items: int | None, request_ms: float | None) -> int:
    """`steady_size` from a base size already read (a campaign reads config.pbtxt once)."""
    if wf.chunk_size != "auto":
        return base
    grown = base * growth(request_ms)
    return grown if items is None else max(base, min(grown, math.ceil(items / (2 * wf.provider.max_workers))))


class ChunkSizes:
    """The sizes of a campaign's chunks, in order, as `inputs.chunk_slices` draws them. Under
    `auto`, one request's worth for each worker's first chunk (the first results come as soon as
    they can), then `steady_size` for the requests' time the campaign has seen so far (the model's
    config.pbtxt read once, not for every chunk)."""

    def __init__(self, wf: Workflow, items: int | None):
        self.wf, self.items = wf, items
        self.base = base_size(wf)
        self.first = wf.provider.max_workers if wf.chunk_size == "auto" else 0
        self.request_ms: float | None = None

    def __iter__(self) -> ChunkSizes:
        return self

    def __next__(self) -> int:
        if self.first:
            self.first -= 1
            return self.base
        return _steady(self.wf, self.base, self.items, self.request_ms)

    def observe(self, latencies_ms: list[float]) -> None:
        """A finished chunk's request latencies: chunks made from now on are sized by them."""
        if latencies_ms:
            self.request_ms = statistics.median(latencies_ms)
