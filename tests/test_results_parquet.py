"""outputs.format parquet without servers: a chunk's columns (records.ChunkColumns) carry what its
JSON lines carry, as arrays; results/ (sink.ResultsParts) writes parts and their manifest, resumes
from the parts' ids, drops recorded errors and a part a killed run left, and counts what
summary.json counts exactly as results.jsonl does."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dgaas_flow.campaign.records import ChunkColumns, ChunkRecords, quote, read_arrow
from dgaas_flow.campaign.sink import ResultsFile, ResultsParts, read_parts

DIGITS = [str(d) for d in range(10)]


def _chunk(kind, ids: list[str], labels: list[str | None], fill=None):
    chunk = kind(quote(ids), labels) if kind is ChunkRecords else kind(quote(ids), labels,
                                                                        [("/data/x.npy", 0, len(ids))])
    (fill or _fill)(chunk, len(ids))
    return chunk


def _fill(chunk, n: int) -> None:
    """Every other item ok (a request of them), the rest failed."""
    good = list(range(0, n, 2))
    out = np.eye(10, dtype=np.float32)[[p % 10 for p in good]] * 0.75
    extra = {"energy": np.arange(len(good), dtype=np.float64) + 0.5,
             "vec": np.arange(len(good) * 6, dtype=np.float32).reshape(len(good), 2, 3),
             "ok": np.array(["a"] * len(good))}  # a hook column named as a record's field
    chunk.succeed(good, out, 2, DIGITS, "http://p:1", "0", 1.25, extra=extra)
    bad = [p for p in range(n) if p % 2]
    if bad:
        chunk.fail(bad, "cannot read: x: broken", None)


def test_a_chunks_columns_hold_what_its_json_lines_hold_with_arrays_as_arrays():
    ids, labels = [f"x.npy:{k}" for k in range(6)], ["0", "1", "2", None, "9", "5"]
    lines = [json.loads(line) for line in _chunk(ChunkRecords, ids, labels).outcome([1.25])["jsonl"].splitlines()]
    columns = _chunk(ChunkColumns, ids, labels)
    outcome = columns.outcome([1.25])
    table = read_arrow(outcome["arrow"])
    assert table.column("file").to_pylist() == ["/data/x.npy"] * 6 and table.column("row").to_pylist() == list(range(6))
    assert table.schema.field("vec").type == pa.list_(pa.list_(pa.float32()))
    vec = np.stack([np.array(v, dtype=np.float32) for v in table.column("vec").to_pylist() if v is not None])
    np.testing.assert_array_equal(vec, np.arange(18, dtype=np.float32).reshape(3, 2, 3))
    for line, row in zip(lines, table.to_pylist(), strict=True):
        assert row["id"] == line["id"] and row["ok"] == line["ok"] and row.get("error") == line.get("error")
        assert row["label"] == line.get("label") and row["correct"] == line.get("correct")
        if line["ok"]:
            assert (row["prediction"], row["score"], row["energy"]) == (line["prediction"], line["score"],
                                                                         line["energy"])
            assert [[t["class"], t["score"]] for t in row["top"]] == line["top"]
            assert row["output_ok"] == line["output_ok"] and row["latency_ms"] == line["latency_ms"]
            assert np.array(row["vec"]).reshape(-1).tolist() == line["vec"]
        else:
            assert row["prediction"] is None and row["vec"] is None and row["latency_ms"] is None
    records = _chunk(ChunkRecords, ids, labels)
    counts = records.outcome([1.25])
    assert {k: outcome[k] for k in counts if k != "jsonl"} == {k: counts[k] for k in counts if k != "jsonl"}


def test_raw_outputs_and_whole_file_items():
    chunk = ChunkColumns(quote(["a.npy", "b.npy"]), [None, None], [("/d/a.npy", None, 1), ("/d/b.npy", None, 1)])
    chunk.succeed([0, 1], np.array([[1.5, 2.5], [3.5, 4.5]], dtype=np.float32), 0, [], "http://p:1", None, 2.0)
    table = read_arrow(chunk.outcome([2.0])["arrow"])
    assert table.column("row").to_pylist() == [None, None]
    assert table.column("output").to_pylist() == [[1.5, 2.5], [3.5, 4.5]]
    assert table.schema.field("output").type == pa.list_(pa.float32())
    assert "prediction" not in table.schema.names and "label" not in table.schema.names


def _outcome(ids: list[str], fill=None) -> dict:
    return _chunk(ChunkColumns, ids, ["0"] * len(ids), fill).outcome([1.0])


def test_parts_and_manifest_resume_from_the_ids_dropping_errors_and_a_killed_runs_part(tmp_path):
    folder = tmp_path / "results"
    parts = ResultsParts(folder, part_rows=5)
    all_failed = lambda chunk, n: chunk.fail(range(n), "cannot read: x: gone", None)  # noqa: E731
    parts.append(_outcome(["f0", "f1"], all_failed))  # failures only: held until a success gives the columns
    for k in range(3):
        parts.append(_outcome([f"c{k}:{i}" for i in range(4)]))
    parts.close()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p["rows"] for p in manifest["parts"]] == [6, 8] and manifest["rows"] == 14
    everything = read_parts(folder)
    assert everything.num_rows == 14 and sorted(everything.column("id").to_pylist())[:2] == ["c0:0", "c0:1"]
    assert parts.tally.ok == 6 and parts.tally.failed == 8
    # a part a killed run was writing: not in the manifest, so removed; its items are done again
    with pq.ParquetWriter(folder / "part-00009.parquet", everything.schema) as w:
        w.write_table(everything.slice(0, 2))
    (folder / "part-00010.parquet").write_bytes(b"PAR1 torn")

    again = ResultsParts(folder, part_rows=5)
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    kept = read_parts(folder)
    assert sorted(kept.column("id").to_pylist()) == sorted(f"c{k}:{i}" for k in range(3) for i in (0, 2))
    assert kept.column("ok").to_pylist() == [True] * 6
    assert len(again.done) == 6 and "c1:2" in again.done and "c1:1" not in again.done and "f0" not in again.done
    assert (again.tally.ok, again.tally.failed, again.tally.labelled) == (6, 0, 6)
    again.append(_outcome(["c1:1", "f0"], lambda chunk, n: chunk.succeed(
        [0, 1], np.eye(10, dtype=np.float32)[[0, 0]], 2, DIGITS, "http://p:2", "0", 1.0,
        extra={"energy": np.zeros(2), "vec": np.zeros((2, 2, 3), np.float32), "ok": np.array(["b", "b"])})))
    again.close()
    final = read_parts(folder)
    assert final.num_rows == 8 and len(set(final.column("id").to_pylist())) == 8
    assert again.tally.pilots == {"http://p:1": 6, "http://p:2": 2}


def test_the_same_chunks_count_the_same_in_both_formats(tmp_path):
    ids = [[f"c{k}:{i}" for i in range(5)] for k in range(3)]
    jsonl, parquet = ResultsFile(tmp_path / "results.jsonl"), ResultsParts(tmp_path / "results")
    for chunk_ids in ids:
        jsonl.append(_chunk(ChunkRecords, chunk_ids, ["0", "2", "4", "1", "8"]).outcome([1.0]))
        parquet.append(_chunk(ChunkColumns, chunk_ids, ["0", "2", "4", "1", "8"]).outcome([1.0]))
    jsonl.close()
    parquet.close()
    assert jsonl.tally == parquet.tally
    resumed_jsonl, resumed_parquet = ResultsFile(tmp_path / "results.jsonl"), ResultsParts(tmp_path / "results")
    assert resumed_jsonl.tally == resumed_parquet.tally and len(resumed_jsonl.done) == len(resumed_parquet.done)
    resumed_jsonl.close()
    resumed_parquet.close()


@pytest.mark.parametrize("first, second", [("jsonl", "parquet"), ("parquet", "jsonl")])
def test_a_folder_of_one_format_is_not_resumed_in_the_other(tmp_path, digits_data, first, second):
    from dgaas_flow.campaign.fanout import open_results
    from dgaas_flow.errors import UserError
    from dgaas_flow.specs import load_workflow
    from tests.conftest import WORKFLOW

    wf = load_workflow(WORKFLOW)
    wf.outputs.format = first
    results, continued = open_results(wf, tmp_path)
    results.close()
    assert not continued
    (tmp_path / "results" / "manifest.json").write_text('{"parts": []}') if first == "parquet" else None
    wf.outputs.format = second
    with pytest.raises(UserError, match="results of another outputs.format"):
        open_results(wf, tmp_path)
