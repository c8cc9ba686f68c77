"""Campaign bookkeeping without servers: item enumeration, resume and the summary."""

from __future__ import annotations

import json

from dgaas_flow.campaign import ResultsFile, RunStats, enumerate_items, summarize
from dgaas_flow.spec import load_workflow
from tests.conftest import WORKFLOW


def test_items_have_stable_relative_ids_and_folder_labels(digits_data):
    wf = load_workflow(WORKFLOW)
    items = list(enumerate_items(wf))
    assert len(items) == 1797
    assert items[0].id == "0/0000.png" and items[0].label == "0"
    assert [i.id for i in enumerate_items(wf, limit=3)] == [i.id for i in items[:3]]
    assert all(i.id.split("/")[0] == i.label for i in items)


def test_resume_keeps_each_success_once_and_retries_errors_and_torn_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [
        {"id": "a", "ok": True, "prediction": "1"},
        {"id": "b", "ok": False, "error": "TimeoutError: x"},
        {"id": "a", "ok": True, "prediction": "1"},
        {"id": "c", "ok": True, "prediction": "2"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"id": "d", "ok": tr')
    results = ResultsFile(path)
    assert results.done == {"a", "c"}
    results.write([{"id": "b", "ok": True}, {"id": "d", "ok": True}])
    results.close()
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == ["a", "c", "b", "d"]


def test_summary_counts_the_whole_campaign_and_this_runs_speed(tmp_path, digits_data):
    wf = load_workflow(WORKFLOW)
    records = [
        {"id": "1", "ok": True, "prediction": "3", "label": "3", "correct": True, "pilot": "http://p:1"},
        {"id": "2", "ok": True, "prediction": "4", "label": "5", "correct": False, "pilot": "http://p:1"},
        {"id": "3", "ok": False, "error": "cannot read x: bad", "label": "1", "pilot": None},
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    stats = RunStats(items=2, resumed=1, latencies_ms=[1.0, 2.0, 3.0, 4.0])
    s = summarize(wf, tmp_path, total=3, stats=stats)
    assert (s["items_total"], s["items_ok"], s["items_failed"]) == (3, 2, 1)
    assert s["accuracy"] == 0.5
    assert s["pilots"] == [{"endpoint": "http://p:1", "items": 2}]
    assert s["failures_by_reason"] == {"cannot read x": 1}
    assert s["latency_ms"]["p50"] == 2.5 and s["requests"] == 4
