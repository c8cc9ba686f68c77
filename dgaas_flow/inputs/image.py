"""`format: image`: one picture file (PNG, JPEG, ... anything Pillow opens) is one item."""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class ImageReader:
    rows: ClassVar[bool] = False

    def count(self, path: str) -> int | None:
        return 1

    def read(self, path: str, start: int | None, stop: int | None) -> np.ndarray:
        from PIL import Image  # a task that reads no image does not pay for Pillow

        with Image.open(path) as img:
            return np.asarray(img)[None]
