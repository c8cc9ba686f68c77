"""The results table, one column list for the console and the markdown, so that the two show the
same numbers the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .run import Run


@dataclass(frozen=True)
class Column:
    """One column: its markdown title, its console title and width (no console title: markdown
    only), where its value is in the run's row, the format of a number, and its alignment ("<":
    left, on the console and in the markdown)."""

    title: str
    short: str | None
    width: int
    source: tuple[str | int, ...]
    spec: str = ""
    align: str = ">"

    def value(self, row: dict[str, Any]) -> Any:
        for key in self.source:
            row = row[key]
        return row


COLUMNS = (
    Column("model", "model", 7, ("model",), align="<"),
    Column("items", "items", 8, ("items",)),
    Column("workers", "wkr", 3, ("workers",)),
    Column("chunk", None, 0, ("chunk_size",)),
    Column("ceiling", "ceiling", 9, ("items_per_s", "ceiling"), ".0f"),
    Column("dgaas", "dgaas", 9, ("items_per_s", "dgaas"), ".0f"),
    Column("steady", "steady", 9, ("items_per_s", "dgaas_steady"), ".0f"),
    Column("warm", "warm", 9, ("items_per_s", "dgaas_warm"), ".0f"),
    Column("naive", "naive", 9, ("items_per_s", "naive"), ".0f"),
    Column("floor", "floor", 9, ("items_per_s", "parsl_floor"), ".0f"),
    Column("dgaas/ceiling", "d/ceil", 7, ("dgaas_over_ceiling",), ".3f"),
    Column("warm/ceiling", "w/ceil", 7, ("dgaas_warm_over_ceiling",), ".3f"),
    Column("dgaas/naive", "d/naive", 7, ("dgaas_over_naive",), ".2f"),
    Column("1st s", "1st s", 6, ("time_to_first_result_s",), ".2f"),
    Column("driver RSS MB", "RSS MB", 7, ("driver_peak_rss_mb",), ".1f"),
    Column("load avg", None, 0, ("loadavg", 0), ".2f", align="<"),
)


def _cell(value: Any, spec: str, width: int = 0, align: str = ">") -> str:
    """`value` formatted, padded to `width` when one is given; "-" where the path did not run."""
    if value is None or isinstance(value, str):  # a path that did not run; a chunk size of "auto"
        text = "-" if value is None else value
        return format(text, f">{width}") if width else text
    return format(value, f"{align}{width}{spec}" if width else spec)


def _rows(runs: list[Run]) -> list[dict[str, Any]]:
    return [{"model": r.model, **r.row()} for r in runs]


def table_lines(runs: list[Run]) -> list[str]:
    """The console table: fixed-width columns under short titles."""
    columns = [c for c in COLUMNS if c.short is not None]
    lines = [" ".join(_cell(c.short, "", c.width, c.align) for c in columns)]
    lines += [" ".join(_cell(c.value(row), c.spec, c.width, c.align) for c in columns) for row in _rows(runs)]
    return lines


def markdown_table(runs: list[Run]) -> list[str]:
    """The markdown table: every column."""
    lines = ["| " + " | ".join(c.title for c in COLUMNS) + " |",
             "|" + "|".join("---" if c.align == "<" else "---:" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cell(c.value(row), c.spec) for c in COLUMNS) + " |" for row in _rows(runs)]
    return lines
