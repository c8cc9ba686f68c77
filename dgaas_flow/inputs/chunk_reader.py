"""How a task reads its chunk: consecutive rows of one file as one slice, through the format's reader."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dgaas_flow.inputs.formats import reader_for
from dgaas_flow.inputs.slices import Item


class ChunkReader:
    """Reads one task's items in blocks: consecutive rows of one file as one slice (a row then
    costs a few nanoseconds, not a numpy call), any other item alone as a block of one. Each rows
    file stays memory-mapped for the whole chunk."""

    def __init__(self, fmt: str):
        self.reader = reader_for(fmt)

    def blocks(self, items: list[Item]) -> Iterator[tuple[list[str], str, np.ndarray | Exception]]:
        """(ids, path, their stacked arrays, or the exception that is every one's error)."""
        i = 0
        while i < len(items):
            _, path, row = items[i]
            j = i + 1
            if self.reader.rows and row is not None:
                while j < len(items) and items[j][1] == path and items[j][2] == row + (j - i):
                    j += 1
            yield [item[0] for item in items[i:j]], path, self.read(path, row, j - i)
            i = j

    def read(self, path: str, start: int | None, count: int) -> np.ndarray | Exception:
        """`count` rows from `start` (a whole file: None and 1), or why they cannot be read."""
        try:
            block = self.reader.read(path, start, start + count if start is not None else None)
            if len(block) != count:
                raise ValueError(f"has fewer rows than when the campaign listed it ({(start or 0) + len(block)})")
            return block
        except Exception as exc:  # noqa: BLE001 - an unreadable input is its items' recorded error
            return exc
