"""Rounding for numbers that may be missing (a path that did not run, a timeline too short)."""

from __future__ import annotations


def round_or_none(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)
