"""Where the benchmark finds the project's workflows and puts its items, runs and results."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_WORK = ROOT / "runs" / "bench-fanout"
