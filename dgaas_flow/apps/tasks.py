"""The Parsl app: infer one chunk of input items against the node's Triton server.

What flows from reader to task to client to records is a batch of **named arrays**: the reader
gives the data's fields, the `preprocess` hook (if any) turns them into other named arrays, the
workflow's `inputs.tensors` maps them onto the model's inputs, each tensor is cast to its model
type item by item (an item whose values do not fit is that item's error), the kept outputs come
back by name, and the `postprocess` hook (if any) makes result columns of inputs and outputs.

A chunk is read one request at a time, so a worker holds one request's items, never the chunk's.
The app never raises for an item's own problem (an unreadable file, a wrong shape, a bad value, a
hook that raised, a request that failed every retry): each item comes back as exactly one result
or one error. It raises only when its worker is lost, and then Parsl retries the whole chunk.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from parsl import python_app

from dgaas_flow.apps.client import Connection, ModelInfo, PilotClient, TensorInfo, client_for, fit_shape
from dgaas_flow.campaign import records
from dgaas_flow.errors import PilotError
from dgaas_flow.inputs import ChunkReader, FileSlice, Item, quoted_ids
from dgaas_flow.inputs.base import Batch

Hook = str | Callable[..., Any] | None


@dataclass(frozen=True, kw_only=True)
class InferRequest(Connection):
    """What every task of a campaign needs to know; small, so it travels with each task. Its
    Connection fields are how the task's client reaches the server.

    `inputs` is the workflow's input spec as a mapping (format and its fields; default: `format`
    with no options); `tensors` maps model inputs to the data's fields; `keep` names the outputs
    each result keeps (default all); `preprocess`/`postprocess` are hooks, `module:function` or
    plain callables; `hook_path` is where their modules (and a plugin reader's) are found first;
    `results` is what a chunk's results come back as: `jsonl` lines, or `parquet` columns (an Arrow
    IPC stream, see records.ChunkColumns)."""

    model: str
    version: str = ""
    input_tensor: str | None = None
    output_tensor: str | None = None
    top_k: int = 1
    format: str = "image"
    batch_size: int | None = None
    inputs: dict[str, Any] | None = field(default=None, hash=False)
    tensors: tuple[tuple[str, str], ...] | None = None
    keep: tuple[str, ...] | None = None
    preprocess: Hook = None
    postprocess: Hook = None
    hook_path: str | None = None
    results: str = "jsonl"

    @classmethod
    def from_workflow(cls, wf: Any, fallback: str | None = None) -> InferRequest:
        """`fallback`: the session's pilot settings, used when the workflow asks for a local fallback."""
        spec = wf.inputs.model_dump(mode="json", exclude={"files", "labels", "tensor", "tensors"})
        return cls(
            model=wf.model.name, version=wf.model.version, input_tensor=wf.inputs.tensor,
            output_tensor=wf.outputs.tensor, top_k=wf.outputs.top_k, format=wf.inputs.format,
            protocol=wf.client.protocol, timeout_s=wf.client.timeout_s, retries=wf.client.retries,
            backoff_s=wf.client.backoff_s, batch_size=wf.client.batch_size, server_url=wf.server.url,
            gateway=wf.server.gateway, token_file=str(wf.client.token_file) if wf.client.token_file else None,
            ready_timeout_s=wf.triton.ready_timeout_s, inputs={"files": "", **spec},
            fallback=fallback if wf.client.fallback == "local" else None,
            tensors=tuple(wf.inputs.tensors.items()) if wf.inputs.tensors else None,
            keep=tuple(wf.outputs.keep) if wf.outputs.keep else None,
            preprocess=wf.preprocess, postprocess=wf.postprocess, hook_path=str(wf.base_dir),
            results=wf.outputs.format,
        )

    def reader_spec(self) -> dict[str, Any]:
        return self.inputs if self.inputs is not None else {"format": self.format, "files": ""}


@dataclass(frozen=True, slots=True)
class Source:
    """Consecutive items of one file as a task reads them: their quoted ids (None where the results
    need none: a campaign's lines are made where the ids are), the file, the first row (None: a
    whole-file item), how many, their label, and why they cannot be read at all, if so."""

    ids: list[str] | None
    path: str
    start: int | None
    count: int
    label: str | None = None
    problem: str | None = None


# --------------------------------------------------------------------------------------------
# hooks


_HOOKS: dict[str, Callable[..., Any]] = {}


def load_hook(hook: Hook, hook_path: str | None = None) -> Callable[..., Any] | None:
    """A hook as a callable: itself, or `module:function` imported (the workflow's folder first)."""
    if hook is None or callable(hook):
        return hook
    if hook not in _HOOKS:
        if hook_path and hook_path not in sys.path:
            sys.path.insert(0, hook_path)
        module, _, name = hook.partition(":")
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{hook} is not callable")
        _HOOKS[hook] = obj
    return _HOOKS[hook]


# --------------------------------------------------------------------------------------------
# named arrays -> the model's tensors


def bind(batch: Batch, info: ModelInfo, req: InferRequest) -> dict[str, np.ndarray]:
    """The model's inputs from the data's fields: `inputs.tensors`; else the only field to the only
    input (or to `inputs.tensor`); else each input from the field of its name."""
    names = [t.name for t in info.inputs]
    if req.tensors:
        mapping = dict(req.tensors)
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ValueError(f"inputs.tensors names {unknown}, which the model does not take (it takes {names})")
        unmapped = [n for n in names if n not in mapping]
        if unmapped:
            raise ValueError(f"model input {unmapped} has no source: add it to inputs.tensors")
    elif len(batch) == 1 and (len(names) == 1 or req.input_tensor):
        mapping = {req.input_tensor or names[0]: next(iter(batch))}
        if mapping.keys() - set(names):
            raise ValueError(f"the model has no input {req.input_tensor!r} (it has {names})")
    elif req.input_tensor and len(names) == 1:
        mapping = {names[0]: req.input_tensor}
    else:
        mapping = {n: n for n in names}
    missing = {t: f for t, f in mapping.items() if f not in batch}
    if missing:
        t, f = next(iter(missing.items()))
        raise ValueError(f"no field {f!r} for model input {t} (the data has {sorted(batch)}); map it with "
                         "inputs.tensors")
    return {t: batch[f] for t, f in mapping.items()}


def safe_cast(array: np.ndarray, tensor: TensorInfo) -> tuple[np.ndarray, dict[int, str]]:
    """The array in the tensor's type, and the rows (items) whose values do not fit it, with why: a
    string, complex or object value, NaN or infinity, a value out of the type's range, or a fraction
    for an integer type. Every other row is converted exactly."""
    dtype, kind = tensor.dtype, array.dtype.kind
    n = len(array)
    if tensor.datatype == "BYTES":
        return array, {}
    if kind in "USOVMm":
        return array, dict.fromkeys(range(n), f"{array.dtype} values cannot be converted to {tensor.datatype}")
    if kind == "c":
        return array, dict.fromkeys(range(n), f"complex values cannot be converted to {tensor.datatype}")
    if kind in "biu" and np.can_cast(array.dtype, dtype, "safe"):  # every value fits: nothing to check
        return array.astype(dtype, copy=False), {}
    bad: dict[int, str] = {}
    flat = array.reshape(n, -1)

    def mark(rows: np.ndarray, why: str) -> None:
        for r in np.flatnonzero(rows).tolist():
            bad.setdefault(r, why)

    if kind == "f" and flat.size:
        # a finite sum: no NaN or infinity anywhere, the usual case, in one cheap pass. Else which rows:
        # x * 0 is 0 for a finite x and NaN for NaN or ±inf, one pass with no mask of every value
        # (einsum's own loop: a BLAS product would start threads that spin on cores the campaign needs)
        with np.errstate(invalid="ignore", over="ignore"):
            if not np.isfinite(flat.sum()):
                zero = np.zeros(flat.shape[1], flat.dtype)
                mark(np.isnan(np.einsum("ij,j->i", flat, zero)), "NaN or infinite values")
        if array.dtype == dtype:  # nothing else to check
            return array, bad
    if dtype.kind in "iu" and kind in "iuf" and flat.size:
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            low, high = flat.min(axis=1), flat.max(axis=1)
            mark((low < info.min) | (high > info.max), f"values outside {tensor.datatype}'s range "
                 f"[{info.min}, {info.max}]")
            if kind == "f":
                mark((flat != np.trunc(flat)).any(axis=1), f"fractional values for {tensor.datatype}")
    elif dtype.kind == "f" and kind == "f" and np.finfo(dtype).max < np.finfo(array.dtype).max and flat.size:
        with np.errstate(invalid="ignore"):
            mark((np.abs(flat) > np.finfo(dtype).max).any(axis=1), f"values beyond {tensor.datatype}'s range")
    elif dtype.kind == "b" and kind != "b":
        return array, dict.fromkeys(range(n), f"{array.dtype} values cannot be converted to BOOL")
    if array.dtype == dtype:
        return array, bad
    with np.errstate(invalid="ignore", over="ignore"):
        return array.astype(dtype), bad


def model_pixels(info: ModelInfo) -> int | None:
    """The most pixels an image item may have for the model's (only) input, when its dims are fixed."""
    if len(info.inputs) != 1:
        return None
    dims = list(info.inputs[0].shape)
    if len(dims) == 3:
        dims = dims[1:] if dims[0] in (1, 3, 4) else dims[:-1]
    return math.prod(dims) if dims and all(d > 0 for d in dims) else None


# --------------------------------------------------------------------------------------------
# a chunk


def _requests(sources: Sequence[Source], size: int, first: int) -> Iterator[list[tuple[int, Source, int, int]]]:
    """The chunk's items as requests of `size` (the first of `first`): each a list of (position of
    its first item in the chunk, source, offset in it, count)."""
    group: list[tuple[int, Source, int, int]] = []
    room, pos = first, 0
    for src in sources:
        offset = 0
        while offset < src.count:
            take = min(room, src.count - offset)
            group.append((pos + offset, src, offset, take))
            offset += take
            room -= take
            if room == 0:
                yield group
                group, room = [], size
        pos += src.count
    if group:
        yield group


class _Task:
    """One chunk's inference: what it reads, sends and records."""

    def __init__(self, req: InferRequest, info: ModelInfo, chunk: records.Chunk, reader: ChunkReader,
                 server: PilotClient, block: str | None):
        self.req, self.info, self.chunk, self.reader, self.server, self.block = req, info, chunk, reader, server, block
        self.pre = load_hook(req.preprocess, req.hook_path)
        self.post = load_hook(req.postprocess, req.hook_path)
        outputs = [t.name for t in info.outputs]
        kept = list(req.keep) if req.keep else outputs
        unknown = [k for k in kept + ([req.output_tensor] if req.output_tensor else []) if k not in outputs]
        if unknown:
            raise ValueError(f"the model has no output {unknown} (it has {outputs})")
        self.main = req.output_tensor or kept[0]
        self.requested = kept if self.main in kept else [self.main, *kept]
        self.extra = [k for k in kept if k != self.main]
        self.inputs = {t.name: t for t in info.inputs}
        # the request that learns the class names gets the ranked output's values parsed from text
        # (float64): it is cast back, so every request's values (and a hook's columns) keep one type
        main_type = next(t for t in info.outputs if t.name == self.main).datatype
        self.main_dtype = np.dtype(np.float32) if main_type == "BYTES" else next(
            t for t in info.outputs if t.name == self.main).dtype
        self.latencies: list[float] = []
        if hasattr(reader.reader, "model_pixels"):
            reader.reader.model_pixels = model_pixels(info)

    def read(self, pos: int, src: Source, offset: int, n: int) -> tuple[Sequence[int], dict[str, np.ndarray]] | None:
        """Items of one source as the model's tensors, cast; the items that cannot be are recorded
        as failed here."""
        positions = range(pos, pos + n)
        if src.problem is not None:
            self.chunk.fail(positions, f"cannot read: {src.path}: {src.problem}", None)
            return None
        data = self.reader.read(src.path, None if src.start is None else src.start + offset, n)
        if isinstance(data, Exception):  # the reason leads, so failures_by_reason groups them
            self.chunk.fail(positions, f"cannot read: {src.path}: {data}", None)
            return None
        try:
            if self.pre is not None:
                data = self.pre(dict(data))
                if not isinstance(data, dict) or any(len(v) != n for v in data.values()):
                    raise TypeError(f"it must return named arrays of {n} items")
                data = {k: np.asarray(v) for k, v in data.items()}
        except Exception as exc:  # noqa: BLE001 - a hook's failure is its batch's items' error
            self.chunk.fail(positions, f"preprocess failed: {src.path}: {type(exc).__name__}: {exc}", None)
            return None
        try:
            bound = bind(data, self.info, self.req)
        except ValueError as exc:
            self.chunk.fail(positions, f"wrong fields: {src.path}: {exc}", None)
            return None
        bad: dict[int, str] = {}
        tensors = {}
        for name, array in bound.items():
            tensor = self.inputs[name]
            array = fit_shape(array, tensor)
            if not tensor.accepts(array.shape[1:]):
                self.chunk.fail(positions, f"wrong shape: {src.path}: {list(array.shape[1:])}, model input {name} "
                                f"takes {list(tensor.shape)}", None)
                return None
            tensors[name], why = safe_cast(array, tensor)
            for row, reason in why.items():
                bad.setdefault(row, f"input {name}: {reason}")
        if not bad:
            return positions, tensors
        for row, reason in bad.items():
            self.chunk.fail([pos + row], f"bad value: {src.path}: {reason}", None)
        good = [r for r in range(n) if r not in bad]
        if not good:
            return None
        return [pos + r for r in good], {k: v[good] for k, v in tensors.items()}

    def run(self, group: list[tuple[int, Source, int, int]]) -> None:
        parts = [p for p in (self.read(*piece) for piece in group) if p is not None]
        by_shape: dict[tuple, list[tuple[Sequence[int], dict[str, np.ndarray]]]] = {}
        for positions, tensors in parts:  # a model of variable dims: items of one shape per request
            by_shape.setdefault(tuple((k, v.shape[1:]) for k, v in tensors.items()), []).append((positions, tensors))
        for same in by_shape.values():
            # one source's run of items stays a range: it is recorded as a slice, not item by item
            positions = same[0][0] if len(same) == 1 else [p for ps, _ in same for p in ps]
            tensors = {k: np.concatenate([t[k] for _, t in same]) if len(same) > 1 else same[0][1][k]
                       for k in same[0][1]}
            self.send(positions, tensors)

    def send(self, positions: Sequence[int], tensors: dict[str, np.ndarray]) -> None:
        batched = self.info.max_batch_size > 0
        if not batched:  # a model without a batch axis: one item per request
            for k, p in enumerate(positions):
                self.send_one([p], {name: t[k] for name, t in tensors.items()}, batched)
            return
        self.send_one(positions, tensors, batched)

    def send_one(self, positions: Sequence[int], tensors: dict[str, np.ndarray], batched: bool) -> None:
        req = self.req
        t0 = time.perf_counter()
        try:
            out, names = self.server.call(lambda c: c.infer_outputs(
                req.model, req.version, tensors, self.requested, self.main if req.top_k else None))
        except Exception as exc:  # noqa: BLE001
            self.chunk.fail(positions, f"{type(exc).__name__}: {exc}", self.server.url)
            return
        ms = (time.perf_counter() - t0) * 1000.0
        self.latencies.append(ms)
        if out[self.main].dtype != self.main_dtype and self.main_dtype.kind in "iuf":
            out[self.main] = out[self.main].astype(self.main_dtype)
        if not batched:
            out = {k: v[None] for k, v in out.items()}
            tensors = {k: v[None] for k, v in tensors.items()}
        extra = {k: out[k] for k in self.extra}
        if self.post is not None:
            try:
                columns = self.post(dict(tensors), dict(out))
                if not isinstance(columns, dict) or any(len(v) != len(positions) for v in columns.values()):
                    raise TypeError(f"it must return columns of {len(positions)} values")
                extra.update({k: np.asarray(v) for k, v in columns.items()})
            except Exception as exc:  # noqa: BLE001 - a hook's failure is its request's items' error
                self.chunk.fail(positions, f"postprocess failed: {type(exc).__name__}: {exc}", self.server.url)
                return
        self.chunk.succeed(positions, out[self.main], req.top_k, names or [], self.server.url, self.block, ms,
                           extra=extra or None)


def new_chunk(ids: list[str], labels: list[str | None], files: list[tuple[str, int | None, int]],
              results: str) -> records.Chunk:
    """Where a chunk's results are made: lines (jsonl), columns (parquet), or the arrays that a
    campaign's worker sends for lines (answers)."""
    if results == "parquet":
        return records.ChunkColumns(ids, labels, files)
    if results == "answers":
        return records.ChunkAnswers()
    return records.ChunkRecords(ids, labels)


def infer_lines(sources: Sequence[Source], req: InferRequest, answers: bool = False) -> dict[str, Any]:
    """Infer a chunk in-process: its results.jsonl lines (or, for `results: parquet`, its columns),
    one per item in the sources' order (see dgaas_flow.campaign.records), with their counts and the
    requests' latencies. `answers`: for results.jsonl, the arrays its lines are made of instead
    (records.ChunkAnswers), which cost less to move than the lines."""
    server = client_for(req)
    block = os.environ.get("PARSL_WORKER_BLOCK_ID")  # set by Parsl's worker pool
    results = "answers" if answers and req.results == "jsonl" else req.results
    ids: list[str] = []
    labels: list[str | None] = []
    for src in sources if results != "answers" else ():
        ids += src.ids or []
        labels += [src.label] * src.count
    chunk = new_chunk(ids, labels, [(src.path, src.start, src.count) for src in sources], results)
    total = sum(src.count for src in sources)

    try:
        if req.hook_path and req.hook_path not in sys.path:
            sys.path.insert(0, req.hook_path)  # the workflow's own hooks and readers
        info: ModelInfo = server.call(lambda c: c.model_info(req.model, req.version))
        task = _Task(req, info, chunk, ChunkReader(req.reader_spec()), server, block)
    except PilotError:
        raise  # this node's pilot failed: Parsl retries the chunk on another block
    except Exception as exc:  # noqa: BLE001 - every item must get a recorded error, never vanish
        chunk.fail(range(total), f"{type(exc).__name__}: {exc}", server.url)
        return chunk.outcome([])

    batched = info.max_batch_size > 0
    size = min(req.batch_size or info.max_batch_size, info.max_batch_size) if batched else 1
    # a process learns the class names from its first item, sent alone: every class's string for a
    # whole batch would be a million strings for a model of 1,000 classes
    learn = batched and req.top_k > 0 and server.connect().class_names(req.model, req.version, task.main) is None
    for group in _requests(sources, size, 1 if learn else size):
        task.run(group)
    return chunk.outcome(task.latencies)


def _sources(items: list[Item]) -> Iterator[Source]:
    """Items as sources: consecutive rows of one file together."""
    i = 0
    while i < len(items):
        _, path, row = items[i]
        j = i + 1
        if row is not None:
            while j < len(items) and items[j][1] == path and items[j][2] == row + (j - i):
                j += 1
        yield Source(records.quote(item[0] for item in items[i:j]), path, row, j - i)
        i = j


def infer_items(items: list[Item], req: InferRequest) -> dict[str, Any]:
    """Infer a chunk in-process: {"results": one record (a dict) per item, in order, "latencies_ms":
    per request}. For your own scripts; a campaign appends `infer_lines`'s text as it is."""
    out = infer_lines(list(_sources(items)), req)
    if "arrow" in out:
        return {"results": records.read_arrow(out["arrow"]).to_pylist(), "latencies_ms": out["latencies_ms"]}
    return {"results": [json.loads(line) for line in out["jsonl"].splitlines()],
            "latencies_ms": out["latencies_ms"]}


infer_chunk = python_app(infer_items)
infer_chunk.__doc__ = """Parsl app of `infer_items`: `infer_chunk(items, request)` returns an AppFuture."""


def encode_chunk(runs: list[FileSlice]) -> str:
    return json.dumps([run.fields() for run in runs], separators=(",", ":"))


def infer_encoded(chunk: str, req: InferRequest) -> dict[str, Any]:
    """The campaign's app: a chunk's runs in, its results out as one bytes object: the arrays of
    records.ChunkAnswers, of which the driver makes results.jsonl's lines (records.lines_of), or a
    Parquet chunk's Arrow stream. Parsl's serializer (dill, a pure-Python pickler) costs about 30 µs
    per Python object it moves, more than a small model's inference, and every byte costs on each
    of Parsl's hops: one string in and one small bytes object out cost little."""
    runs = [FileSlice(*fields) for fields in json.loads(chunk)]
    ids: list[str | None] = [None] * len(runs)  # jsonl: the lines are made by the driver, which has the ids
    if req.results != "jsonl":
        every = iter(quoted_ids(runs).to_pylist())
        ids = [list(itertools.islice(every, run.count)) for run in runs]
    return infer_lines([Source(run_ids, run.path, run.start, run.count, run.label, run.problem)
                        for run_ids, run in zip(ids, runs, strict=True)], req, answers=True)


infer_encoded_chunk = python_app(infer_encoded)
