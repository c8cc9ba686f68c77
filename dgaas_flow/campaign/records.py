"""The lines of results.jsonl: one JSON object per item, encoded a request or a chunk at a time.

A success: `{"id", "prediction", "score", ["top"], "ok": true, "pilot", "block", "latency_ms",
["label", "correct"]}`, or `"output"` (the raw values) in place of prediction and score when
top_k is 0. An error: `{"id", "ok": false, "error", "pilot", ["label"]}`.

Successes are the hot path of a campaign: a tiny model infers an item in a few microseconds, and a
dict plus `json.dumps` per item cost about ten. So the classes are ranked for the whole request in
numpy, and the lines are joined item by item in Arrow from pre-encoded parts, all of a chunk's
requests at once where they have one shape; strings go through the json module's own escaper and
numbers are written as Python writes them, so the lines are exactly what `json.dumps` writes.

A campaign's workers do not make the lines: they rank, and send each request's classes and values
as arrays (`ChunkAnswers`), a few bytes an item where a line is about 150; the driver, which
holds the chunk's ids and labels anyway, makes the lines as it writes them (`lines_of`). Every
byte a result moves costs on each of Parsl's hops (worker, pool manager, interchange, driver).
"""

from __future__ import annotations

import itertools
import json
import pickle
from collections import Counter
from collections.abc import Iterable, Sequence
from json.encoder import encode_basestring_ascii as json_string
from typing import Any, NamedTuple

import numpy as np

from dgaas_flow.inputs.slices import around

SCORE_DECIMALS = 6  # what Triton's classification extension prints


def _numbers(values: np.ndarray) -> Any:
    """JSON numbers at the classification extension's precision, as json.dumps writes them (an Arrow
    string array). Below 1e9 and from 1e-4 on, Arrow's shortest round-trip form is Python's repr (a
    whole number gets its ".0"); smaller and larger ones, NaN and Infinity are formatted by Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rounded = np.round(np.asarray(values, dtype=np.float64).reshape(-1), SCORE_DECIMALS)
    text = pc.cast(pa.array(rounded), pa.string())
    size = np.abs(rounded)
    with np.errstate(invalid="ignore"):
        whole = (rounded == np.trunc(rounded)) & (size < 1e9)
        python = ~(whole | ((size >= 1e-4) & (size < 1e9)))
    if whole.any():  # a confident classifier's 1.0: a few in every request
        at = pa.array(whole)
        text = pc.replace_with_mask(text, at, around(text.filter(at), tail=".0"))
    if python.any():
        text = pc.replace_with_mask(text, pa.array(python),
                                    pa.array([json.dumps(v) for v in rounded[python].tolist()], pa.string()))
    return text


def rank(out: np.ndarray, top_k: int) -> tuple[np.ndarray | None, np.ndarray]:
    """What a request's output (batch first) keeps for its results: (class indices, their values),
    best first, top_k per item; for top_k 0, (None, the raw values)."""
    if top_k == 0:
        return None, out
    flat = out.reshape(len(out), -1)
    top_k = min(top_k, flat.shape[1])
    best = flat.argmax(axis=1)[:, None] if top_k == 1 else np.argsort(-flat, axis=1, kind="stable")[:, :top_k]
    # the smallest type that holds every class index: a chunk's answers cross three processes
    return best.astype(np.min_scalar_type(flat.shape[1] - 1)), np.take_along_axis(flat, best, axis=1)


def _served(pilot: str | None, block: str | None, latency_ms: float) -> str:
    """The members of a success line that its request gives: every item of the request shares them."""
    return f',"ok":true,"pilot":{json.dumps(pilot)},"block":{json.dumps(block)},"latency_ms":{round(latency_ms, 3)!r}'


def _success_lines(
    ids: Any, labels: Sequence[str | None] | None, index: np.ndarray | None, values: np.ndarray,
    class_names: list[str], served: list[str], request_of: np.ndarray | None,
    extra: dict[str, np.ndarray] | None = None,
) -> tuple[Any, list[str | None]]:
    """One line per item of ranked outputs (see `rank`), as an Arrow string array, and, where there
    are labels, each item's prediction; `ids` quoted (see `quote`), an Arrow string array; labels
    None: none of the items has one. `served`: each request's members (see `_served`);
    `request_of`: each item's request (None: they are all of the first). `extra`: more columns
    (other kept outputs, a postprocess hook's), one value per item, under their names.

    A line's parts are joined item by item in Arrow: a line is a few hundred nanoseconds of Python,
    as much as a tiny model's inference. Arrow's join costs by the part, so constant text rides in
    the parts beside it (a class name's entry holds its keys, a request's members the line's end)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    parts: list[Any] = ['{"id":', ids]
    predictions: list[str | None] = []
    if index is None:
        parts.append(pa.array([',"output":' + json.dumps(row, separators=(",", ":"))
                               for row in values.reshape(n, -1).tolist()], pa.string()))
        predictions = [None] * n if labels is not None else []
    else:
        names = [json_string(c) for c in class_names]
        best = index[:, 0]
        entries = pa.array([f',"prediction":{name},"score":' for name in names], pa.string())
        parts += [entries.take(best), _numbers(values[:, 0])]
        if labels is not None:
            predictions = [class_names[k] for k in best.tolist()]
        if index.shape[1] > 1:
            k, texts = index.shape[1], _numbers(values).to_pylist()
            parts.append(pa.array([',"top":[' + ",".join(f"[{names[c]},{texts[i * k + j]}]" for j, c in enumerate(row))
                                   + "]" for i, row in enumerate(index.tolist())], pa.string()))
    if extra:
        parts.append(pa.array(_columns(extra, n), pa.string()))
    ends = served if labels is not None else [members + "}\n" for members in served]
    parts.append(ends[0] if request_of is None else pa.array(ends, pa.string()).take(request_of))
    if labels is not None:
        parts.append(pa.array([_label(label, p) + "}\n" for label, p in zip(labels, predictions, strict=True)],
                              pa.string()))
    return pc.binary_join_element_wise(*[pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts],
                                       ""), predictions


RESERVED = {"id", "prediction", "score", "top", "output", "ok", "pilot", "block", "latency_ms", "label", "correct",
            "error"}


def _columns(extra: dict[str, np.ndarray], n: int) -> list[str]:
    """Each item's extra columns as the JSON members they add (a name that a record's own field has
    gets an `output_` prefix)."""
    parts = [""] * n
    for name, values in extra.items():
        key = json_string(f"output_{name}" if name in RESERVED else name)
        array = np.asarray(values)
        if array.dtype.kind in "SUO":
            cells = [json.dumps(v.decode(errors="replace") if isinstance(v, bytes) else v if isinstance(v, str)
                                else np.asarray(v).tolist()) for v in array.tolist()]
        else:
            cells = [json.dumps(v, separators=(",", ":")) for v in array.reshape(n, -1).tolist()] \
                if array.ndim > 1 else [json.dumps(v) for v in array.tolist()]
        parts = [f"{p},{key}:{c}" for p, c in zip(parts, cells, strict=True)]
    return parts


def _label(label: str | None, prediction: str | None) -> str:
    """The item's known label, and whether the prediction matched it (accuracy)."""
    if label is None:
        return ""
    if prediction is None:
        return f',"label":{json_string(label)}'
    return f',"label":{json_string(label)},"correct":{"true" if prediction == label else "false"}'


def _error_line(quoted_id: str, message: str, pilot: str | None, label: str | None) -> str:
    return f'{{"id":{quoted_id},' + json.dumps({"ok": False, "error": message, "pilot": pilot},
                                               separators=(",", ":"))[1:-1] + _label(label, None) + "}\n"


def quote(ids: Iterable[str]) -> list[str]:
    """Ids as `ChunkRecords` takes them: JSON strings, quotes included (`inputs.quoted_ids`
    makes runs' without escaping each)."""
    return [json_string(i) for i in ids]


def _reason(message: str) -> str:
    """What summary.json groups failures by: the message's lead, before its first colon."""
    return message.split(":", 1)[0]


def _at(positions: Sequence[int]) -> range | np.ndarray:
    """The positions as a range when they run up one by one (a request whose items were all read,
    the usual case: its lines then go in by slice, not one by one), else as an array."""
    if isinstance(positions, range) and positions.step == 1:
        return positions
    if isinstance(positions, list) and positions:
        whole = range(positions[0], positions[-1] + 1)
        if len(whole) == len(positions) and positions == list(whole):
            return whole
    return np.asarray(positions, dtype=np.int64)


class Answer(NamedTuple):
    """A request's results as ChunkAnswers keeps them: its items' positions in the chunk, their
    ranked class indices (None for raw values, top_k 0) and values (see `rank`), who served them,
    and the extra columns (other kept outputs, a postprocess hook's)."""

    at: range | np.ndarray
    index: np.ndarray | None
    values: np.ndarray
    pilot: str | None
    block: str | None
    latency_ms: float
    extra: dict[str, np.ndarray] | None


def _shape(answer: Answer) -> tuple:
    """What answers must share for their lines to be made together (their arrays concatenate)."""
    extra = answer.extra
    columns = None if extra is None else tuple((k, np.shape(v)[1:], np.asarray(v).dtype) for k, v in extra.items())
    return None if answer.index is None else answer.index.shape[1:], answer.values.shape[1:], answer.values.dtype, \
        columns


def _joined(positions: list[range | np.ndarray]) -> range | np.ndarray:
    """Requests' positions as one: a range when they follow one another, as they usually do."""
    ranges = [p for p in positions if isinstance(p, range)]
    if len(ranges) == len(positions) and all(a.stop == b.start for a, b in itertools.pairwise(ranges)):
        return range(ranges[0].start, ranges[-1].stop)
    return np.concatenate([np.arange(p.start, p.stop) if isinstance(p, range) else p for p in positions])


class ChunkRecords:
    """A chunk's lines, in item order, and what summary.json counts of them: counted here as the
    lines are made, so that the end of a campaign does not read its results.jsonl back (4 s for a
    million items). `quoted_ids`: a list, or an Arrow string array."""

    def __init__(self, quoted_ids: Sequence[str] | Any, labels: list[str | None]):
        import pyarrow as pa

        self.ids = quoted_ids if isinstance(quoted_ids, pa.Array) else pa.array(quoted_ids, pa.string())
        self.labels = labels
        self.labelled_items = labels.count(None) < len(labels)
        self.pieces: list[tuple[np.ndarray | range, Any]] = []  # (positions, their lines), as made
        self.failed = self.labelled = self.correct = 0
        self.pilots: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.contacted: set[str] = set()  # the servers asked, whether they answered or not

    def succeed(self, positions: Sequence[int], out: np.ndarray, top_k: int, class_names: list[str],
                pilot: str | None, block: str | None, latency_ms: float,
                extra: dict[str, np.ndarray] | None = None) -> None:
        """The items at `positions` got the rows of `out` (and of `extra`'s columns), from one request."""
        self.add([Answer(_at(positions), *rank(out, top_k), pilot, block, latency_ms, extra)], class_names)

    def add(self, answers: list[Answer], class_names: list[str]) -> None:
        """Requests' answers, already ranked, all of one shape (see `_shape`): their lines are made
        together, a few Arrow calls for the lot."""
        first = answers[0]
        at = _joined([a.at for a in answers])
        index = None if first.index is None else np.concatenate([a.index for a in answers])
        values = np.concatenate([a.values for a in answers])
        extra = None if first.extra is None else \
            {name: np.concatenate([np.asarray(a.extra[name]) for a in answers]) for name in first.extra}
        served = [_served(a.pilot, a.block, a.latency_ms) for a in answers]
        request_of = np.repeat(np.arange(len(answers)), [len(a.at) for a in answers]) if len(answers) > 1 else None
        ids = self.ids.slice(at.start, len(at)) if isinstance(at, range) else self.ids.take(at)
        labels = None
        if self.labelled_items:
            labels = self.labels[at.start:at.stop] if isinstance(at, range) else [self.labels[p] for p in at.tolist()]
        lines, predictions = _success_lines(ids, labels, index, values, class_names, served, request_of, extra)
        self.pieces.append((at, lines))
        for a in answers:
            self.pilots[a.pilot or "?"] += len(a.at)
            if a.pilot:
                self.contacted.add(a.pilot)
        if labels is None:
            return
        checked = [label == prediction for label, prediction in zip(labels, predictions, strict=True)
                   if label is not None and prediction is not None]
        self.labelled += len(checked)
        self.correct += sum(checked)

    def fail(self, positions: Sequence[int], message: str, pilot: str | None) -> None:
        import pyarrow as pa

        at = np.asarray(list(positions), dtype=np.int64)
        self.pieces.append((at, pa.array([_error_line(self.ids[p].as_py(), message, pilot, self.labels[p])
                                          for p in at.tolist()], pa.string())))
        self.failed += len(positions)
        self.reasons[_reason(message)] += len(positions)
        if pilot:
            self.contacted.add(pilot)

    def _in_order(self) -> Any:
        """Every line, in item order (an Arrow string array)."""
        import pyarrow as pa

        if not self.pieces:
            return pa.array([], pa.string())
        lines = pa.concat_arrays([lines for _, lines in self.pieces]) if len(self.pieces) > 1 else self.pieces[0][1]
        at = np.concatenate([np.arange(p.start, p.stop) if isinstance(p, range) else p for p, _ in self.pieces])
        if len(at) and (np.diff(at) == 1).all():
            return lines
        return lines.take(np.argsort(at, kind="stable"))

    def outcome(self, latencies_ms: list[float]) -> dict[str, Any]:
        """The chunk as the campaign appends it: its lines as bytes (Parsl's serializer, dill, moves a
        megabyte of bytes in a third of the time it takes for a str), counts and the requests'
        latencies."""
        lines = self._in_order()
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
        data = lines.buffers()[2]
        text = data[int(offsets[0]):int(offsets[-1])].to_pybytes() if data is not None and len(lines) else b""
        return {"jsonl": text, "items": len(self.labels), "failed": self.failed,
                "latencies_ms": latencies_ms, "pilots": dict(self.pilots), "reasons": dict(self.reasons),
                "labelled": self.labelled, "correct": self.correct, "contacted": sorted(self.contacted)}


class ChunkAnswers:
    """A chunk's results as a worker sends them for results.jsonl: each request's ranked classes
    and values (or raw values) as arrays, each failure's message, in one pickle (Parsl's serializer,
    dill, is pure Python and costs per object; `pickle` is C). `lines_of` makes the lines from it
    where the chunk's ids are known. The same calls as ChunkRecords."""

    def __init__(self) -> None:
        self.class_names: list[str] = []
        self.answers: list[Answer] = []
        self.errors: list[tuple[Any, str, str | None]] = []

    def succeed(self, positions: Sequence[int], out: np.ndarray, top_k: int, class_names: list[str],
                pilot: str | None, block: str | None, latency_ms: float,
                extra: dict[str, np.ndarray] | None = None) -> None:
        if len(class_names) > len(self.class_names):
            self.class_names = list(class_names)
        self.answers.append(Answer(_at(positions), *rank(out, top_k), pilot, block, latency_ms, extra))

    def fail(self, positions: Sequence[int], message: str, pilot: str | None) -> None:
        self.errors.append((list(positions), message, pilot))

    def outcome(self, latencies_ms: list[float]) -> dict[str, Any]:
        return {"answers": pickle.dumps((self.class_names, self.answers, self.errors), protocol=5),
                "latencies_ms": latencies_ms}


def lines_of(outcome: dict[str, Any], quoted_ids: Sequence[str] | Any, labels: list[str | None]) -> dict[str, Any]:
    """A ChunkAnswers outcome as ChunkRecords.outcome gives it (its lines and counts), for the chunk's
    items: their ids quoted (a list, see `quote`, or an Arrow string array, see `inputs.quoted_ids`)
    and their labels."""
    class_names, answers, errors = pickle.loads(outcome["answers"])
    chunk = ChunkRecords(quoted_ids, labels)
    alike: dict[tuple, list[Answer]] = {}
    for answer in answers:
        alike.setdefault(_shape(answer), []).append(answer)
    for group in alike.values():
        chunk.add(group, class_names)
    for positions, message, pilot in errors:
        chunk.fail(positions, message, pilot)
    return chunk.outcome(outcome["latencies_ms"])


# --------------------------------------------------------------------------------------------
# columns (outputs.format: parquet)


COLUMN_RESERVED = RESERVED | {"file", "row"}


def _cells(parts: list[tuple[np.ndarray, Any]], n: int) -> list[Any]:
    """One Python value per item (None where no request gave one): the slow, general way, for
    strings and for values whose shapes differ between requests."""
    cells: list[Any] = [None] * n
    for positions, values in parts:
        for p, v in zip(positions.tolist(), np.asarray(values).tolist() if not isinstance(values, list) else values,
                        strict=True):
            cells[p] = v.decode(errors="replace") if isinstance(v, bytes) else v
    return cells


def _column(parts: list[tuple[np.ndarray, np.ndarray]], n: int) -> Any:
    """An Arrow column of `n` items from the requests' (positions, values): numbers and booleans in
    their own type, an item's array as a list (nested for more axes), null for the items that no
    request gave a value (failed items)."""
    import pyarrow as pa

    arrays = [np.asarray(v) for _, v in parts]
    kinds = {a.dtype.kind for a in arrays}
    inner = {a.shape[1:] for a in arrays}
    if not kinds <= set("biuf") or len(inner) != 1:
        return pa.array(_cells([(p, a) for (p, _), a in zip(parts, arrays, strict=True)], n))
    shape = next(iter(inner))
    full = np.zeros((n, *shape), dtype=np.result_type(*arrays))
    missing = np.ones(n, dtype=bool)
    for (positions, _), a in zip(parts, arrays, strict=True):
        full[positions] = a
        missing[positions] = False
    if not shape:
        return pa.array(full, mask=missing)
    return _lists(pa.array(full[~missing].reshape(-1)), shape, missing)


def _lists(values: Any, shape: tuple[int, ...], missing: np.ndarray) -> Any:
    """Each present item's `values` (shape `shape`, flattened, items in order) as nested lists, a
    null of no length for a missing item (Parquet refuses nulls that hold values, so fixed-size lists,
    whose null slots do, are not used)."""
    import pyarrow as pa

    column = values
    present = int((~missing).sum())
    for depth in range(len(shape) - 1, 0, -1):  # the inner axes: lists of their fixed length
        count = present * int(np.prod(shape[:depth]))
        column = pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32) * shape[depth]), column)
    lengths = np.where(missing, 0, shape[0]).astype(np.int32)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), column, mask=pa.array(missing))


class ChunkColumns:
    """A chunk's results as columns, in item order, for `outputs.format: parquet`: the same calls
    and counts as ChunkRecords, and an Arrow IPC stream in place of the lines, so arrays come back to
    the driver as arrays. Columns: `id`, `file`, `row` (null for a whole-file item), `ok`, then for
    the items that have a result `prediction` and `score` (top_k >= 1), `top` (a list of
    {class, score}, top_k >= 2) or `output` (top_k 0), the other kept outputs and the hook's
    columns under their names (`output_<name>` where a name is one of these), `pilot`, `block`,
    `latency_ms`, `label` and `correct` with labels, and `error` (null for a success)."""

    def __init__(self, quoted_ids: Sequence[str] | Any, labels: list[str | None],
                 files: list[tuple[str, int | None, int]]):
        self.ids = quoted_ids.to_pylist() if hasattr(quoted_ids, "to_pylist") else quoted_ids
        self.labels, self.files = labels, files
        self.labelled_items = labels.count(None) < len(labels)
        self.n = len(quoted_ids)
        self.failed = self.labelled = self.correct = 0
        self.pilots: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.contacted: set[str] = set()
        self.top_k: int | None = None
        self.class_names: list[str] = []
        self.main: list[tuple[np.ndarray, np.ndarray]] = []  # (positions, ranked indices or raw values)
        self.scores: list[tuple[np.ndarray, np.ndarray]] = []
        self.extra: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.served: list[tuple[np.ndarray, str | None, str | None, float]] = []  # pilot, block, latency
        self.errors: list[tuple[np.ndarray, str, str | None]] = []

    def succeed(self, positions: Sequence[int], out: np.ndarray, top_k: int, class_names: list[str],
                pilot: str | None, block: str | None, latency_ms: float,
                extra: dict[str, np.ndarray] | None = None) -> None:
        at = np.asarray(positions, dtype=np.int64)
        self.top_k = top_k
        index, value = rank(out, top_k)
        if index is None:
            self.main.append((at, out))
        else:
            if len(class_names) > len(self.class_names):
                self.class_names = list(class_names)
            self.main.append((at, index))
            self.scores.append((at, value.astype(np.float64)))
        for name, values in (extra or {}).items():
            self.extra.setdefault(name, []).append((at, np.asarray(values)))
        self.served.append((at, pilot, block, round(latency_ms, 3)))
        self.pilots[pilot or "?"] += len(at)
        if pilot:
            self.contacted.add(pilot)
        if self.labelled_items and top_k:
            names = self.class_names
            for p, k in zip(at.tolist(), index[:, 0].tolist(), strict=True):
                label = self.labels[p]
                if label is not None:
                    self.labelled += 1
                    self.correct += (names[k] if k < len(names) else str(k)) == label

    def fail(self, positions: Sequence[int], message: str, pilot: str | None) -> None:
        self.errors.append((np.asarray(list(positions), dtype=np.int64), message, pilot))
        self.failed += len(positions)
        self.reasons[_reason(message)] += len(positions)
        if pilot:
            self.contacted.add(pilot)

    def table(self) -> Any:
        """The chunk as an Arrow table, one row per item, in item order."""
        import pyarrow as pa

        n = self.n
        ids = json.loads("[" + ",".join(self.ids) + "]")
        paths = np.empty(len(self.files), dtype=object)
        paths[:] = [path for path, _, _ in self.files]
        counts = [count for _, _, count in self.files]
        rows = np.concatenate([np.arange(start, start + count) if start is not None else np.zeros(count, np.int64)
                               for _, start, count in self.files]) if self.files else np.zeros(0, np.int64)
        whole = np.repeat(np.array([start is None for _, start, _ in self.files], dtype=bool), counts)
        columns: dict[str, Any] = {
            "id": pa.array(ids, pa.string()), "file": pa.array(np.repeat(paths, counts), pa.string()),
            "row": pa.array(rows.astype(np.int64), mask=whole),
        }
        ok = np.zeros(n, dtype=bool)
        for at, *_ in self.served:
            ok[at] = True
        columns["ok"] = pa.array(ok)
        if self.main and self.top_k == 0:
            columns["output"] = _column(self.main, n)
        elif self.main:
            names = self.class_names
            classes_seen = 1 + max((int(i.max()) for _, i in self.main if i.size), default=0)
            name_of = np.empty(max(len(names), classes_seen), dtype=object)
            name_of[:] = [names[k] if k < len(names) else str(k) for k in range(len(name_of))]
            columns["prediction"] = pa.array(_cells([(at, name_of[i[:, 0]]) for at, i in self.main], n), pa.string())
            columns["score"] = _column([(at, v[:, 0]) for at, v in self.scores], n)
            if self.top_k is not None and self.top_k > 1:
                width = min(i.shape[1] for _, i in self.main)
                classes = np.full((n, width), "", dtype=object)
                values = np.zeros((n, width), dtype=np.float64)
                for (at, i), (_, v) in zip(self.main, self.scores, strict=True):
                    classes[at] = name_of[i[:, :width]]
                    values[at] = v[:, :width]
                pairs = pa.StructArray.from_arrays([pa.array(classes[ok].reshape(-1), pa.string()),
                                                    pa.array(values[ok].reshape(-1))], names=["class", "score"])
                columns["top"] = _lists(pairs, (width,), ~ok)
        for name, parts in self.extra.items():
            columns[f"output_{name}" if name in COLUMN_RESERVED else name] = _column(parts, n)
        pilot, block, latency, error = [None] * n, [None] * n, [None] * n, [None] * n
        for at, url, blk, ms in self.served:
            for p in at.tolist():
                pilot[p], block[p], latency[p] = url, blk, ms
        for at, message, url in self.errors:
            for p in at.tolist():
                error[p], pilot[p], block[p], latency[p] = message, url, None, None
        columns["pilot"] = pa.array(pilot, pa.string())
        columns["block"] = pa.array(block, pa.string())
        columns["latency_ms"] = pa.array(latency, pa.float64())
        if self.labelled_items:
            columns["label"] = pa.array(self.labels, pa.string())
            if self.top_k:
                prediction = columns["prediction"].to_pylist() if "prediction" in columns else [None] * n
                columns["correct"] = pa.array([None if lab is None or pred is None else lab == pred
                                               for lab, pred in zip(self.labels, prediction, strict=True)], pa.bool_())
        columns["error"] = pa.array(error, pa.string())
        return pa.table(columns)

    def outcome(self, latencies_ms: list[float]) -> dict[str, Any]:
        """As ChunkRecords.outcome, with the table as an Arrow IPC stream (bytes) under "arrow"."""
        import pyarrow as pa

        table = self.table()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return {"arrow": sink.getvalue().to_pybytes(), "items": self.n, "failed": self.failed,
                "latencies_ms": latencies_ms, "pilots": dict(self.pilots), "reasons": dict(self.reasons),
                "labelled": self.labelled, "correct": self.correct, "contacted": sorted(self.contacted)}


def read_arrow(data: bytes) -> Any:
    """The table of `ChunkColumns.outcome`'s "arrow" bytes (no copy)."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


Chunk = ChunkRecords | ChunkColumns | ChunkAnswers
