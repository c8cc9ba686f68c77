"""What the campaign enumerates and ships to tasks: slices of files (a whole file, or a stretch of
its rows), chunked. Enumeration streams: it never holds the list of all files or rows, so a
million-item campaign costs the driver no more memory than a thousand-item one. Item ids depend
only on the path (and row), never on the order, so a resumed campaign skips exactly what is done.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice, repeat, takewhile
from json.encoder import encode_basestring_ascii as json_string
from pathlib import Path
from typing import Any

import numpy as np

from dgaas_flow.inputs.base import InputBase
from dgaas_flow.inputs.formats import input_spec

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
    problem: str | None = None  # why the path matched cannot be read at all (a FIFO, a dangling link...)

    def ids(self) -> Iterator[str]:
        if self.start is None:
            yield self.rel + self.suffix
            return
        yield from (f"{self.rel}:{row}{self.suffix}" for row in range(self.start, self.start + self.count))

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
        return [self.path, self.rel, self.label, self.start, self.count, self.suffix, self.problem]


_PAST_THE_END = 2**31 - 1  # a slice position beyond any string's end: Arrow clamps it to the end


def around(strings: Any, head: str = "", tail: str = "") -> Any:
    """An Arrow string array with `head` before and `tail` after each string: inserted by slice
    (at the start, and past the end), a third of the cost of a join with two constants."""
    import pyarrow.compute as pc

    if head:
        strings = pc.binary_replace_slice(strings, start=0, stop=0, replacement=head)
    if tail:
        strings = pc.binary_replace_slice(strings, start=_PAST_THE_END, stop=_PAST_THE_END, replacement=tail)
    return strings


def quoted_ids(runs: Iterable[FileSlice]) -> Any:
    """The runs' item ids in order, as JSON strings, quotes included, as result lines hold them: an
    Arrow string array. Escaping is per character, so the escaped head and tail of a rows run hold
    for every row: a row's id is its number between them, joined in Arrow, where a Python string
    each cost a tenth of a tiny model's item. The ids of whole-file items are gathered into one
    array (an array apiece costs some 30 µs)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pieces, whole = [], []
    for run in runs:
        if run.start is None:
            whole.append(json_string(run.rel + run.suffix))
            continue
        if whole:
            pieces.append(pa.array(whole, pa.string()))
            whole = []
        head, tail = json_string(f"{run.rel}:")[:-1], json_string(run.suffix)[1:]
        pieces.append(around(pc.cast(pa.array(np.arange(run.start, run.start + run.count)), pa.string()), head, tail))
    if whole or not pieces:
        pieces.append(pa.array(whole, pa.string()))
    return pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]


def enumerate_slices(files: str, fmt: str | InputBase | dict, labels: str = "none") -> Iterator[FileSlice]:
    """One slice a file, in name order within each folder, streamed: one folder's names are held at a
    time, and a rows file costs one header read. Every path the glob matches ends as exactly one slice:
    a regular file's, or one whose `problem` says why it cannot be read (a FIFO, a dangling link, a
    folder that cannot be listed). Folder links are followed, but each real folder is entered once."""
    spec = input_spec(fmt, files)
    root, reader = glob_root(files), spec.reader()
    for path, problem in matches(files):
        rel = os.path.relpath(path, root)
        label = Path(path).parent.name if labels == "parent_dir" else None
        if problem is not None:
            yield FileSlice(path, rel, label, problem=problem)
            continue
        rows = reader.count(path) if reader.rows else None
        if rows is None:
            yield FileSlice(path, rel, label)
        elif rows:
            yield FileSlice(path, rel, label, 0, rows)


def _magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def _entries(folder: str) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _what(entry: os.DirEntry) -> str | None:
    """None: a regular file (an input); "": a folder (not an input itself); else why it is no input."""
    try:
        if entry.is_file():
            return None
        if entry.is_dir():
            return ""
        if entry.is_symlink() and not os.path.exists(entry.path):
            return "dangling link"
        mode = os.stat(entry.path).st_mode
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    import stat

    kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device" \
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"
    return f"not a regular file ({kind})"


def matches(pattern: str) -> Iterator[tuple[str, str | None]]:
    """(path, None) for each regular file the glob matches, (path, why) for each other match that is
    no input (a folder matched by a name is skipped): glob's rules (`**` any folders, names starting
    with a dot only by a pattern that does), but folder links lead into each real folder once."""
    root = str(glob_root(pattern)) if _magic(pattern) else pattern
    if not _magic(pattern):
        if os.path.lexists(pattern):
            yield from _classified([(pattern, _stat_what(pattern))])
        return
    parts = Path(pattern).parts[len(Path(root).parts):]
    seen: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
        seen.add((st.st_dev, st.st_ino))
    except OSError:
        return
    yield from _walk(root, list(parts), seen)


def _stat_what(path: str) -> str | None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling link"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    import stat

    return None if stat.S_ISREG(mode) else "" if stat.S_ISDIR(mode) else "not a regular file"


def _classified(found: Iterable[tuple[str, str | None]]) -> Iterator[tuple[str, str | None]]:
    for path, what in found:
        if what != "":
            yield path, what


def _part_matcher(part: str):
    if not _magic(part):
        return lambda name: name == part
    regex = re.compile(fnmatch.translate(part))
    hidden_ok = part.startswith(".")
    return lambda name: (hidden_ok or not name.startswith(".")) and regex.match(name) is not None


def _walk(folder: str, parts: list[str], seen: set[tuple[int, int]]) -> Iterator[tuple[str, str | None]]:
    try:
        entries = _entries(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        yield folder, f"cannot list folder: {exc.strerror or exc}"
        return
    if parts[0] == "**":
        rest = parts[1:]
        if rest:
            yield from _match(entries, rest, seen)
        else:  # a trailing **: every file below
            yield from _classified((e.path, _what(e)) for e in entries if not e.name.startswith("."))
        for e in entries:
            if not e.name.startswith(".") and _is_dir(e) and _enter(e, seen):
                yield from _walk(e.path, parts, seen)
    else:
        yield from _match(entries, parts, seen)


def _enter(entry: os.DirEntry, seen: set[tuple[int, int]]) -> bool:
    """Whether a folder is entered: the first time its real folder is reached."""
    try:
        st = os.stat(entry.path)
    except OSError:
        return True  # cannot tell: listing it records why
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True


def _match(entries: list[os.DirEntry], parts: list[str],
           seen: set[tuple[int, int]]) -> Iterator[tuple[str, str | None]]:
    matcher, rest = _part_matcher(parts[0]), parts[1:]
    for e in entries:
        if not matcher(e.name):
            continue
        if rest:
            if _is_dir(e) and (rest[0] != "**" or _enter(e, seen)):
                yield from _walk(e.path, rest, seen)
        else:
            what = _what(e)
            if what != "":
                yield e.path, what


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
