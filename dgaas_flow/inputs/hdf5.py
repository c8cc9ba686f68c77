"""`format: hdf5`: one item per row of an HDF5 file's datasets (h5py), which share a first axis;
the fields are the datasets (all those in `group`, or `datasets`, paths within the file). Counting
reads the datasets' shapes only; a slice reads only its rows."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from dgaas_flow.inputs.base import Batch, InputBase, OpenFile, require


class Hdf5Spec(InputBase):
    format: Literal["hdf5"] = Field(description="hdf5: one item per row of the datasets")
    datasets: list[str] | None = Field(None, description="dataset paths to read; default: all in `group`")
    group: str = Field("/", description="the group whose datasets are read when `datasets` is not given")

    def reader(self) -> Hdf5Reader:
        return Hdf5Reader(self.datasets, self.group)


class Hdf5Reader:
    rows: ClassVar[bool] = True

    def __init__(self, datasets: list[str] | None = None, group: str = "/"):
        self.datasets, self.group = datasets, group
        self._file = OpenFile(lambda path: require("h5py", "hdf5").File(path, "r"))

    def _open(self, path: str) -> Any:
        return self._file.get(path)

    def _datasets(self, f: Any) -> dict[str, Any]:
        h5py = require("h5py", "hdf5")
        if self.datasets is not None:
            missing = [d for d in self.datasets if not isinstance(f.get(d), h5py.Dataset)]
            if missing:
                raise KeyError(f"no dataset {missing} in the file")
            return {d.strip("/"): f[d] for d in self.datasets}
        group = f[self.group]
        return {name: d for name, d in group.items() if isinstance(d, h5py.Dataset) and d.ndim}

    def count(self, path: str) -> int | None:
        try:
            lengths = {d.shape[0] for d in self._datasets(self._open(path)).values()}
            return lengths.pop() if len(lengths) == 1 else None
        except Exception:  # noqa: BLE001
            return None

    def read(self, path: str, start: int | None, stop: int | None) -> Batch:
        if start is None:
            raise ValueError("not rows: an HDF5 file is read by row")
        return {name: d[start:stop] for name, d in self._datasets(self._open(path)).items()}
