"""benchmarks/fanout.py runs end to end: every path measures something, and its JSON line is
consistent with itself. No timing thresholds: the machine is shared and noisy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.fanout_parts.campaign import steady_rate
from benchmarks.fanout_parts.tune import _variant_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "fanout.py"


def test_steady_rate_leaves_out_start_and_tail():
    points = [(0.0, 0), (2.0, 0), (3.0, 100), (4.0, 600), (5.0, 1000)]
    # 10% (100 items) at t=3.0, 90% (900 items) at t=4.75: 800 items in 1.75 s
    assert steady_rate(points, 1000) == pytest.approx(800 / 1.75)
    assert steady_rate([(0.0, 0), (3.0, 500)], 1000) is None  # never reached 90%


def test_server_config_variants_change_only_what_they_name():
    config = (ROOT / "workflows" / "heavy" / "model_repository" / "heavy" / "config.pbtxt").read_text()
    changed = _variant_config(config, 2048, 500, 2, 3)
    assert "max_batch_size: 2048" in changed and "max_queue_delay_microseconds: 500" in changed
    assert "count: 2" in changed and 'string_value: "3"' in changed
    assert changed.count("\n") == config.count("\n")


@pytest.mark.integration
def test_fanout_benchmark_end_to_end(tmp_path: Path):
    """Every path for a model of one input (heavy, rows files) and one of two (jets, .npz files)."""
    results = tmp_path / "results"
    cmd = [sys.executable, str(SCRIPT), "--model", "heavy,jets", "--items", "2000", "--work", str(tmp_path / "work"),
           "--results", str(results), "--ceiling-protocols", "http", "--ceiling-batches", "256,0",
           "--ceiling-procs", "2", "--search-seconds", "0.5", "--ceiling-min-seconds", "0.5", "--floor-tasks", "50",
           "--warm-repeats", "2", "--warm-campaigns", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])

    assert summary["benchmark"] == "fanout"
    assert summary["machine"]["cpus"] >= 1 and summary["machine"]["memory_gb"] > 0
    assert "--items 2000" in summary["command"]
    for name in ("heavy", "jets"):
        model = summary["models"][name]
        assert model["items"] == 2000
        rates = model["items_per_s"]
        for path in ("ceiling", "dgaas", "dgaas_warm", "naive", "parsl_floor"):
            assert rates[path] > 0, (name, path)
        assert model["dgaas_over_ceiling"] == pytest.approx(rates["dgaas"] / rates["ceiling"], abs=1e-3)
        assert model["dgaas_warm_over_ceiling"] == pytest.approx(rates["dgaas_warm"] / rates["ceiling"], abs=1e-3)
        warm = model["warm"]  # later campaigns in a session: their own items, time and server figures
        assert warm["failed"] == 0 and warm["call_wall_s"] > warm["campaign_wall_s"] > 0
        rates_seen = sorted(warm["repeats_items_per_s"])  # 2 sessions of 2 campaigns: the lower middle one
        assert len(rates_seen) == 4 and rates["dgaas_warm"] == rates_seen[1]
        assert warm["triton"][0]["requests"] == warm["requests"] > 0
        assert model["dgaas_over_naive"] == pytest.approx(rates["dgaas"] / rates["naive"], abs=1e-3)
        after = model["ceiling"]["after_items_per_s"]  # measured again once the other paths have run
        assert after > 0 and model["ceiling"]["drift"] == pytest.approx(after / rates["ceiling"], abs=1e-3)
        assert model["ceiling"]["errors"] == 0 and model["time_to_first_result_s"] > 0
        assert model["driver_peak_rss_mb"] > 0
        assert model["dgaas"]["failed"] == 0

        # every item of the campaign and of the naive path has its one result
        run_dir = tmp_path / "work" / name / "n2000-w2"
        for results_file in (run_dir / "run" / "results.jsonl", run_dir / "warm" / "c1" / "results.jsonl",
                             run_dir / "warm" / "c2" / "results.jsonl", run_dir / "naive" / "results.jsonl"):
            ids = [json.loads(line)["id"] for line in results_file.read_text().splitlines()]
            assert len(ids) == len(set(ids)) == 2000
        # the campaign and the naive path ran the same model on the same items
        served = {r["id"]: r["prediction"] for r in map(json.loads, (run_dir / "run" / "results.jsonl").open())}
        naive = {r["id"]: r["prediction"] for r in map(json.loads, (run_dir / "naive" / "results.jsonl").open())}
        warm = {r["id"]: r["prediction"] for r in map(json.loads, (run_dir / "warm" / "c2" / "results.jsonl").open())}
        assert served == naive == warm

        assert (results / "fanout.md").read_text().count(f"| {name} |") == 1
        assert json.loads((results / "fanout.json").read_text())["models"][name]["items"] == 2000


@pytest.mark.integration
def test_compare_runs_both_trees_in_turn(tmp_path: Path):
    """benchmarks/compare.py: warm campaigns of a revision's tree and of this one, each session
    in turn, every campaign complete; the revision's worktree is gone afterwards."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--base", "HEAD", "--items", "2000",
           "--rounds", "2", "--campaigns", "2", "--work", str(tmp_path / "work")]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.strip().splitlines()
    assert [line.split()[:3] for line in lines[:4]] == [["round", "1", "base"], ["round", "1", "this"],
                                                        ["round", "2", "base"], ["round", "2", "this"]]
    summary = json.loads(lines[-1])
    assert summary["benchmark"] == "compare" and summary["items"] == 2000
    for tree in ("base", "this"):
        assert len(summary["wall_seconds"][tree]) == 4 and min(summary["wall_seconds"][tree]) > 0
    assert summary["this_over_base"] == pytest.approx(summary["median_s"]["this"] / summary["median_s"]["base"])
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "dgaas-compare-" not in worktrees
