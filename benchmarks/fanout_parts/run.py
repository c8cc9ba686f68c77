"""What one benchmark (a model, an item count, a worker count) measured on each path, and the
rates and ratios the tables and the JSON are made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Run:
    """One benchmark's results: each path's measurement, None where the path did not run."""

    model: str
    items: int
    workers: int
    chunk_size: int
    loadavg: list[float]
    ceiling: dict[str, Any] | None = None
    dgaas: dict[str, Any] | None = None
    warm: dict[str, Any] | None = None
    naive: dict[str, Any] | None = None
    floor: dict[str, Any] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def rate(self, path: str) -> float | None:
        """items/s of one path (its field's name), None where it did not run."""
        part = getattr(self, path)
        return None if part is None else part["items_per_s"]

    def rates(self) -> dict[str, float | None]:
        """items/s of every path under the names the JSON and the plots use."""
        return {"ceiling": self.rate("ceiling"), "dgaas": self.rate("dgaas"),
                "dgaas_steady": self.dgaas["steady_items_per_s"] if self.dgaas else None,
                "dgaas_warm": self.rate("warm"), "naive": self.rate("naive"), "parsl_floor": self.rate("floor")}

    def row(self) -> dict[str, Any]:
        """The run as the JSON reports it: rates, ratios, the dgaas path's numbers, the paths' settings."""
        rates = self.rates()
        c, d, ds, dw, n = (rates[k] for k in ("ceiling", "dgaas", "dgaas_steady", "dgaas_warm", "naive"))
        out: dict[str, Any] = {
            "items": self.items, "workers": self.workers, "chunk_size": self.chunk_size,
            "items_per_s": rates,
            "parsl_floor_tasks_per_s": self.floor["tasks_per_s"] if self.floor else None,
            "dgaas_over_ceiling": _ratio(d, c), "dgaas_steady_over_ceiling": _ratio(ds, c),
            "dgaas_warm_over_ceiling": _ratio(dw, c),
            "dgaas_over_naive": _ratio(d, n),
            "time_to_first_result_s": self.dgaas["time_to_first_result_s"] if self.dgaas else None,
            "first_result_from_command_s": self.dgaas["first_result_from_command_s"] if self.dgaas else None,
            "driver_peak_rss_mb": self.dgaas["driver_peak_rss_mb"] if self.dgaas else None,
            "loadavg": self.loadavg,
        }
        if self.ceiling:
            out["ceiling"] = {k: self.ceiling[k] for k in ("protocol", "batch", "procs", "errors")}
            after = self.ceiling.get("after_items_per_s")
            out["ceiling"]["after_items_per_s"], out["ceiling"]["drift"] = after, _ratio(after, c)
        if self.dgaas:
            out["dgaas"] = {k: self.dgaas[k] for k in ("campaign_wall_s", "command_wall_s", "failed", "requests",
                                                        "latency_ms", "triton", "cpu_us_per_item",
                                                        "steady_cpu_us_per_item")}
        if self.warm:
            out["warm"] = {k: self.warm[k] for k in ("campaign_wall_s", "call_wall_s", "time_to_first_result_s",
                                                      "failed", "requests", "triton", "repeats_items_per_s")}
        if self.naive:
            out["naive"] = {k: self.naive[k] for k in ("load_s_per_task", "infer_s_per_task", "tasks")}
        return out


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None where either is missing (or zero)."""
    return round(a / b, 3) if a and b else None
