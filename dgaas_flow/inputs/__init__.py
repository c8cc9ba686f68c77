"""Inputs: one reader per format (image, npy, rows, npz, parquet, hdf5, root, or a plugin) behind one
protocol (base.Reader: count items, read a slice as named arrays), the format-keyed specs
(formats.InputSpec), and the file slices a campaign enumerates, chunks and ships to its tasks
(slices)."""

from dgaas_flow.inputs.base import Batch, InputBase, Reader
from dgaas_flow.inputs.chunk_reader import ChunkReader
from dgaas_flow.inputs.formats import READERS, InputSpec, input_spec, plugin_class, reader_for
from dgaas_flow.inputs.slices import (
    FileSlice,
    InputItem,
    Item,
    chunk_slices,
    enumerate_items,
    enumerate_slices,
    glob_root,
    matches,
    quoted_ids,
)

__all__ = ["READERS", "Batch", "ChunkReader", "FileSlice", "InputBase", "InputItem", "InputSpec", "Item", "Reader",
           "chunk_slices", "enumerate_items", "enumerate_slices", "glob_root", "input_spec", "matches",
           "plugin_class", "quoted_ids", "reader_for"]
