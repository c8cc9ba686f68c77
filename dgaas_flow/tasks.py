"""The Parsl app: infer one chunk of input items against the node's Triton server.

The app never raises for an item's own problem (an unreadable file, a wrong shape, a request
that failed every retry): each item comes back as exactly one result or one error. It raises
only when its worker is lost, and then Parsl retries the whole chunk.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from parsl import python_app

from dgaas_flow.client import ModelInfo, cached_client, drop_client, retryable, wait_until_ready
from dgaas_flow.errors import PilotError
from dgaas_flow.gateway.tokens import optional_auth_headers
from dgaas_flow.inputs import InputItem, Item, ItemReader
from dgaas_flow.pilot.discovery import resolve_endpoint


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


def _decode(row: np.ndarray, top_k: int) -> dict[str, Any]:
    if top_k == 0:
        return {"output": row.tolist()}
    classes = []
    for entry in row.reshape(-1)[:top_k]:
        text = entry.decode() if isinstance(entry, bytes) else str(entry)
        score, index, *label = text.split(":", 2)
        classes.append((label[0] if label else index, float(score)))
    result: dict[str, Any] = {"prediction": classes[0][0], "score": classes[0][1]}
    if top_k > 1:
        result["top"] = [list(c) for c in classes]
    return result


class _Session:
    """One task's view of its server: follows the endpoint across retries and restarts."""

    def __init__(self, req: InferRequest):
        self.req = req
        self.url: str | None = None
        self.headers: dict[str, str] | None = None

    def connect(self, fresh: bool = False):
        """The client of the server discovery finds; resolved again only after a failure (the
        server may have moved), not for every request."""
        if self.headers is None:
            self.headers = optional_auth_headers(self.req.token_file)
        if self.url is None or fresh:
            self.url = self._resolve()
        return cached_client(self.url, self.req.protocol, self.req.timeout_s, self.headers)

    def _resolve(self) -> str:
        # a pilot started with its workers may still be starting: its worst case is a `before`
        # step (e.g. an image pull) and a server start, each bounded by ready_timeout_s
        endpoint = resolve_endpoint(self.req.server_url, gateway=self.req.gateway,
                                    ready_timeout_s=2 * self.req.ready_timeout_s + 30)
        url = endpoint.url(self.req.protocol)
        if url is None:
            raise ValueError(f"the server found offers no {self.req.protocol} endpoint; "
                             f"set client.protocol to the other one")
        return url

    def call(self, fn):
        """Run fn(client), retrying transport failures with backoff and a fresh connection."""
        for attempt in range(self.req.retries + 1):
            client = self.connect()
            try:
                return fn(client)
            except Exception as exc:
                drop_client(client.url, client.protocol)
                if attempt == self.req.retries or not retryable(exc):
                    raise
                wait_until_ready(self.connect(fresh=True), self.req.backoff_s * 2**attempt)
        raise AssertionError("unreachable")


def infer_items(items: list[Item], req: InferRequest) -> dict[str, Any]:
    """Infer a chunk in-process: one entry per item, in order, plus per-request latencies."""
    session = _Session(req)
    block = os.environ.get("PARSL_WORKER_BLOCK_ID")  # set by Parsl's worker pool
    results: dict[str, dict[str, Any]] = {}
    latencies: list[float] = []
    try:
        info: ModelInfo = session.call(lambda c: c.model_info(req.model, req.version))
        input_info = info.input(req.input_tensor)
        output = info.output(req.output_tensor).name
    except PilotError:
        raise  # this node's pilot failed: Parsl retries the chunk on another block
    except Exception as exc:  # noqa: BLE001 - every item must get a recorded error, never vanish
        message = f"{type(exc).__name__}: {exc}"
        return {"results": [_error(i, message, session.url) for i, _, _ in items], "latencies_ms": []}

    ready_ids: list[str] = []
    blocks: list[np.ndarray] = []
    for ids, path, data in ItemReader(req.format).blocks(items):
        if isinstance(data, Exception):  # the reason leads, so failures_by_reason groups them
            results.update((i, _error(i, f"cannot read: {path}: {data}", None)) for i in ids)
        elif not input_info.accepts(data.shape[1:]):
            message = f"wrong shape: {path}: {list(data.shape[1:])}, model input {input_info.name} " \
                      f"takes {list(input_info.shape)}"
            results.update((i, _error(i, message, None)) for i in ids)
        else:
            blocks.append(data.astype(input_info.dtype, copy=False))
            ready_ids += ids
    inputs = _stack(blocks)

    batched = info.max_batch_size > 0
    size = min(req.batch_size or info.max_batch_size, info.max_batch_size) if batched else 1
    for start in range(0, len(ready_ids), size):
        group = ready_ids[start:start + size]
        t0 = time.perf_counter()
        try:
            batch = (np.stack(inputs[start:start + size]) if isinstance(inputs, list) else inputs[start:start + size]) \
                if batched else inputs[start]
            out = session.call(
                lambda c, b=batch: c.infer(req.model, req.version, b, input_info, output, req.top_k)
            )
        except Exception as exc:  # noqa: BLE001
            message = f"{type(exc).__name__}: {exc}"
            results.update((i, _error(i, message, session.url)) for i in group)
            continue
        ms = (time.perf_counter() - t0) * 1000.0
        latencies.append(ms)
        rows = out if batched else out[None]
        done = {"ok": True, "pilot": session.url, "block": block, "latency_ms": round(ms, 3)}
        for item_id, row in zip(group, rows, strict=True):
            results[item_id] = {"id": item_id, **_decode(row, req.top_k), **done}
    return {"results": [results[i] for i, _, _ in items], "latencies_ms": latencies}


def _error(item_id: str, message: str, pilot: str | None) -> dict[str, Any]:
    return {"id": item_id, "ok": False, "error": message, "pilot": pilot}


infer_chunk = python_app(infer_items)
infer_chunk.__doc__ = """Parsl app of `infer_items`: `infer_chunk(items, request)` returns an AppFuture."""


def label_record(record: dict[str, Any], label: str | None) -> dict[str, Any]:
    """The item's known label, and whether the prediction matched it (accuracy)."""
    if label is not None:
        record["label"] = label
        if record.get("ok") and "prediction" in record:
            record["correct"] = record["prediction"] == label
    return record


def encode_chunk(items: list[InputItem]) -> str:
    return json.dumps([[i.id, i.path, i.row, i.label] for i in items], separators=(",", ":"))


def encoded_outcome(records: list[dict[str, Any]], latencies_ms: list[float]) -> dict[str, Any]:
    """A chunk's records as the campaign appends them: JSON lines, with their counts."""
    return {"jsonl": "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records), "items": len(records),
            "failed": sum(1 for r in records if not r["ok"]), "latencies_ms": latencies_ms}


def infer_encoded(chunk: str, req: InferRequest) -> dict[str, Any]:
    """The campaign's app: a chunk in and its records out as JSON text, ready to append to
    results.jsonl. Parsl's serializer (dill, a pure-Python pickler) costs about 30 µs per Python
    object it moves, more than a small model's inference; one string each way costs almost
    nothing, and the records are encoded on the workers, in parallel, not in the driver."""
    items = json.loads(chunk)
    out = infer_items([(i, path, row) for i, path, row, _ in items], req)
    records = [label_record(record, label) for (_, _, _, label), record in zip(items, out["results"], strict=True)]
    return encoded_outcome(records, out["latencies_ms"])


infer_encoded_chunk = python_app(infer_encoded)
