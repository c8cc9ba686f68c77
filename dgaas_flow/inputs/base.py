"""The protocol every input format's reader follows: say how many items a file holds without
loading it, and read a stretch of them."""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np


class Reader(Protocol):
    """One reader per task and format; it may keep files open (memory-mapped) for the chunk."""

    rows: ClassVar[bool]  # True: a file holds many items, read by row; False: a file is one item

    def count(self, path: str) -> int | None:
        """Items in the file, from its header only; None when it cannot tell (the task then
        records the file's error for its item)."""

    def read(self, path: str, start: int | None, stop: int | None) -> np.ndarray:
        """Items [start, stop) stacked on a first axis (a whole-file item: None, None)."""
