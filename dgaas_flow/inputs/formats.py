"""The readers by `inputs.format` name."""

from __future__ import annotations

from dgaas_flow.inputs.base import Reader
from dgaas_flow.inputs.image import ImageReader
from dgaas_flow.inputs.npy import NpyReader
from dgaas_flow.inputs.rows import RowsReader

READERS: dict[str, type[Reader]] = {"image": ImageReader, "npy": NpyReader, "rows": RowsReader}


def reader_for(fmt: str) -> Reader:
    return READERS[fmt]()
