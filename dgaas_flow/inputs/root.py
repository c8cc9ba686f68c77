"""`format: root`: one item per entry of a ROOT TTree (uproot); the fields are its branches (all, or
`branches`). Fixed-size branches come as they are; jagged branches (a variable number of values per
entry, e.g. a jet's constituents) are padded with zeros or truncated to `jagged_length`, and a
boolean `mask` field says which values are real. Counting reads the tree's header only."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from dgaas_flow.inputs.base import Batch, InputBase, OpenFile, require


class RootSpec(InputBase):
    format: Literal["root"] = Field(description="root: one item per entry of a TTree (uproot)")
    tree: str = Field(description="the TTree's name (path) in each file, e.g. Events")
    branches: list[str] | None = Field(None, description="the branches to read; default: all of them")
    jagged_length: int | None = Field(
        None, ge=1, description="jagged branches are padded (zeros) or truncated to this many values; "
        "without it a jagged branch is an error"
    )
    mask: str = Field("mask", description="the field saying which padded values are real (jagged branches only)")

    def reader(self) -> RootReader:
        return RootReader(self.tree, self.branches, self.jagged_length, self.mask)


class RootReader:
    rows: ClassVar[bool] = True

    def __init__(self, tree: str, branches: list[str] | None = None, jagged_length: int | None = None,
                 mask: str = "mask"):
        self.tree, self.branches, self.jagged_length, self.mask = tree, branches, jagged_length, mask
        self._file = OpenFile(lambda path: require("uproot", "root").open(path))

    def _tree(self, path: str) -> Any:
        file = self._file.get(path)
        try:
            return file[self.tree]
        except KeyError:
            raise KeyError(f"no tree {self.tree!r} in the file (it holds {list(file.keys(cycle=False))})") from None

    def count(self, path: str) -> int | None:
        try:
            return int(self._tree(path).num_entries)
        except Exception:  # noqa: BLE001
            return None

    def read(self, path: str, start: int | None, stop: int | None) -> Batch:
        ak = require("awkward", "root")
        tree = self._tree(path)
        names = self.branches or list(tree.keys())
        missing = [n for n in names if n not in tree]
        if missing:
            raise KeyError(f"no branch {missing} in tree {self.tree} (it has {list(tree.keys())})")
        arrays = tree.arrays(names, entry_start=start, entry_stop=stop, library="ak")
        out: Batch = {}
        for name in names:
            column = arrays[name]
            if column.ndim > 1 and not _regular(ak, column):
                if self.jagged_length is None:
                    raise ValueError(f"branch {name} is jagged: set inputs.jagged_length to pad or truncate it")
                counts = np.minimum(ak.to_numpy(ak.num(column, axis=1)), self.jagged_length)
                padded = ak.fill_none(ak.pad_none(column, self.jagged_length, axis=1, clip=True), 0)
                out[name] = ak.to_numpy(padded)
                if self.mask not in out:
                    out[self.mask] = np.arange(self.jagged_length)[None, :] < counts[:, None]
            else:
                out[name] = ak.to_numpy(column)
        return out


def _regular(ak: Any, column: Any) -> bool:
    return "var" not in str(ak.type(column).content)
