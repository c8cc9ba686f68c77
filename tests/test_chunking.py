"""Chunk sizes: a workflow's own number, or `auto` from the model's max_batch_size."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np

from dgaas_flow import inputs
from dgaas_flow.campaign.chunking import UNKNOWN_BATCH, base_size, chunk_sizes, max_batch_size, steady_size
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
    assert first(chunk_sizes(workflow(DIGITS / "model_repository", 300), 100_000), 5) == [300] * 5


def test_auto_gives_each_worker_one_request_first_then_eight():
    """digits takes requests of 1,024: a full request for each of the 4 workers' first chunks, then
    8 requests a chunk, but never so large that a worker would get fewer than two."""
    wf = workflow(DIGITS / "model_repository", workers=2, blocks=2)
    assert max_batch_size(wf.model.repository, "digits") == 1024 == base_size(wf)
    assert first(chunk_sizes(wf, 1_000_000), 6) == [1024] * 4 + [8192] * 2
    assert first(chunk_sizes(wf, 40_000), 6) == [1024] * 4 + [5000] * 2  # 40,000 / (2 x 4 workers)
    assert first(chunk_sizes(wf, 1797), 6) == [1024] * 6  # never below one request
    assert first(chunk_sizes(wf, None), 5) == [1024] * 4 + [8192]
    assert steady_size(wf, 40_000) == 5000 and steady_size(workflow(wf.model.repository, 300), 40_000) == 300


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
