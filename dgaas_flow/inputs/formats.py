"""The readers by `inputs.format`: the built-in formats, one module each, and readers from other
packages, named `module:Class` or by an entry point in the `dgaas_flow.readers` group.

The workflow's `inputs` is a union keyed on `format`, so each format's own fields are checked (a
`tree` only for ROOT, `columns` for Parquet). A plugin reader is a class with the `Reader` protocol
whose constructor takes the workflow's `inputs.options` as keyword arguments."""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, TypeAdapter, field_validator

from dgaas_flow.inputs.base import InputBase, Reader
from dgaas_flow.inputs.hdf5 import Hdf5Spec
from dgaas_flow.inputs.image import ImageSpec
from dgaas_flow.inputs.npy import NpySpec
from dgaas_flow.inputs.npz import NpzSpec
from dgaas_flow.inputs.parquet import ParquetSpec
from dgaas_flow.inputs.root import RootSpec
from dgaas_flow.inputs.rows import RowsSpec

SPECS: dict[str, type[InputBase]] = {"image": ImageSpec, "npy": NpySpec, "rows": RowsSpec, "npz": NpzSpec,
                                     "parquet": ParquetSpec, "hdf5": Hdf5Spec, "root": RootSpec}
ENTRY_POINTS = "dgaas_flow.readers"


def plugin_class(name: str) -> type:
    """The reader class `module:Class`, or the one an installed package registers as `name`."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load reader {name}: {type(exc).__name__}: {exc}") from None
        return obj
    found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == name]
    if not found:
        raise ValueError(f"unknown format {name!r}: one of {', '.join(SPECS)}, a reader `module:Class`, or an "
                         f"entry point in the {ENTRY_POINTS} group")
    return found[0].load()


class PluginSpec(InputBase):
    format: str = Field(description="a reader from another package: `module:Class` or an entry point name")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the reader's class")

    @field_validator("format")
    @classmethod
    def _loads(cls, value: str) -> str:
        reader = plugin_class(value)
        if not all(hasattr(reader, a) for a in ("count", "read")):
            raise ValueError(f"{value} is not a reader (it needs count() and read(); see dgaas_flow.inputs.base)")
        return value

    def reader(self) -> Reader:
        return plugin_class(self.format)(**self.options)


def _which(value: Any) -> str:
    fmt = value.get("format", "image") if isinstance(value, dict) else getattr(value, "format", "image")
    return fmt if isinstance(fmt, str) and fmt in SPECS else "plugin"


InputSpec = Annotated[
    Annotated[ImageSpec, Tag("image")] | Annotated[NpySpec, Tag("npy")] | Annotated[RowsSpec, Tag("rows")]
    | Annotated[NpzSpec, Tag("npz")] | Annotated[ParquetSpec, Tag("parquet")] | Annotated[Hdf5Spec, Tag("hdf5")]
    | Annotated[RootSpec, Tag("root")] | Annotated[PluginSpec, Tag("plugin")],
    Discriminator(_which),
]
FORMAT_TAGS = (*SPECS, "plugin")


@functools.cache
def _spec_adapter() -> TypeAdapter:
    """Built once per process: building it costs a millisecond or two, as much as a task's thousand
    items."""
    return TypeAdapter(InputSpec)


def input_spec(data: dict[str, Any] | InputBase | str, files: str = "") -> InputBase:
    """A format's spec from a mapping (as the workflow holds it), itself, or a format name."""
    if isinstance(data, InputBase):
        return data
    if isinstance(data, str):
        data = {"format": data, "files": files}
    return _spec_adapter().validate_python(data)


def reader_for(spec: dict[str, Any] | InputBase | str) -> Reader:
    return input_spec(spec).reader()


READERS = SPECS  # the built-in formats by name
