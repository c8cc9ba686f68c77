"""`format: parquet`: one item per row of a Parquet file (pyarrow); the fields are its columns (all,
or `columns`). A list column of equal-length lists (or a fixed-size list) becomes a 2-D array.
Counting reads the footer only; reading a slice reads only the row groups it touches."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from dgaas_flow.inputs.base import Batch, InputBase


class ParquetSpec(InputBase):
    format: Literal["parquet"] = Field(description="parquet: one item per row; fields are columns")
    columns: list[str] | None = Field(None, description="the columns to read; default: all of them")

    def reader(self) -> ParquetReader:
        return ParquetReader(self.columns)


def column_array(col: Any) -> np.ndarray:
    """A pyarrow column as a numpy array; lists of equal length become an extra axis."""
    import pyarrow as pa
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        if col.null_count:
            raise ValueError("a list column holds nulls")
        lengths = np.asarray(col.value_lengths())
        if len(lengths) and (lengths != lengths[0]).any():
            raise ValueError(f"a list column's lists differ in length ({lengths.min()}..{lengths.max()})")
        inner = column_array(col.flatten())
        return inner.reshape(len(col), int(lengths[0]) if len(lengths) else 0, *inner.shape[1:])
    return col.to_numpy(zero_copy_only=False)


class ParquetReader:
    rows: ClassVar[bool] = True

    def __init__(self, columns: list[str] | None = None):
        self.columns = columns
        self._files: dict[str, Any] = {}

    def _open(self, path: str) -> Any:
        if path not in self._files:
            import pyarrow.parquet as pq

            self._files = {path: pq.ParquetFile(path)}  # one file open at a time
        return self._files[path]

    def count(self, path: str) -> int | None:
        try:
            return int(self._open(path).metadata.num_rows)
        except Exception:  # noqa: BLE001
            return None

    def read(self, path: str, start: int | None, stop: int | None) -> Batch:
        f = self._open(path)
        meta = f.metadata
        start = start or 0
        stop = meta.num_rows if stop is None else stop
        names = self.columns or f.schema_arrow.names
        missing = [n for n in names if n not in f.schema_arrow.names]
        if missing:
            raise KeyError(f"no column {missing} in the file (it has {f.schema_arrow.names})")
        groups, first, offset = [], None, 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if offset < stop and offset + n > start:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        table = f.read_row_groups(groups, columns=names)
        table = table.slice(start - (first or 0), stop - start)
        return {n: column_array(table.column(n)) for n in names}
