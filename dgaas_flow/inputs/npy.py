"""`format: npy`: one .npy file is one item (its whole array), field `array`."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from dgaas_flow.inputs.base import Batch, InputBase


class NpySpec(InputBase):
    format: Literal["npy"] = Field(description="npy: one .npy file is one item")

    def reader(self) -> NpyReader:
        return NpyReader()


class NpyReader:
    rows: ClassVar[bool] = False
    fields: ClassVar[tuple[str, ...]] = ("array",)

    def count(self, path: str) -> int | None:
        return 1

    def read(self, path: str, start: int | None, stop: int | None) -> Batch:
        return {"array": np.load(path, allow_pickle=False)[None]}
