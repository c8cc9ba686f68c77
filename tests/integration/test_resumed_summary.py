"""A run folder run twice, as the README says (`dgaas-flow run` again resumes, then `dgaas-flow
report`): summary.json and the report describe the whole folder, both runs' requests and latency,
while its this-run fields say what the last call did."""

from __future__ import annotations

import json

import pytest

from tests.conftest import WORKFLOW, run_cli
from tests.report.pages import Page, number

pytestmark = pytest.mark.integration


def test_a_resumed_run_summarizes_and_reports_every_runs_requests_and_latency(tmp_path, digits_data):
    out = tmp_path / "run"
    first = run_cli("run", WORKFLOW, "--out", out, "--limit", "300", "--progress", "quiet")
    assert first.returncode == 0, first.stderr
    one = json.loads((out / "summary.json").read_text())
    assert one["items_ok"] == 300 and one["requests"] > 0 and len(one["segments"]) == 1

    second = run_cli("run", WORKFLOW, "--out", out, "--progress", "quiet")
    assert second.returncode == 0, second.stderr
    two = json.loads((out / "summary.json").read_text())
    assert (two["items_ok"], two["items_resumed"], two["items_this_run"]) == (1797, 300, 1497)
    assert [s["items"] for s in two["segments"]] == [300, 1497]
    assert [s["requests"] for s in two["segments"]] == [one["requests"], two["requests_this_run"]]
    assert two["requests"] == one["requests"] + two["requests_this_run"]
    assert sum(n for _, n in two["latency_ms"]["histogram"]) == two["requests"]
    assert two["latency_ms"]["max"] >= one["latency_ms"]["max"] and "latency_exact" not in two

    third = run_cli("run", WORKFLOW, "--out", out, "--progress", "quiet")  # nothing left: 0 items, 0 requests
    assert third.returncode == 0, third.stderr
    three = json.loads((out / "summary.json").read_text())
    assert (three["items_ok"], three["items_this_run"], three["requests_this_run"]) == (1797, 0, 0)
    assert three["requests"] == two["requests"] and three["latency_ms"] == two["latency_ms"]
    assert len(three["segments"]) == 3

    report = run_cli("report", out)
    assert report.returncode == 0, report.stderr
    page = Page((out / "report.html").read_text())
    assert number(page.by_id["h-requests"]) == two["requests"]
    assert number(page.by_id["h-p50"]) == two["latency_ms"]["p50"]
    assert number(page.by_id["h-p99"]) == two["latency_ms"]["p99"]
    assert number(page.by_id["h-items_this_run"]) == 0
    rows = page.tables["segments"]
    assert rows[0][:4] == ["run", "started", "complete", "items"]
    assert [(number(r[3]), number(r[7])) for r in rows[1:]] == [(s["items"], s["requests"]) for s in three["segments"]]
