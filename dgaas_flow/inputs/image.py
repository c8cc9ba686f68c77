"""`format: image`: one picture file (PNG, JPEG, ... anything Pillow opens) is one item, field `image`.

The header is read first: an image larger than `max_pixels` (or than the model's input, which the
task sets) is refused before it is decoded, and a palette or unusual mode is converted only when
`mode` says to what (a palette index is not an intensity)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from dgaas_flow.inputs.base import Batch, InputBase

DECODE_FREELY = 1_000_000  # pixels: a few megabytes decoded at most
PLAIN_MODES = {"1", "L", "RGB", "RGBA", "I;16", "I", "F", "LA", "CMYK", "YCbCr"}


class ImageSpec(InputBase):
    format: Literal["image"] = Field("image", description="image: one picture file (Pillow) is one item")
    mode: str | None = Field(None, description="Pillow mode to convert to (L, RGB, ...); default: as stored, "
                             "palette images refused")
    max_pixels: int = Field(100_000_000, ge=1, description="larger images are refused from their header")

    def reader(self) -> ImageReader:
        return ImageReader(self.mode, self.max_pixels)


class ImageReader:
    rows: ClassVar[bool] = False
    fields: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, mode: str | None = None, max_pixels: int = 100_000_000):
        self.mode, self.max_pixels = mode, max_pixels
        self.model_pixels: int | None = None  # the model's own bound, set by the task when it is fixed

    def count(self, path: str) -> int | None:
        return 1

    def read(self, path: str, start: int | None, stop: int | None) -> Batch:
        from PIL import Image  # a task that reads no image does not pay for Pillow

        with Image.open(path) as img:  # reads the header only
            w, h = img.size
            # refused from the header when larger than the model takes and than DECODE_FREELY; a small
            # one is decoded, so its shape error names its exact shape
            if self.model_pixels is not None and w * h > max(self.model_pixels, DECODE_FREELY):
                raise ValueError(f"image is {w}x{h}, more pixels than the model input takes ({self.model_pixels})")
            if w * h > self.max_pixels:
                raise ValueError(f"image is {w}x{h}, more than inputs.max_pixels ({self.max_pixels})")
            if self.mode is not None and img.mode != self.mode:
                img = img.convert(self.mode)
            elif self.mode is None and img.mode not in PLAIN_MODES:
                raise ValueError(f"image mode {img.mode} (palette or unusual): set inputs.mode (e.g. L or RGB) "
                                 "to convert it")
            return {"image": np.asarray(img)[None]}
