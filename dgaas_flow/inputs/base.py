"""The protocol every input format's reader follows, and the fields every format's spec shares.

A reader lists items cheaply (how many a file holds, from its header), and reads a slice of them as
**named arrays** (a `Batch`: field name -> array with the items on the first axis). A format is a
module holding its spec (a Pydantic model: `format` literal plus its own fields) and its reader;
a reader from another package plugs in by `module:Class` or an entry point (dgaas_flow.inputs.formats).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Batch = dict[str, np.ndarray]  # field name -> items stacked on the first axis


class InputBase(BaseModel):
    """What every format's spec has: the files, their labels, and how the data's fields map to the
    model's input tensors."""

    model_config = ConfigDict(extra="forbid")

    files: str = Field(description="glob of input files, e.g. data/images/**/*.png")
    labels: Literal["none", "parent_dir"] = Field(
        "none", description="parent_dir: the file's folder name is its label (enables accuracy)"
    )
    tensor: str | None = Field(None, description="model input name; default: the model's only input")
    tensors: dict[str, str] | None = Field(
        None, description="model input name -> the data's field that feeds it (e.g. {points: points, features: "
        "feats}); default: the only field to the only input, else each input from the field of its name"
    )

    def reader(self) -> Reader:
        raise NotImplementedError


class Reader(Protocol):
    """One reader per task and format; it may keep files open (memory-mapped) for the chunk."""

    rows: ClassVar[bool]  # True: a file holds many items, read by row; False: a file is one item

    def count(self, path: str) -> int | None:
        """Items in the file, from its header only; None when it cannot tell (the task then
        records the file's error for its item)."""

    def read(self, path: str, start: int | None, stop: int | None) -> Batch:
        """Items [start, stop) as named arrays, stacked on a first axis (a whole-file item: None, None)."""


def one_field(name: str, array: np.ndarray) -> Batch:
    return {name: array}


def require(module: str, fmt: str) -> Any:
    """Import a format's library, or say what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"format {fmt} needs the {module.split('.')[0]} package: "
                          f"pip install 'dgaas-flow[formats]'") from None


class OpenFile:
    """The one file a reader has open: a task reads its chunk's files one after another, so the
    previous one is closed when another is asked for (a reader of thousands of files must not
    hold them all open)."""

    def __init__(self, opener: Callable[[str], Any]) -> None:
        self._opener = opener
        self._path: str | None = None
        self._file: Any = None

    def get(self, path: str) -> Any:
        if path != self._path:
            if self._file is not None:
                self._file.close()
            self._file, self._path = None, None
            self._file = self._opener(path)
            self._path = path
        return self._file
