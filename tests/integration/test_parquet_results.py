"""`outputs.format: parquet` on the real Triton: a digits campaign run partly, left with a part a
killed run was writing, then resumed, ends with each item exactly once, its records those of the
same campaign written as JSON lines, and the same counts in summary.json."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from tests.conftest import WORKFLOW, copy_workflow, run_cli

pytestmark = pytest.mark.integration


def test_a_resumed_parquet_run_ends_with_each_item_once_like_jsonl(tmp_path, digits_data):
    runs = {}
    for fmt in ("jsonl", "parquet"):
        text = WORKFLOW.read_text().replace("  top_k: 1 ", f"  format: {fmt}\n  part_rows: 500\n  top_k: 2 ")
        path = copy_workflow(tmp_path / fmt, text, digits_data / "images")
        out = runs[fmt] = tmp_path / fmt / "run"
        first = run_cli("run", path, "--out", out, "--limit", "700", "--progress", "quiet")
        assert first.returncode == 0, first.stderr
        if fmt == "parquet":
            parts = out / "results"
            manifest = json.loads((parts / "manifest.json").read_text())
            assert sum(p["rows"] for p in manifest["parts"]) == manifest["rows"] == 700
            assert all(pq.ParquetFile(parts / p["file"]).metadata.num_rows == p["rows"] for p in manifest["parts"])
            (parts / "part-00042.parquet").write_bytes(b"PAR1 half a part, its footer never written")
        again = run_cli("run", path, "--out", out, "--progress", "quiet")
        assert again.returncode == 0, again.stderr

    from dgaas_flow.campaign.sink import read_parts

    table = read_parts(runs["parquet"] / "results")
    assert not (runs["parquet"] / "results" / "part-00042.parquet").exists()
    counts = Counter(table.column("id").to_pylist())
    assert len(counts) == 1797 and set(counts.values()) == {1}
    lines = {r["id"]: r for r in map(json.loads, (runs["jsonl"] / "results.jsonl").read_text().splitlines())}
    for row in table.to_pylist():
        line = lines[row["id"]]
        assert (row["ok"], row["prediction"], row["label"], row["correct"]) == (
            line["ok"], line["prediction"], line["label"], line["correct"])
        assert row["score"] == pytest.approx(line["score"], abs=1e-6)
        assert [[t["class"], round(t["score"], 6)] for t in row["top"]] == line["top"]
        assert row["file"].endswith(row["id"]) and row["row"] is None
    summaries = {fmt: json.loads((out / "summary.json").read_text()) for fmt, out in runs.items()}
    keys = ("items_total", "items_ok", "items_failed", "items_resumed", "items_this_run", "accuracy",
            "failures_by_reason")
    assert {k: summaries["parquet"][k] for k in keys} == {k: summaries["jsonl"][k] for k in keys}
    assert summaries["parquet"]["items_resumed"] == 700
    assert [p["items"] for p in summaries["parquet"]["pilots"]] == [p["items"] for p in summaries["jsonl"]["pilots"]]
