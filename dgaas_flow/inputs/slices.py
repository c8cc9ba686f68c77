"""What the campaign enumerates and ships to tasks: slices of files (a whole file, or a stretch of
its rows), chunked. Enumeration streams: it never holds the list of all files or rows, so a
million-item campaign costs the driver no more memory than a thousand-item one. Item ids depend
only on the path (and row), never on the order, so a resumed campaign skips exactly what is done.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice, repeat, takewhile
from json.encoder import encode_basestring_ascii as json_string
from pathlib import Path
from typing import Any

from dgaas_flow.inputs.formats import reader_for

# What travels to a task for one item: (id, path, row); row is None for a whole-file item.
Item = tuple[str, str, int | None]


@dataclass(frozen=True, slots=True)
class InputItem:
    id: str
    path: str
    label: str | None
    row: int | None = None

    def task_item(self) -> Item:
        return self.id, self.path, self.row


def glob_root(pattern: str) -> Path:
    """The glob's fixed leading folder: item ids are relative to it."""
    parts = Path(pattern).parts
    fixed = list(takewhile(lambda part: not any(c in part for c in "*?["), parts))
    return Path(*fixed) if len(fixed) < len(parts) else Path(pattern).parent


@dataclass(frozen=True, slots=True)
class FileSlice:
    """Consecutive items of one file: rows [start, start + count) of a rows array, or the whole
    file (start None, count 1). The campaign enumerates, chunks and ships runs, not items, so a
    row costs the driver nothing until its result line comes back."""

    path: str
    rel: str  # the path relative to the glob's root: the start of every item id
    label: str | None
    start: int | None = None
    count: int = 1
    suffix: str = ""  # a scale test's later rounds of the same inputs: "#1", "#2"...

    def ids(self) -> Iterator[str]:
        if self.start is None:
            yield self.rel + self.suffix
            return
        yield from (f"{self.rel}:{row}{self.suffix}" for row in range(self.start, self.start + self.count))

    def quoted_ids(self) -> list[str]:
        """The ids as JSON strings, quotes included, as result lines hold them. Escaping is per
        character, so the escaped head and tail of a rows run hold for every row: an id then costs
        one format, where making it and escaping it cost a tenth of a tiny model's item."""
        if self.start is None:
            return [json_string(self.rel + self.suffix)]
        head, tail = json_string(f"{self.rel}:")[:-1], json_string(self.suffix)[1:]
        return [f"{head}{row}{tail}" for row in range(self.start, self.start + self.count)]

    def items(self) -> Iterator[InputItem]:
        rows = [None] if self.start is None else range(self.start, self.start + self.count)
        for item_id, row in zip(self.ids(), rows, strict=True):
            yield InputItem(item_id, self.path, self.label, row)

    def part(self, offset: int, count: int) -> FileSlice:
        """`count` items from the run's `offset`-th on."""
        if offset == 0 and count == self.count:
            return self
        return replace(self, start=self.start + offset, count=count)  # type: ignore[operator]

    def fields(self) -> list[Any]:
        """What travels to a task (JSON): `FileSlice(*fields)` rebuilds it."""
        return [self.path, self.rel, self.label, self.start, self.count, self.suffix]


def enumerate_slices(files: str, fmt: str, labels: str) -> Iterator[FileSlice]:
    """One slice a file, in the filesystem's order (stable for an unchanged folder, but not sorted),
    streamed: glob holds one folder's names at a time, and a rows file costs one header read."""
    root, reader = glob_root(files), reader_for(fmt)
    for path in glob.iglob(files, recursive=True):
        if not os.path.isfile(path):
            continue
        rel = os.path.relpath(path, root)
        label = Path(path).parent.name if labels == "parent_dir" else None
        rows = reader.count(path) if reader.rows else None
        if rows is None:
            yield FileSlice(path, rel, label)
        elif rows:
            yield FileSlice(path, rel, label, 0, rows)


def enumerate_items(files: str, fmt: str, labels: str, limit: int | None = None) -> Iterator[InputItem]:
    """The items of `enumerate_slices`, one by one (`--limit N` takes the first N in that order)."""
    return islice((item for run in enumerate_slices(files, fmt, labels) for item in run.items()), limit)


def chunk_slices(runs: Iterable[FileSlice], sizes: int | Iterable[int], limit: int | None = None,
               done: Container[str] | None = None) -> Iterator[list[FileSlice]]:
    """Runs regrouped into chunks of `sizes` items (one size for all, or each chunk's in turn), a run
    split across chunks where it must be: the first `limit` items only, less those in `done` (a
    resumed campaign's; only then is each item's id made in the driver)."""
    each = iter(repeat(sizes) if isinstance(sizes, int) else sizes)
    chunk: list[FileSlice] = []
    room, left = next(each), math.inf if limit is None else limit
    for run in runs:
        if left <= 0:
            break
        run = run.part(0, min(run.count, left))  # type: ignore[arg-type]
        left -= run.count
        for piece in _undone(run, done) if done else (run,):
            offset = 0
            while offset < piece.count:
                take = min(room, piece.count - offset)
                chunk.append(piece.part(offset, take))
                offset += take
                room -= take
                if room == 0:
                    yield chunk
                    chunk, room = [], next(each)
    if chunk:
        yield chunk


def _undone(run: FileSlice, done: Container[str]) -> Iterator[FileSlice]:
    """The run's stretches of consecutive items not in `done`."""
    start = None
    for k, item_id in enumerate(run.ids()):
        if item_id in done:
            if start is not None:
                yield run.part(start, k - start)
                start = None
        elif start is None:
            start = k
    if start is not None:
        yield run.part(start, run.count - start)
