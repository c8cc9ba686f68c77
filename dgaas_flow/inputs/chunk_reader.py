"""How a task reads its chunk: consecutive rows of one file as one slice, through the format's reader."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any

from dgaas_flow.inputs.base import Batch, InputBase
from dgaas_flow.inputs.formats import input_spec
from dgaas_flow.inputs.slices import Item


class ChunkReader:
    """Reads one task's items in blocks: consecutive rows of one file as one slice (a row then
    costs a few nanoseconds, not a numpy call), any other item alone as a block of one. Each rows
    file stays open (memory-mapped where the format allows) while the chunk reads it."""

    def __init__(self, spec: str | dict[str, Any] | InputBase):
        self.reader = input_spec(spec).reader()
        self._regular: set[str] = set()  # the files found regular, asked once a task, not once a request

    def blocks(self, items: list[Item]) -> Iterator[tuple[list[str], str, Batch | Exception]]:
        """(ids, path, their named arrays, or the exception that is every one's error)."""
        i = 0
        while i < len(items):
            _, path, row = items[i]
            j = i + 1
            if self.reader.rows and row is not None:
                while j < len(items) and items[j][1] == path and items[j][2] == row + (j - i):
                    j += 1
            yield [item[0] for item in items[i:j]], path, self.read(path, row, j - i)
            i = j

    def read(self, path: str, start: int | None, count: int) -> Batch | Exception:
        """`count` rows from `start` (a whole file: None and 1) as named arrays, or why they cannot be
        read. Only a regular file is opened (a FIFO would block the task forever)."""
        try:
            if path not in self._regular:
                if not stat.S_ISREG(os.stat(path).st_mode):
                    raise ValueError("not a regular file")
                self._regular.add(path)
            block = self.reader.read(path, start, start + count if start is not None else None)
            if not isinstance(block, dict) or not block:
                raise TypeError(f"the reader gave {type(block).__name__}, not named arrays")
            for name, array in block.items():
                if len(array) != count:
                    raise ValueError(f"field {name} has fewer rows than when the campaign listed it "
                                     f"({(start or 0) + len(array)})")
            return block
        except Exception as exc:  # noqa: BLE001 - an unreadable input is its items' recorded error
            return exc
