"""A real digits campaign (Parsl, a real Triton pilot), then `dgaas-flow report`, then the page as
a person sees it: opened in real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium). Every figure must decode, the page must load nothing from elsewhere, and the numbers it
shows must be those of summary.json."""

from __future__ import annotations

import json

import pytest

from dgaas_flow.report.build import CAMPAIGN_FIGURES, fmt
from tests.conftest import WORKFLOW, copy_workflow, run_cli

pytestmark = pytest.mark.integration

def shown(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text.strip()


def as_number(text: str) -> float:
    return float(text.replace(",", "").split()[0])


def table(driver, table_id: str) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.getElementById(arguments[0]).rows].map(r => [...r.cells].map(c => c.innerText.trim()))",
        table_id)


def test_report_of_a_real_campaign_in_a_real_browser(tmp_path, digits_data, browser):
    text = (WORKFLOW.read_text().replace("provider: local", "provider: {kind: local, workers_per_node: 2}")
            .replace("chunk_size: auto", "chunk_size: 32"))
    workflow = copy_workflow(tmp_path / "wf", text, digits_data / "images")
    out = tmp_path / "run"
    ran = run_cli("run", workflow, "--out", out, "--progress", "quiet")
    assert ran.returncode == 0, ran.stderr
    reported = run_cli("report", out)
    assert reported.returncode == 0, reported.stderr
    page = out / "report.html"
    assert reported.stdout.strip() == f"report: {page}"
    summary = json.loads((out / "summary.json").read_text())

    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    images = browser.execute_script(
        "return [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, "
        "height: i.naturalHeight, src: i.src.slice(0, 22)}))")
    assert [img["alt"].split(":")[0] for img in images] == list(CAMPAIGN_FIGURES.values())
    for img in images:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
        assert img["src"] == "data:image/png;base64,"
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0, \
        "the page is self-contained"
    assert sorted(p.name for p in (out / "report").glob("*.png")) == ["latency.png", "pilots.png", "throughput.png"]
    headings = [h.text for h in browser.find_elements("tag name", "h2")]
    assert headings == ["Throughput over time", "Latency", "Items per pilot", "Failures by reason",
                        "Triton metrics per pilot", "Configuration"]

    assert summary["items_ok"] == summary["items_total"] == 1797
    assert as_number(shown(browser, "h-items_ok")) == summary["items_ok"]
    assert as_number(shown(browser, "h-items_failed")) == summary["items_failed"] == 0
    assert as_number(shown(browser, "h-items_per_second")) == pytest.approx(summary["items_per_second"], abs=0.001)
    for p in ("p50", "p95", "p99"):
        assert as_number(shown(browser, f"h-{p}")) == pytest.approx(summary["latency_ms"][p], abs=0.001)
    assert shown(browser, "h-accuracy") == fmt(summary["accuracy"], 4)
    assert shown(browser, "h-time_to_first_result_s") == f"{fmt(summary['time_to_first_result_s'])} s"
    assert shown(browser, "no-failures") == "No failures."

    pilots = table(browser, "pilots")
    (pilot,) = summary["pilots"]
    assert pilots[1][0] == pilot["endpoint"] and as_number(pilots[1][-1]) == pilot["items"] == 1797

    triton = table(browser, "triton")
    (server,) = summary["triton"]
    assert triton[1][0] == server["endpoint"] == pilot["endpoint"]
    assert as_number(triton[1][1]) == server["requests"] > 0
    assert as_number(triton[1][3]) == server["inferences"] == 1797
    assert as_number(triton[1][5]) == pytest.approx(server["avg_batch"], abs=0.005)
    gpu = server["gpu_utilization"]
    assert triton[1][-1] == ("no GPU" if gpu is None else f"{gpu * 100:.1f} %")

    configuration = browser.find_element("id", "configuration").get_attribute("textContent")
    assert json.loads(configuration)["name"] == summary["workflow"] == "digits"
    assert "not recorded" not in browser.find_element("tag name", "body").text
