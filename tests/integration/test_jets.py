"""The two-input jet tagger end to end on the real Triton: ROOT files with jagged constituents, the
workflow's preprocess and postprocess hooks, results compared with the tagger in numpy; bad items
fail alone, a failing hook fails its batch's items with its message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from dgaas_flow.campaign.sink import read_parts
from tests.conftest import run_cli
from tests.jets import JETS, prepared_jets

pytestmark = pytest.mark.integration


def jets_folder(tmp_path: Path, **edit) -> tuple[Path, object]:
    prep = prepared_jets()
    folder = tmp_path / "wf"
    (folder / "data").mkdir(parents=True)
    prep.write_root(folder / "data" / "root", 300, 3)
    (folder / "data" / "root" / "broken.root").write_text("not a ROOT file")
    shutil.copy(JETS / "hooks.py", folder / "hooks.py")
    (folder / "model_repository").symlink_to(JETS / "model_repository")
    wf = yaml.safe_load((JETS / "workflow.yaml").read_text())
    wf.update(edit)
    (folder / "workflow.yaml").write_text(yaml.safe_dump(wf))
    return folder / "workflow.yaml", prep


def read_results(out: Path) -> list[dict]:
    """The run's records, whichever format the workflow wrote."""
    if (out / "results.jsonl").exists():
        return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return read_parts(out / "results").to_pylist()


def test_jets_from_root_through_hooks_match_the_reference(tmp_path):
    path, prep = jets_folder(tmp_path)
    out = tmp_path / "run"
    result = run_cli("run", path, "--out", out, "--progress", "log")
    assert result.returncode == 1, result.stderr  # 1: some items failed (the broken file)
    assert "results/manifest.json" in result.stdout and not (out / "results.jsonl").exists()
    table = read_parts(out / "results")  # the workflow's outputs.format: parquet
    records = {r["id"]: r for r in table.to_pylist()}
    assert len(records) == 301  # 3 files of 100 jets, and the broken file's one error
    assert not records["broken.root"]["ok"] and records["broken.root"]["error"].startswith("cannot read:")
    assert records["broken.root"]["row"] is None and records["broken.root"]["file"].endswith("broken.root")
    assert table.schema.field("p_b").type == "float" and table.schema.field("constituents").type == "int64"
    for i in range(3):
        jets = prep.make_jets(100, prep.SEED + i)
        expected = prep.reference(jets["points"], jets["features"])
        got = np.array([[records[f"jets_{i:02d}.root:{k}"][f"p_{f}"] for f in ("light", "c", "b")]
                        for k in range(100)], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        best = [records[f"jets_{i:02d}.root:{k}"]["prediction"] for k in range(100)]
        assert best == [prep.FLAVOURS[j] for j in expected.argmax(axis=1)]
        assert [records[f"jets_{i:02d}.root:{k}"]["row"] for k in range(100)] == list(range(100))
        counts = (np.abs(jets["points"]).sum(axis=2) > 0).sum(axis=1)
        assert [records[f"jets_{i:02d}.root:{k}"]["constituents"] for k in range(100)] == counts.tolist()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items_ok"], summary["items_failed"]) == (300, 1)


def test_jets_as_parquet_and_as_jsonl_hold_the_same_results_and_counts(tmp_path):
    """The same workflow in both formats: the same records (arrays as arrays in Parquet: the raw
    `probs` output kept as a list column) and the same summary counts; a rerun resumes the parquet
    folder with nothing to do and keeps every item once."""
    summaries, tables = {}, {}
    for fmt in ("jsonl", "parquet"):
        path, prep = jets_folder(tmp_path / fmt, outputs={"top_k": 0, "format": fmt})
        result = run_cli("run", path, "--out", tmp_path / fmt / "run", "--progress", "quiet")
        assert result.returncode == 1, result.stderr
        summaries[fmt] = json.loads((tmp_path / fmt / "run" / "summary.json").read_text())
        tables[fmt] = {r["id"]: r for r in read_results(tmp_path / fmt / "run")}
    keys = ("items_total", "items_ok", "items_failed", "items_this_run", "failures_by_reason")
    assert {k: summaries["jsonl"][k] for k in keys} == {k: summaries["parquet"][k] for k in keys}
    assert summaries["parquet"]["results"] == "results/manifest.json"
    assert tables["jsonl"].keys() == tables["parquet"].keys()
    probs = read_parts(tmp_path / "parquet" / "run" / "results", columns=["id", "output"])
    assert probs.schema.field("output").type.value_type == "float"  # the model's FP32, as a list per item
    for item_id, line in tables["jsonl"].items():
        row = tables["parquet"][item_id]
        assert row["ok"] == line["ok"]
        assert (row["error"] or "").replace("/parquet/", "/") == line.get("error", "").replace("/jsonl/", "/")
        if line["ok"]:
            np.testing.assert_allclose(row["output"], line["output"], rtol=1e-6)
            assert row["constituents"] == line["constituents"]
    again = run_cli("run", tmp_path / "parquet" / "wf" / "workflow.yaml", "--out", tmp_path / "parquet" / "run",
                    "--progress", "quiet")
    assert again.returncode == 1, again.stderr  # the broken file is tried again, and fails again
    resumed = json.loads((tmp_path / "parquet" / "run" / "summary.json").read_text())
    assert (resumed["items_resumed"], resumed["items_this_run"], resumed["items_ok"]) == (300, 1, 300)
    ids = [r["id"] for r in read_results(tmp_path / "parquet" / "run")]
    assert len(ids) == len(set(ids)) == 301


def test_a_failing_hook_fails_its_items_with_its_message_and_nothing_is_lost(tmp_path):
    path, prep = jets_folder(tmp_path)
    odd = prep.write_root(tmp_path / "odd", 40, 1)[0]  # 40 jets whose features the hook refuses
    uproot = pytest.importorskip("uproot")
    with uproot.open(odd) as f:
        branches = f["Events"].arrays(library="ak")
    with uproot.recreate(path.parent / "data" / "root" / "odd.root") as f:
        f["Events"] = {**{k: branches[k] for k in ("part_pt", "part_eta", "part_phi")},
                       "jet_features": np.full((40, 4), 99.0, np.float32)}
    hooks = path.parent / "hooks.py"
    hooks.write_text(hooks.read_text() + """

def picky(batch):
    if (batch["jet_features"] > 50).any():
        raise ValueError("a jet feature above 50")
    return pack(batch)
""")
    wf = yaml.safe_load(path.read_text())
    wf["preprocess"] = "hooks:picky"
    wf["postprocess"] = None
    path.write_text(yaml.safe_dump(wf))
    out = tmp_path / "run"
    result = run_cli("run", path, "--out", out, "--progress", "log")
    assert result.returncode == 1, result.stderr  # 1: some items failed
    records = read_results(out)
    assert len(records) == 341 and len({r["id"] for r in records}) == 341
    failed = {r["id"]: r["error"] for r in records if not r["ok"] and r["id"] != "broken.root"}
    assert set(failed) == {f"odd.root:{k}" for k in range(40)}
    assert all(e.startswith("preprocess failed:") and "a jet feature above 50" in e for e in failed.values())
    assert sum(r["ok"] for r in records) == 300
