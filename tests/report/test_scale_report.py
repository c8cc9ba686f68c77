"""A real scale test: 1, 2 and 3 local pilots (one per block), each step a real campaign; then its
report, opened in real headless Chromium. The data must show each step's pilots, items and
items/s, Triton's own counters must agree with the items the clients recorded, and the page must
show the numbers of scale.json and of each step's summary.json."""

from __future__ import annotations

import json

import pytest

from dgaas_flow.report.build import SCALE_FIGURES
from tests.conftest import DIGITS, copy_workflow, run_cli
from tests.report.test_report_browser import as_number, table

pytestmark = pytest.mark.integration

STEPS = (1, 2, 3)
ITEMS = 1200


def test_scale_test_of_one_two_three_pilots_and_its_report(tmp_path, digits_data, browser):
    text = (DIGITS / "scale-test.yaml").read_text().replace("items: 3000", f"items: {ITEMS}")
    workflow = copy_workflow(tmp_path / "wf", text, digits_data / "images")
    out = tmp_path / "scale"
    ran = run_cli("scale-test", workflow, "--out", out, "--progress", "log")
    assert ran.returncode == 0, ran.stderr
    assert "pilots" in ran.stdout and "step-3" in ran.stdout

    scale = json.loads((out / "scale.json").read_text())
    assert [s["pilots"] for s in scale["steps"]] == list(STEPS)
    assert [s["workers"] for s in scale["steps"]] == [2 * n for n in STEPS]
    for step in scale["steps"]:
        summary = json.loads((out / step["run_dir"] / "summary.json").read_text())
        assert step["items"] == summary["items_ok"] == ITEMS and step["failed"] == 0
        assert step["items_per_second"] > 0
        assert sum(step["items_per_pilot"].values()) == ITEMS
        assert len(step["triton"]) == step["pilots"]
        # each pilot's server counted exactly the items the clients say it served
        served = {t["endpoint"]: t["inferences"] for t in step["triton"]}
        assert served == step["items_per_pilot"]
        ids = [json.loads(line)["id"] for line in (out / step["run_dir"] / "results.jsonl").open()]
        assert len(ids) == len(set(ids)) == ITEMS  # the 1797 inputs, no id twice

    reported = run_cli("report", out)
    assert reported.returncode == 0, reported.stderr
    browser.get((out / "report.html").as_uri())
    images = browser.execute_script("return [...document.images].map(i => [i.alt, i.naturalWidth])")
    assert [alt.split(":")[0] for alt, _ in images] == list(SCALE_FIGURES.values())
    assert all(width > 0 for _, width in images)
    rows = table(browser, "steps")[1:]
    assert [r[0] for r in rows] == ["step-1", "step-2", "step-3"]
    header = table(browser, "steps")[0]
    for row, step in zip(rows, scale["steps"], strict=True):
        assert as_number(row[header.index("pilots")]) == step["pilots"]
        assert as_number(row[header.index("items")]) == step["items"]
        assert as_number(row[header.index("items/s")]) == pytest.approx(step["items_per_second"], abs=0.05)
    links = browser.execute_script("return [...document.querySelectorAll('a.step-report')].map(a => a.href)")
    links = sorted(set(links))
    assert [link.rsplit("/", 2)[-2] for link in links] == ["step-1", "step-2", "step-3"]
    browser.get(links[2])
    (triton_row,) = table(browser, "triton")[1:2]
    assert triton_row[0] in scale["steps"][2]["items_per_pilot"]


def test_break_even_ramps_clients_against_one_pilot_until_the_target_is_crossed(tmp_path, digits_data):
    """`scale-test --break-even MS` on the local provider: each step is a real campaign against one
    pilot with more client workers. A target nothing reaches runs every step and says more clients
    would fit; a target of 0 ms is crossed by the first step's queue time, so the ramp stops there."""
    text = (DIGITS / "workflow.yaml").read_text().replace("chunk_size: auto", "chunk_size: 4")
    workflow = copy_workflow(tmp_path / "wf", text, digits_data / "images")
    wide = tmp_path / "wide"
    ran = run_cli("scale-test", workflow, "--break-even", "1e6", "--clients", "1,2", "--items", "400",
                  "--out", wide, "--progress", "quiet")
    assert ran.returncode == 0, ran.stderr
    scale = json.loads((wide / "scale.json").read_text())
    assert [(s["pilots"], s["workers"], s["items"]) for s in scale["steps"]] == [(1, 1, 400), (1, 2, 400)]
    assert all(s["queue_ms_per_execution"] > 0 for s in scale["steps"])
    assert scale["break_even"] == {"target_ms": 1e6, "clients_per_pilot": 2, "crossed_at_clients": None,
                                   "items_per_second_per_pilot": scale["steps"][1]["items_per_second"],
                                   "crossed": False}
    assert "2 clients per pilot" in ran.stdout and "more clients would still fit" in ran.stdout

    tight = tmp_path / "tight"
    ran = run_cli("scale-test", workflow, "--break-even", "0", "--clients", "1,2", "--items", "400",
                  "--out", tight, "--progress", "quiet")
    assert ran.returncode == 0, ran.stderr
    scale = json.loads((tight / "scale.json").read_text())
    assert [s["workers"] for s in scale["steps"]] == [1]
    assert (scale["break_even"]["crossed"], scale["break_even"]["crossed_at_clients"]) == (True, 1)
    assert scale["break_even"]["clients_per_pilot"] is None

    reported = run_cli("report", wide)
    assert reported.returncode == 0, reported.stderr
    page = (wide / "report.html").read_text()
    assert "<b>Break-even</b> at 1,000,000 ms queue time per execution: 2 client workers per pilot" in page
