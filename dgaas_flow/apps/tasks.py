"""The Parsl app: infer one chunk of input items against the node's Triton server.

The app never raises for an item's own problem (an unreadable file, a wrong shape, a request
that failed every retry): each item comes back as exactly one result or one error. It raises
only when its worker is lost, and then Parsl retries the whole chunk.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from parsl import python_app

from dgaas_flow.apps.client import ModelInfo, PilotClient, TensorInfo, TritonClient
from dgaas_flow.campaign import records
from dgaas_flow.errors import PilotError
from dgaas_flow.inputs import ChunkReader, FileSlice, Item

# What a task infers: (quoted ids, path, their array or why it cannot be read, their known label).
ReadSlice = tuple[list[str], str, np.ndarray | Exception, str | None]


@dataclass(frozen=True)
class InferRequest:
    """What every task of a campaign needs to know; small, so it travels with each task."""

    model: str
    version: str = ""
    input_tensor: str | None = None
    output_tensor: str | None = None
    top_k: int = 1
    format: str = "image"
    protocol: str = "http"
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5
    batch_size: int | None = None
    server_url: str | None = None
    gateway: str | None = None
    token_file: str | None = None
    ready_timeout_s: float = 120.0

    @classmethod
    def from_workflow(cls, wf: Any) -> InferRequest:
        return cls(
            model=wf.model.name, version=wf.model.version, input_tensor=wf.inputs.tensor,
            output_tensor=wf.outputs.tensor, top_k=wf.outputs.top_k, format=wf.inputs.format,
            protocol=wf.client.protocol, timeout_s=wf.client.timeout_s, retries=wf.client.retries,
            backoff_s=wf.client.backoff_s, batch_size=wf.client.batch_size, server_url=wf.server.url,
            gateway=wf.server.gateway, token_file=str(wf.client.token_file) if wf.client.token_file else None,
            ready_timeout_s=wf.triton.ready_timeout_s,
        )


def _stack(blocks: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """All items as one array, sliced into requests without copies; a list of single items when
    their shapes differ (a model with variable dimensions), each request then stacking its own."""
    try:
        return np.concatenate(blocks) if blocks else np.empty(0)
    except ValueError:
        return [row for block in blocks for row in block]


def infer_lines(blocks: Iterable[ReadSlice], req: InferRequest) -> dict[str, Any]:
    """Infer a chunk in-process: its results.jsonl lines, one per item in the blocks' order (see
    dgaas_flow.campaign.records), with their counts and the requests' latencies."""
    server = PilotClient.for_request(req)
    block = os.environ.get("PARSL_WORKER_BLOCK_ID")  # set by Parsl's worker pool
    ids: list[str] = []
    labels: list[str | None] = []
    read: list[tuple[range, str, np.ndarray | Exception]] = []
    for block_ids, path, data, label in blocks:
        read.append((range(len(ids), len(ids) + len(block_ids)), path, data))
        ids += block_ids
        labels += [label] * len(block_ids)
    chunk = records.ChunkRecords(ids, labels)

    try:
        info: ModelInfo = server.call(lambda c: c.model_info(req.model, req.version))
        input_info = info.input(req.input_tensor)
        output = info.output(req.output_tensor).name
    except PilotError:
        raise  # this node's pilot failed: Parsl retries the chunk on another block
    except Exception as exc:  # noqa: BLE001 - every item must get a recorded error, never vanish
        chunk.fail(range(len(ids)), f"{type(exc).__name__}: {exc}", server.url)
        return chunk.outcome([])

    ready: list[int] = []  # positions of the items read, in the order of `inputs`
    arrays: list[np.ndarray] = []
    for positions, path, data in read:
        if isinstance(data, Exception):  # the reason leads, so failures_by_reason groups them
            chunk.fail(positions, f"cannot read: {path}: {data}", None)
        elif not input_info.accepts(data.shape[1:]):
            chunk.fail(positions, f"wrong shape: {path}: {list(data.shape[1:])}, model input {input_info.name} "
                            f"takes {list(input_info.shape)}", None)
        else:
            arrays.append(data.astype(input_info.dtype, copy=False))
            ready += positions
    inputs = _stack(arrays)

    latencies: list[float] = []
    batched = info.max_batch_size > 0
    size = min(req.batch_size or info.max_batch_size, info.max_batch_size) if batched else 1
    # a process learns the class names from its first item, sent alone: every class's string for a
    # whole batch would be a million strings for a model of 1,000 classes
    learn = batched and req.top_k > 0 and server.connect().class_names(req.model, req.version, output) is None
    start = 0
    while start < len(ready):
        span = slice(start, start + (1 if learn else size))
        start, learn = span.stop, False
        group = ready[span]
        t0 = time.perf_counter()
        try:
            batch = (np.stack(inputs[span]) if isinstance(inputs, list) else inputs[span]) if batched \
                else inputs[span.start]
            out, names = server.call(lambda c, b=batch: _values(c, req, b, input_info, output))
        except Exception as exc:  # noqa: BLE001
            chunk.fail(group, f"{type(exc).__name__}: {exc}", server.url)
            continue
        ms = (time.perf_counter() - t0) * 1000.0
        latencies.append(ms)
        chunk.succeed(group, out if batched else out[None], req.top_k, names, server.url, block, ms)
    return chunk.outcome(latencies)


def _values(
    client: TritonClient, req: InferRequest, batch: np.ndarray, input_info: TensorInfo, output: str
) -> tuple[np.ndarray, list[str]]:
    """The request's raw output and, when the workflow ranks classes, their names."""
    if not req.top_k:
        return client.infer(req.model, req.version, batch, input_info, output), []
    names = client.class_names(req.model, req.version, output)
    if names is None:
        return client.infer_classes(req.model, req.version, batch, input_info, output)
    return client.infer(req.model, req.version, batch, input_info, output), names


def infer_items(items: list[Item], req: InferRequest) -> dict[str, Any]:
    """Infer a chunk in-process: {"results": one record (a dict) per item, in order, "latencies_ms":
    per request}. For your own scripts; a campaign appends `infer_lines`'s text as it is."""
    blocks = ((records.quote(ids), path, data, None) for ids, path, data in ChunkReader(req.format).blocks(items))
    out = infer_lines(blocks, req)
    return {"results": [json.loads(line) for line in out["jsonl"].splitlines()],
            "latencies_ms": out["latencies_ms"]}


infer_chunk = python_app(infer_items)
infer_chunk.__doc__ = """Parsl app of `infer_items`: `infer_chunk(items, request)` returns an AppFuture."""


def encode_chunk(runs: list[FileSlice]) -> str:
    return json.dumps([run.fields() for run in runs], separators=(",", ":"))


def infer_encoded(chunk: str, req: InferRequest) -> dict[str, Any]:
    """The campaign's app: a chunk's runs in and its records out as JSON lines, ready to append to
    results.jsonl. Parsl's serializer (dill, a pure-Python pickler) costs about 30 µs per Python
    object it moves, more than a small model's inference; one string in and one bytes object out
    cost little (see records.ChunkRecords.outcome), and the records are encoded on the workers, in
    parallel, not in the driver."""
    reader = ChunkReader(req.format)
    runs = [FileSlice(*fields) for fields in json.loads(chunk)]
    return infer_lines(
        ((run.quoted_ids(), run.path, reader.read(run.path, run.start, run.count), run.label) for run in runs), req)


infer_encoded_chunk = python_app(infer_encoded)
