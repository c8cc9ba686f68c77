"""`dgaas-flow report` on run folders written here in the documented formats: the page shows the
numbers of summary.json / scale.json, escapes what it took from files, embeds its figures and also
writes them beside it, renders old runs, and turns missing or broken files into clear errors."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from dgaas_flow.cli import main
from dgaas_flow.errors import UserError
from dgaas_flow.report import write_report
from tests.report.pages import (
    OLD_SUMMARY,
    SUMMARY,
    TIMELINE,
    WORKFLOW,
    Page,
    number,
    scale_step,
    write_campaign,
    write_scale,
)

CAMPAIGN_TITLES = ["Throughput over time", "Request latency distribution", "Items per pilot"]
SCALE_TITLES = ["Throughput per step against pilots and workers", "Request latency percentiles per step",
                "Items per pilot per step", "Triton batching and queue time per step"]


def read_page(path: Path) -> Page:
    return Page(path.read_text())


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def embedded_figures(page: Page, page_path: Path) -> dict[str, bytes]:
    """alt text -> PNG bytes, checking each embedded image equals the PNG file its caption links to."""
    figures = {}
    links = [a["href"] for a in page.links if a["href"].endswith(".png")]
    assert len(links) == len(page.images)
    for img, href in zip(page.images, links, strict=True):
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix), "figures are embedded, so the page works on its own"
        data = base64.b64decode(img["src"][len(prefix):])
        assert (page_path.parent / unquote(href)).read_bytes() == data
        assert min(png_size(data)) > 100
        figures[img["alt"]] = data
    return figures


def test_campaign_report_shows_the_summary_numbers_and_its_figures(tmp_path):
    run = tmp_path / "run"
    s = write_campaign(run)
    path = write_report(run)
    assert path == run / "report.html"
    page = read_page(path)

    h = page.by_id
    assert [number(h[f"h-{k}"]) for k in ("items_ok", "items_failed", "items_total", "items_this_run",
                                          "items_resumed", "items_per_second", "steady_items_per_second",
                                          "requests")] == [
        s["items_ok"], s["items_failed"], s["items_total"], s["items_this_run"], s["items_resumed"],
        s["items_per_second"], s["steady_items_per_second"], s["requests"]]
    assert h["h-items_ok"] == "1,993" and h["h-items_per_second"] == "120.37"
    assert [number(h[f"h-{p}"]) for p in ("p50", "p95", "p99")] == [12.25, 40.125, 80.5]
    assert h["h-time_to_first_result_s"] == "3.25 s" and h["h-accuracy"] == "0.9661"
    assert (h["h-blocks"], h["h-workers"], h["h-restarts"]) == ("2", "4", "1")

    assert page.tables["latency"][1] == ["12.25", "40.125", "80.5", "15.2", "95"]
    pilots = page.tables["pilots"]
    assert pilots[0] == ["endpoint", "host", "block", "batch job", "GPUs", "state", "restarts", "items"]
    assert pilots[1] == ["http://127.0.0.1:8000", "node1", "0", "4242", "0", "stopped", "0", "1,100"]
    assert pilots[2][0] == "http://127.0.0.1:9000" and pilots[2][-1] == "893"
    assert pilots[3][0] == "all pilots" and pilots[3][-1] == "1,993"

    triton = page.tables["triton"]
    assert triton[0] == ["endpoint", "requests", "failures", "inferences", "executions", "avg batch",
                         "queue ms/request", "compute ms/execution", "GPU utilization"]
    assert triton[1] == ["http://127.0.0.1:8000", "30", "0", "1,100", "40", "27.5", "0.5", "3.25", "87.5 %"]
    assert triton[2] == ["http://127.0.0.1:9000", "27", "1", "893", "30", "29.77", "0.75", "3", "no GPU"]
    # all pilots: inferences / executions, queue time weighted by requests
    assert triton[3][:5] == ["all pilots", "57", "1", "1,993", "70"]
    assert number(triton[3][5]) == pytest.approx(1993 / 70, abs=0.005)
    assert number(triton[3][6]) == pytest.approx((30 * 0.5 + 27 * 0.75) / 57, abs=0.0005)

    assert page.tables["failures"][1:] == [["ValueError", "5"], ["TimeoutError", "2"]]
    assert json.loads(page.by_id["configuration"]) == WORKFLOW

    figures = embedded_figures(page, path)
    assert [alt.split(":")[0] for alt in figures] == CAMPAIGN_TITLES
    assert sorted(p.name for p in (run / "report").glob("*.png")) == ["latency.png", "pilots.png", "throughput.png"]
    assert "not recorded" not in page.visible
    assert "http" not in "".join(img["src"][:10] for img in page.images)


def test_text_from_the_run_files_is_escaped(tmp_path):
    evil = '<script>alert("x")</script> & <img src=x onerror=alert(1)> $x^{$'
    summary = SUMMARY | {"workflow": evil, "provider": evil, "failures_by_reason": {evil: 7}}
    summary["pilots"] = [SUMMARY["pilots"][0] | {"endpoint": evil, "host": evil}]
    write_campaign(tmp_path, summary, workflow=WORKFLOW | {"name": evil})
    html = write_report(tmp_path).read_text()
    assert "<script" not in html and "onerror=alert(1)>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img" in html
    page = Page(html)
    assert page.tables["failures"][1] == [evil, "7"]
    assert page.tables["pilots"][1][:2] == [evil, evil]
    assert json.loads(page.by_id["configuration"])["name"] == evil
    assert len(page.images) == 3  # only the report's own figures


def test_an_old_run_without_the_new_keys_still_renders_saying_not_recorded(tmp_path):
    write_campaign(tmp_path, OLD_SUMMARY, timeline=None, workflow=None)
    page = read_page(write_report(tmp_path))
    assert page.by_id["h-items_ok"] == "1,993"
    for key in ("time_to_first_result_s", "blocks", "workers", "steady_items_per_second"):
        assert page.by_id[f"h-{key}"] == "not recorded"
    assert page.tables["latency"][1] == ["12.25", "40.125", "80.5", "not recorded", "not recorded"]
    text = page.visible
    assert "not recorded: this run folder has no timeline.jsonl" in text
    assert "Request latency distribution: not recorded" in text
    assert "not recorded (no triton section in summary.json)" in text
    assert "not recorded: this run folder has no workflow.json" in text
    assert "triton" not in page.tables
    assert [img["alt"].split(":")[0] for img in page.images] == ["Items per pilot"]
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["pilots.png"]


def test_a_rerun_report_drops_figures_it_no_longer_draws(tmp_path):
    write_campaign(tmp_path)
    write_report(tmp_path)
    assert (tmp_path / "report" / "throughput.png").exists()
    (tmp_path / "timeline.jsonl").unlink()
    write_report(tmp_path)
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["latency.png", "pilots.png"]
    # a file of the same name that no report wrote is the user's: never removed
    mine = tmp_path / "plots" / "throughput.png"
    mine.parent.mkdir()
    mine.write_bytes(b"my own plot")
    write_report(tmp_path, tmp_path / "plots.html")
    assert mine.read_bytes() == b"my own plot"


def test_no_failures_and_a_stopped_run_are_said_plainly(tmp_path):
    write_campaign(tmp_path, SUMMARY | {"items_failed": 0, "failures_by_reason": {}, "complete": False,
                                        "time_to_first_result_s": None, "items_total": None})
    page = read_page(write_report(tmp_path))
    assert page.by_id["h-items_total"] == "not counted"
    assert page.by_id["no-failures"] == "No failures." and "failures" not in page.tables
    assert "stopped before it finished" in page.visible
    assert page.by_id["h-time_to_first_result_s"] == "no result"


def test_a_line_torn_by_a_killed_driver_ends_the_timeline_quietly(tmp_path):
    write_campaign(tmp_path)
    with open(tmp_path / "timeline.jsonl", "a") as f:
        f.write('{"t": 13.5, "items": 15')
    page = read_page(write_report(tmp_path))
    (alt,) = [img["alt"] for img in page.images if img["alt"].startswith("Throughput over time")]
    assert "1,500 items in 12.5 s" in alt


def test_a_broken_timeline_line_names_the_file_and_the_line(tmp_path):
    write_campaign(tmp_path)
    lines = [json.dumps(p) for p in TIMELINE]
    lines[2] = "{not json"
    (tmp_path / "timeline.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"timeline\.jsonl: line 3 is not a timeline record"):
        write_report(tmp_path)


@pytest.mark.parametrize("content, expected", [
    ("{", r"summary\.json: not valid JSON"),
    ("[1, 2]", r"summary\.json: expected a JSON object, found list"),
    (json.dumps(SUMMARY | {"items_ok": "many"}), r'summary\.json: items_ok: expected a whole number, found "many"'),
    (json.dumps({k: v for k, v in SUMMARY.items() if k != "items_ok"}),
     r"summary\.json: items_ok: expected a whole number, found nothing"),
    (json.dumps(SUMMARY | {"latency_ms": {"histogram": [[5, 1], [1, 2]]}}),
     r"summary\.json: latency_ms\.histogram: expected buckets in increasing order"),
    (json.dumps(SUMMARY | {"pilots": [{"endpoint": "x", "items": 1.5}]}),
     r"summary\.json: pilots\[0\]\.items: expected a whole number"),
])
def test_a_broken_summary_is_a_clear_error_naming_the_file_and_the_key(tmp_path, capsys, content, expected):
    write_campaign(tmp_path)
    (tmp_path / "summary.json").write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'summary.json'}")
    assert re.search(expected, err), err
    assert "dgaas-flow run" in err and "Traceback" not in err
    assert not (tmp_path / "report.html").exists()


def test_report_of_a_folder_without_a_run_tells_what_to_run_first(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path}: no summary.json or scale.json here" in err
    assert "`dgaas-flow run WORKFLOW --out RUN_DIR`" in err and "first" in err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err


def test_report_command_prints_the_page_and_honours_out(tmp_path, capsys):
    run = tmp_path / "run"
    write_campaign(run)
    out = tmp_path / "mail" / "digits report.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out}"
    page = read_page(out)
    assert sorted(p.name for p in (tmp_path / "mail" / "digits report").glob("*.png")) == [
        "latency.png", "pilots.png", "throughput.png"]
    embedded_figures(page, out)  # the captions' links resolve beside the page
    assert not (run / "report.html").exists()
    assert main(["report", str(run), "--out", str(tmp_path)]) == 2
    assert "is a folder; give --out the HTML file" in capsys.readouterr().err
    assert main(["report", str(run), "--out", str(tmp_path / "run.html")]) == 2  # figures would go into run/
    assert "which is a run folder; give --out another name" in capsys.readouterr().err


def test_scale_test_report_tables_figures_and_each_steps_own_report(tmp_path):
    steps = [scale_step(1, 1, 150.5, [1000]), scale_step(2, 2, 290.25, [1010, 990]),
             scale_step(3, 4, 510.0, [600, 640, 580, 620])]
    write_scale(tmp_path, steps, with_step_dirs=2)  # the third step did not run
    path = write_report(tmp_path)
    page = read_page(path)

    table = page.tables["steps"]
    assert table[0] == ["step", "blocks", "workers", "pilots", "items", "failed", "items/s", "p50 ms", "p95 ms",
                        "p99 ms", "avg batch", "queue ms/request"]
    for row, step in zip(table[1:], steps, strict=True):
        assert row[0] == step["name"]
        assert [number(c) for c in row[1:10]] == [
            step["blocks"], step["workers"], step["pilots"], step["items"], step["failed"],
            step["items_per_second"], step["latency_ms"]["p50"], step["latency_ms"]["p95"], step["latency_ms"]["p99"]]
        triton = step["triton"]
        assert number(row[10]) == pytest.approx(sum(t["inferences"] for t in triton)
                                                / sum(t["executions"] for t in triton), abs=0.005)
        assert number(row[11]) == pytest.approx(sum(t["queue_ms_per_request"] * t["requests"] for t in triton)
                                                / sum(t["requests"] for t in triton), abs=0.0005)

    figures = embedded_figures(page, path)
    assert [alt.split(":")[0] for alt in figures] == SCALE_TITLES
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == [
        "scale-latency.png", "scale-pilots.png", "scale-throughput.png", "scale-triton.png"]

    step_links = {a["href"] for a in page.links if a.get("class") == "step-report"}
    assert step_links == {"step-1/report.html", "step-2/report.html"}
    for href in step_links:
        step_page = read_page(tmp_path / href)
        n = int(href.split("/")[0].split("-")[1])
        assert number(step_page.by_id["h-items_ok"]) == steps[n - 1]["items"]
        assert [number(r[1]) for r in step_page.tables["triton"][1:len(steps[n - 1]["triton"]) + 1]] == [
            t["requests"] for t in steps[n - 1]["triton"]]
        embedded_figures(step_page, tmp_path / href)
    assert "step-3: no report (step-3/summary.json is missing: the step did not run)" in page.visible


def test_an_old_or_partial_scale_json_renders_and_a_broken_one_is_named(tmp_path, capsys):
    bare = {k: v for k, v in scale_step(1, 1, 100.0, [500]).items() if k not in ("triton", "latency_ms")}
    bare["name"] = "<b>step $1</b>"  # drawn and shown as written
    write_scale(tmp_path, [bare], with_step_dirs=0)
    html = write_report(tmp_path).read_text()
    assert "<b>step" not in html and "&lt;b&gt;step $1&lt;/b&gt;" in html
    page = Page(html)
    assert page.tables["steps"][1][0] == "<b>step $1</b>"
    assert page.tables["steps"][1][10:] == ["not recorded", "not recorded"]
    assert [img["alt"].split(":")[0] for img in page.images] == [SCALE_TITLES[0], SCALE_TITLES[2]]
    assert "Request latency percentiles per step: not recorded" in page.visible

    (tmp_path / "scale.json").write_text(json.dumps({"workflow": "digits", "steps": [{"blocks": "two"}]}))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'scale.json'}: steps[0].blocks: expected a whole number" in err
    assert "dgaas-flow scale-test" in err
