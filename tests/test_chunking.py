"""Chunk sizes: a workflow's own number, or `auto` from the model's max_batch_size."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np

from dgaas_flow import inputs
from dgaas_flow.campaign.chunking import UNKNOWN_BATCH, ChunkSizes, base_size, max_batch_size, steady_size
from dgaas_flow.specs import Workflow
from tests.conftest import DIGITS


def workflow(repository: Path, chunk_size: int | str = "auto", workers: int = 2, blocks: int = 1) -> Workflow:
    return Workflow.model_validate({
        "name": "w", "chunk_size": chunk_size, "model": {"name": "digits", "repository": str(repository)},
        "provider": {"kind": "local", "workers_per_node": workers, "max_blocks": blocks},
        "inputs": {"files": "/x/*.npy", "format": "rows"},
    })


def first(sizes, n: int) -> list[int]:
    return list(islice(sizes, n))


def test_a_number_is_every_chunks_size():
    assert first(ChunkSizes(workflow(DIGITS / "model_repository", 300), 100_000), 5) == [300] * 5


def test_auto_gives_each_worker_one_request_first_then_eight():
    """digits takes requests of 1,024: a full request for each of the 4 workers' first chunks, then
    8 requests a chunk, but never so large that a worker would get fewer than two."""
    wf = workflow(DIGITS / "model_repository", workers=2, blocks=2)
    assert max_batch_size(wf.model.repository, "digits") == 1024 == base_size(wf)
    assert first(ChunkSizes(wf, 1_000_000), 6) == [1024] * 4 + [8192] * 2
    assert first(ChunkSizes(wf, 40_000), 6) == [1024] * 4 + [5000] * 2  # 40,000 / (2 x 4 workers)
    assert first(ChunkSizes(wf, 1797), 6) == [1024] * 6  # never below one request
    assert first(ChunkSizes(wf, None), 5) == [1024] * 4 + [8192]
    assert steady_size(wf, 40_000) == 5000 and steady_size(workflow(wf.model.repository, 300), 40_000) == 300


def test_auto_grows_chunks_of_a_fast_model_as_its_requests_come_back():
    """Requests of 1.6 ms (digits here): chunks of 16 requests, not 8, from the next chunk made on;
    of 5 ms, 12 (60 ms of requests); of 40 ms (heavy), 8. A fixed size never changes."""
    wf = workflow(DIGITS / "model_repository")
    sizes = ChunkSizes(wf, 1_000_000)
    assert first(sizes, 3) == [1024, 1024, 8192]
    sizes.observe([1.7, 1.6, 1.5])
    assert first(sizes, 2) == [16_384] * 2
    sizes.observe([5.0])
    assert next(sizes) == 12_288
    sizes.observe([40.0, 38.0])
    assert next(sizes) == 8192
    sizes.observe([])  # a chunk whose requests all failed: the last figure stands
    assert next(sizes) == 8192
    small = ChunkSizes(wf, 40_000)  # never so large that a worker would get fewer than two chunks
    small.observe([1.0])
    assert first(small, 4) == [1024, 1024, 10_000, 10_000]
    fixed = ChunkSizes(workflow(DIGITS / "model_repository", 300), 100_000)
    fixed.observe([0.5])
    assert first(fixed, 3) == [300] * 3


def test_auto_without_a_readable_batch_size(tmp_path):
    (tmp_path / "digits").mkdir()
    assert base_size(workflow(tmp_path)) == UNKNOWN_BATCH  # no config.pbtxt here: the repository is on the nodes
    (tmp_path / "digits" / "config.pbtxt").write_text('name: "digits"\n# max_batch_size: 64\nmax_batch_size: 0\n')
    assert max_batch_size(tmp_path, "digits") is None and base_size(workflow(tmp_path)) == UNKNOWN_BATCH
    (tmp_path / "digits" / "config.pbtxt").write_text('name: "digits"\n  max_batch_size : 48\ninput [ ]\n')
    assert base_size(workflow(tmp_path)) == 48


def test_chunks_follow_the_sizes_in_turn(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((25, 2), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.zeros((7, 2), dtype=np.float32))
    runs = list(inputs.enumerate_slices(str(tmp_path / "*.npy"), "rows", "none"))
    chunks = list(inputs.chunk_slices(runs, iter([2, 2, 10, 10, 10])))
    assert [sum(r.count for r in c) for c in chunks] == [2, 2, 10, 10, 8]
    every = [i.id for run in runs for i in run.items()]
    assert [i.id for c in chunks for run in c for i in run.items()] == every
    assert [inputs.FileSlice(*json.loads(json.dumps(r.fields()))) for r in chunks[2]] == chunks[2]
