"""`format: npz`: each .npz file holds named arrays sharing a first axis, one item per row; the
fields are the arrays' names (all of them, or `fields`). Counting reads the members' headers only.

`np.savez` stores its members uncompressed: those are memory-mapped where they lie in the file, as a
.npy file is, so a task reads the rows of its chunk, not the whole member (numpy reads a member whole
and checks its CRC). Compressed members (`np.savez_compressed`) are read whole, once per file."""

from __future__ import annotations

import struct
import zipfile
from typing import Any, ClassVar, Literal

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


def _mapped(path: str, info: zipfile.ZipInfo) -> Any:
    """A stored member's array, memory-mapped; None where it cannot be (an object or empty array)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = struct.unpack(zipfile.structFileHeader, f.read(zipfile.sizeFileHeader))  # the member's local header
        if header[0] != zipfile.stringFileHeader:
            raise zipfile.BadZipFile(f"{info.filename}: no local file header where the directory says")
        f.seek(info.header_offset + zipfile.sizeFileHeader + header[-2] + header[-1])  # past the name and extra field
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = np.lib.format._read_array_header(f, version)  # noqa: SLF001
        offset = f.tell()
    if dtype.hasobject or 0 in shape:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _members(path: str, fields: list[str] | None) -> Batch:
    """The named arrays of the file: stored members memory-mapped, the others read whole."""
    with zipfile.ZipFile(path) as z:
        files = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        names = fields if fields is not None else files
        missing = [n for n in names if n not in files]
        if missing:
            raise KeyError(f"no array {missing} in the file (it holds {files})")
        arrays = {}
        for name in names:
            info = z.getinfo(f"{name}.npy")
            stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1  # not encrypted
            array = _mapped(path, info) if stored else None
            if array is None:
                with z.open(info) as f:
                    array = np.lib.format.read_array(f, allow_pickle=False)
            arrays[name] = array
    return arrays


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
            self._arrays = _members(path, self.fields)
            self._path = path
        if start is None:
            raise ValueError("not rows: an .npz is read by row")
        lengths = {len(a) for a in self._arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"its arrays differ in length ({ {n: len(a) for n, a in self._arrays.items()} })")
        return {n: np.asarray(a[start:stop]) for n, a in self._arrays.items()}
