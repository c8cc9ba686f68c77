"""Inputs: one reader per format (`image`, `npy`, `rows`) behind one protocol (base.Reader), and
the file slices a campaign enumerates, chunks and ships to its tasks (slices)."""

from dgaas_flow.inputs.base import Reader
from dgaas_flow.inputs.chunk_reader import ChunkReader
from dgaas_flow.inputs.formats import READERS, reader_for
from dgaas_flow.inputs.slices import (
    FileSlice,
    InputItem,
    Item,
    chunk_slices,
    enumerate_items,
    enumerate_slices,
    glob_root,
)

__all__ = ["READERS", "ChunkReader", "FileSlice", "InputItem", "Item", "Reader", "chunk_slices", "enumerate_items",
           "enumerate_slices", "glob_root", "reader_for"]
