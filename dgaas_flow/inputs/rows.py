"""`format: rows`: each .npy file is an array of items, one per row (events, jets or images stacked
in one file, the usual shape of physics data), field `array`. Files stay memory-mapped for a task's
chunk, so a row costs a slice, not a file open."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from dgaas_flow.inputs.base import Batch, InputBase


class RowsSpec(InputBase):
    format: Literal["rows"] = Field(description="rows: each .npy file is an array, one item per row")

    def reader(self) -> RowsReader:
        return RowsReader()


class RowsReader:
    rows: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = ("array",)

    def __init__(self) -> None:
        self._arrays: dict[str, Any] = {}

    def count(self, path: str) -> int | None:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            return int(array.shape[0]) if isinstance(array, np.ndarray) and array.ndim else None
        except Exception:  # noqa: BLE001 - any unreadable file: the task records why, for its item
            return None

    def read(self, path: str, start: int | None, stop: int | None) -> Batch:
        if path not in self._arrays:
            self._arrays[path] = np.load(path, mmap_mode="r", allow_pickle=False)
        if start is None or not isinstance(self._arrays[path], np.ndarray):
            raise ValueError("not a .npy array of rows")
        return {"array": np.asarray(self._arrays[path][start:stop])}
