"""`format: npz`: each .npz file holds named arrays sharing a first axis, one item per row; the
fields are the arrays' names (all of them, or `fields`). Counting reads the members' headers only."""

from __future__ import annotations

import zipfile
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from dgaas_flow.inputs.base import Batch, InputBase


class NpzSpec(InputBase):
    format: Literal["npz"] = Field(description="npz: named arrays sharing a first axis, one item per row")
    fields: list[str] | None = Field(None, description="the arrays to read; default: all of them")

    def reader(self) -> NpzReader:
        return NpzReader(self.fields)


def member_shapes(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's shape and dtype, from its header, without reading its data."""
    shapes = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if not name.endswith(".npy"):
                continue
            with z.open(name) as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = np.lib.format._read_array_header(f, version)  # noqa: SLF001
            shapes[name[:-4]] = (shape, dtype)
    return shapes


class NpzReader:
    rows: ClassVar[bool] = True

    def __init__(self, fields: list[str] | None = None):
        self.fields = fields
        self._path: str | None = None
        self._arrays: Batch = {}

    def count(self, path: str) -> int | None:
        try:
            shapes = member_shapes(path)
            lengths = {s[0][0] if s[0] else None for name, s in shapes.items() if self.fields is None or name in
                       self.fields}
            return lengths.pop() if len(lengths) == 1 and None not in lengths else None
        except Exception:  # noqa: BLE001 - the task reads it again and records why
            return None

    def read(self, path: str, start: int | None, stop: int | None) -> Batch:
        if path != self._path:  # one file's arrays at a time: a chunk's files come one after another
            self._path, self._arrays = None, {}
            with np.load(path, allow_pickle=False) as z:
                names = self.fields if self.fields is not None else list(z.files)
                missing = [n for n in names if n not in z.files]
                if missing:
                    raise KeyError(f"no array {missing} in the file (it holds {list(z.files)})")
                self._arrays = {n: z[n] for n in names}
            self._path = path
        if start is None:
            raise ValueError("not rows: an .npz is read by row")
        lengths = {len(a) for a in self._arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"its arrays differ in length ({ {n: len(a) for n, a in self._arrays.items()} })")
        return {n: a[start:stop] for n, a in self._arrays.items()}
