"""The report page: one self-contained HTML file (figures embedded as PNG data URIs, so the page
works when mailed alone) plus the same PNG files in a folder beside it (RUN_DIR/report.html and
RUN_DIR/report/*.png by default), so figures can be reused. Every text taken from a file is
HTML-escaped. A scale test's page also writes each step's own campaign report and links to it."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from urllib.parse import quote

from dgaas_flow.errors import UserError
from dgaas_flow.processes import write_atomic
from dgaas_flow.report import figures
from dgaas_flow.report.data import (
    RERUN_CAMPAIGN,
    SCALE,
    SUMMARY,
    TIMELINE,
    WORKFLOW_JSON,
    Campaign,
    Step,
    read_campaign,
    read_scale,
    triton_totals,
)

REPORT = "report.html"
NOT_RECORDED = '<span class="nr">not recorded</span>'
DASH = "—"

# figure file stem -> title (the title starts each image's alt text and its caption)
CAMPAIGN_FIGURES = {
    "throughput": "Throughput over time",
    "latency": "Request latency distribution",
    "pilots": "Items per pilot",
}
SCALE_FIGURES = {
    "scale-throughput": "Throughput per step against pilots and workers",
    "scale-latency": "Request latency percentiles per step",
    "scale-pilots": "Items per pilot per step",
    "scale-triton": "Triton batching and queue time per step",
}
ALL_FIGURE_FILES = {f"{stem}.png" for stem in (*CAMPAIGN_FIGURES, *SCALE_FIGURES)}
MANIFEST = ".figures"  # the figures the last report wrote into its folder

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 62em;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; border: 1px solid #eee; }
.nr { color: #888; font-style: italic; } .warn { color: #a40; font-weight: 600; } .meta { color: #555; }
"""


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report of a campaign run folder (summary.json) or a scale-test folder (scale.json)
    and return the page's path: `out`, or RUN_DIR/report.html."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a folder" if run_dir.exists() else "no such folder"
        raise UserError(f"{run_dir}: {what}; give the run folder written by `dgaas-flow run` or "
                        "`dgaas-flow scale-test` (their --out)")
    page = Path(out) if out is not None else run_dir / REPORT
    if page.is_dir():
        raise UserError(f"{page}: is a folder; give --out the HTML file to write, e.g. {page / REPORT}")
    if any((figures_dir(page) / name).exists() for name in (SUMMARY, SCALE)):
        raise UserError(f"{page}: its figures would go to {figures_dir(page)}, which is a run folder; "
                        "give --out another name")
    if (run_dir / SCALE).exists():
        return _write_scale_report(run_dir, page)
    if (run_dir / SUMMARY).exists():
        return _write_campaign_report(run_dir, page)
    raise UserError(f"{run_dir}: no {SUMMARY} or {SCALE} here; {RERUN_CAMPAIGN.replace(' again', '')} "
                    f"(or `dgaas-flow scale-test WORKFLOW --out {run_dir}`) first, then report on that folder")


# ------------------------------------------------------------------------------------ writing


def figures_dir(page: Path) -> Path:
    """Where a page's PNG files go: a folder named after the page, beside it (report.html -> report/)."""
    return page.with_suffix("") if page.suffix else page.with_name(page.name + "-figures")


class Figures:
    """The PNGs of one page: embedded in the page, and written to a folder beside it."""

    def __init__(self, page: Path):
        self.page, self.folder = page, figures_dir(page)
        self.written: dict[str, bytes] = {}

    def html(self, stem: str, title: str, alt_detail: str, draw: Callable[[], bytes | None],
             missing: str) -> str:
        png = draw()
        if png is None:
            return f'<p class="figure-missing">{escape(title)}: {missing}</p>'
        self.written[f"{stem}.png"] = png
        rel = _relative(self.folder / f"{stem}.png", self.page.parent)
        data = base64.b64encode(png).decode("ascii")
        return (f'<figure id="fig-{escape(stem)}"><img src="data:image/png;base64,{data}" '
                f'alt="{escape(f"{title}: {alt_detail}")}">'
                f'<figcaption>{escape(title)} (also as <a href="{_href(rel)}">{escape(rel)}</a>)</figcaption></figure>')

    def save(self) -> None:
        """Write the figures; remove those an earlier report of this page wrote and this one did
        not (listed in the folder's manifest: files a person put there are never touched)."""
        manifest = self.folder / MANIFEST
        try:
            earlier = set(manifest.read_text().split()) & ALL_FIGURE_FILES
        except OSError:
            earlier = set()
        for name, png in self.written.items():
            write_atomic(self.folder / name, png)
        for stale in earlier - set(self.written):
            (self.folder / stale).unlink(missing_ok=True)
        write_atomic(manifest, "".join(f"{name}\n" for name in sorted(self.written)))


def _relative(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()


def _href(relative: str) -> str:
    return escape(quote(relative))


def _page(title: str, body: str) -> str:
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
            f'<p class="meta">Written by <code>dgaas-flow report</code> at {generated}.</p>\n</body>\n</html>\n')


def _finish(page: Path, figs: Figures, html: str) -> Path:
    page.parent.mkdir(parents=True, exist_ok=True)
    figs.save()
    write_atomic(page, html.encode("utf-8"))
    return page


# ------------------------------------------------------------------------------------ formatting


def fmt(value: float | int | None, digits: int = 3) -> str:
    """A number as shown: whole numbers with thousands separators, others to at most `digits`
    decimals (summary values are already rounded, so they show as written); None: a dash."""
    if value is None:
        return DASH
    if isinstance(value, int):
        return f"{value:,}"
    text = f"{value:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _cell(value: str, num: bool = False, cell_id: str | None = None) -> str:
    attrs = (' class="num"' if num else "") + (f' id="{escape(cell_id)}"' if cell_id else "")
    return f"<td{attrs}>{value}</td>"


def _table(table_id: str, header: Iterable[str], rows: Iterable[Iterable[str]], total: Iterable[str] = ()) -> str:
    """Cells are HTML already (callers escape text and format numbers)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    total = list(total)
    foot = f'<tr class="total">{"".join(total)}</tr>' if total else ""
    return f'<table id="{escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}{foot}</tbody></table>'


def _text(value: str | None) -> str:
    return escape(value) if value is not None else DASH


def _gpu(util: float | None) -> str:
    return "no GPU" if util is None else f"{util * 100:.1f} %"


# ------------------------------------------------------------------------------------ campaign


def _write_campaign_report(run_dir: Path, page: Path) -> Path:
    c = read_campaign(run_dir)
    figs = Figures(page)
    title = f"Campaign report: {c.workflow}"
    body = [f"<h1>{escape(title)}</h1>", _campaign_meta(c), _headline(c), _segments(c)]
    body += ["<h2>Throughput over time</h2>", _throughput(c, figs)]
    body += ["<h2>Latency</h2>", _latency(c, figs)]
    body += ["<h2>Items per pilot</h2>", _pilots(c, figs)]
    body += ["<h2>Failures by reason</h2>", _failures(c)]
    body += ["<h2>Triton metrics per pilot</h2>", _triton(c)]
    body += ["<h2>Configuration</h2>", _configuration(c)]
    return _finish(page, figs, _page(title, "\n".join(body)))


def _campaign_meta(c: Campaign) -> str:
    parts = [f"provider <b>{_text(c.provider)}</b>", f"model <b>{_text(c.model)}</b>",
             f"started {_text(c.started_at)}", f"run folder <code>{escape(str(c.run_dir.resolve()))}</code>"]
    meta = f'<p class="meta">{"; ".join(parts)}</p>'
    if c.complete is False:
        meta += ('<p class="warn">This run was stopped before it finished (complete: false); rerun the same '
                 "<code>dgaas-flow run</code> command to resume it.</p>")
    return meta


def _headline(c: Campaign) -> str:
    lat = c.latency

    def rec(key: str, shown: str) -> str:
        return shown if key in c.recorded else NOT_RECORDED

    if "time_to_first_result_s" not in c.recorded:
        first = NOT_RECORDED
    else:
        first = "no result" if c.time_to_first_result_s is None else f"{fmt(c.time_to_first_result_s)} s"
    rows = [
        ("items_ok", "Items ok", fmt(c.items_ok)),
        ("items_failed", "Items failed", fmt(c.items_failed)),
        ("items_total", "Items total", fmt(c.items_total) if c.items_total is not None else "not counted"),
        ("items_this_run", "Items this run", rec("items_this_run", fmt(c.items_this_run))),
        ("items_resumed", "Items resumed from an earlier run", rec("items_resumed", fmt(c.items_resumed))),
        ("wall_seconds", "Wall time (s)", rec("wall_seconds", fmt(c.wall_seconds))),
        ("items_per_second", "Items/s (this run, wall time)", rec("items_per_second", fmt(c.items_per_second))),
        ("steady_items_per_second", "Items/s (first to last result)",
         rec("steady_items_per_second", fmt(c.steady_items_per_second))),
        ("requests", "Requests (all runs)" if len(c.segments) > 1 else "Requests", rec("requests", fmt(c.requests))),
        ("p50", "Request latency p50 (ms)", fmt(lat.p50)),
        ("p95", "Request latency p95 (ms)", fmt(lat.p95)),
        ("p99", "Request latency p99 (ms)", fmt(lat.p99)),
        ("time_to_first_result_s", "Time to first result", first),
        ("accuracy", "Accuracy", fmt(c.accuracy, 4) if c.accuracy is not None else NOT_RECORDED),
        ("blocks", "Blocks", rec("blocks", fmt(c.blocks))),
        ("workers", "Workers", rec("workers", fmt(c.workers))),
        ("restarts", "Pilot restarts", rec("restarts", fmt(c.restarts))),
    ]
    return _table("headline", ("", "value"),
                  ([f"<th>{escape(label)}</th>", _cell(value, True, f"h-{key}")] for key, label, value in rows))


def _segments(c: Campaign) -> str:
    """A folder run more than once (a first run, then resumes): each run's own figures. The
    headline's items and latency are of them all; speed, pilots and Triton's are the last's."""
    if len(c.segments) < 2:
        return ""
    rows = [[_cell(escape(str(n))), _cell(_text(s.started_at)), _cell("yes" if s.complete else "no"),
             _cell(fmt(s.items), True), _cell(fmt(s.failed), True), _cell(fmt(s.wall_seconds), True),
             _cell(fmt(s.items_per_second), True), _cell(fmt(s.requests), True), _cell(fmt(s.latency.p50), True),
             _cell(fmt(s.latency.p99), True)] for n, s in enumerate(c.segments, 1)]
    return ("<h2>Runs of this folder</h2>"
            + _table("segments", ("run", "started", "complete", "items", "failed", "wall s", "items/s", "requests",
                                  "p50 ms", "p99 ms"), rows)
            + '<p class="meta">Each resume is a run of its own. The headline\'s items, requests and latency are '
              "of all runs; its speed, and the pilots and Triton figures below, are the last run's.</p>")


def _throughput(c: Campaign, figs: Figures) -> str:
    if c.timeline is None:
        return f"<p>{NOT_RECORDED}: this run folder has no {TIMELINE} (it was written by an older dgaas-flow).</p>"
    last = c.timeline[-1]
    detail = (f"items per second in each interval and cumulative items finished, {fmt(last.items)} items "
              f"in {fmt(last.t, 1)} s")
    html = figs.html("throughput", CAMPAIGN_FIGURES["throughput"], detail,
                     lambda: figures.throughput(c.timeline or [], c.time_to_first_result_s, c.decisions),
                     NOT_RECORDED)
    if c.decisions:
        rows = "".join(f"<tr><td>{fmt(d.get('t'), 1)}</td><td>{escape(str(d.get('action')))}</td>"
                       f"<td>{fmt(d.get('metric'), 1)}</td><td>{d.get('blocks_before')} &rarr; "
                       f"{d.get('blocks_after')}</td><td>{escape(str(d.get('why')))}</td></tr>" for d in c.decisions)
        html += ("<h3>Autoscaler decisions</h3><table><tr><th>s</th><th>action</th><th>queue ms/execution</th>"
                 f"<th>blocks</th><th>why</th></tr>{rows}</table>")
    return html


def _latency(c: Campaign, figs: Figures) -> str:
    lat = c.latency
    values = (lat.p50, lat.p95, lat.p99, lat.mean, lat.max)
    table = _table("latency", ("p50 (ms)", "p95 (ms)", "p99 (ms)", "mean (ms)", "max (ms)"),
                   [[_cell(fmt(v) if v is not None else NOT_RECORDED, True) for v in values]])
    if lat.histogram is None:
        return table + f"<p>{escape(CAMPAIGN_FIGURES['latency'])}: {NOT_RECORDED} (no latency_ms.histogram).</p>"
    detail = (f"histogram of {fmt(sum(n for _, n in lat.histogram))} requests, p50 {fmt(lat.p50)} ms, "
              f"p95 {fmt(lat.p95)} ms, p99 {fmt(lat.p99)} ms")
    return table + figs.html("latency", CAMPAIGN_FIGURES["latency"], detail, lambda: figures.latency(lat),
                             "no requests were recorded")


def _pilots(c: Campaign, figs: Figures) -> str:
    if "pilots" not in c.recorded:
        return f"<p>{NOT_RECORDED}</p>"
    if not c.pilots:
        return "<p>No pilot served an item.</p>"
    detail = ", ".join(f"{figures.pilot_label(p)} {fmt(p.items)}" for p in c.pilots[:20])
    fig = figs.html("pilots", CAMPAIGN_FIGURES["pilots"], detail, lambda: figures.items_per_pilot(c.pilots), "")
    rows = [[_cell(escape(p.endpoint)), _cell(_text(p.host)), _cell(_text(p.block)), _cell(_text(p.batch_job)),
             _cell(_text(p.gpus)), _cell(_text(p.state)), _cell(fmt(p.restarts), True), _cell(fmt(p.items), True)]
            for p in c.pilots]
    total = [_cell("all pilots"), *[_cell("")] * 5, _cell(fmt(sum(p.restarts or 0 for p in c.pilots)), True),
             _cell(fmt(sum(p.items for p in c.pilots)), True)] if len(c.pilots) > 1 else []
    table = _table("pilots", ("endpoint", "host", "block", "batch job", "GPUs", "state", "restarts", "items"),
                   rows, total)
    return fig + table


def _failures(c: Campaign) -> str:
    if c.failures_by_reason is None:
        return f"<p>{NOT_RECORDED}</p>"
    if not c.failures_by_reason and not c.items_failed:
        return '<p id="no-failures">No failures.</p>'
    rows = [[_cell(escape(reason)), _cell(fmt(n), True)] for reason, n in c.failures_by_reason.items()]
    note = ""
    listed = sum(c.failures_by_reason.values())
    if listed < c.items_failed:
        note = (f"<p>{fmt(c.items_failed)} items failed; the {len(rows)} most common reasons above cover "
                f"{fmt(listed)} of them (each item's error is in results.jsonl).</p>")
    return _table("failures", ("reason", "items"), rows) + note


def _triton(c: Campaign) -> str:
    if c.triton is None:
        return f"<p>{NOT_RECORDED} (no triton section in {SUMMARY}).</p>"
    if not c.triton:
        return "<p>No pilot's Triton metrics could be read (no pilot was reachable when the blocks stopped).</p>"
    header = ("endpoint", "requests", "failures", "inferences", "executions", "avg batch", "queue ms/request",
              "compute ms/execution", "GPU utilization")
    rows = [[_cell(_text(t.endpoint)), _cell(fmt(t.requests), True), _cell(fmt(t.failures), True),
             _cell(fmt(t.inferences), True), _cell(fmt(t.executions), True), _cell(fmt(t.avg_batch, 2), True),
             _cell(fmt(t.queue_ms_per_request), True), _cell(fmt(t.compute_ms_per_execution), True),
             _cell(_gpu(t.gpu_utilization), True)] for t in c.triton]
    total: list[str] = []
    if len(c.triton) > 1:
        avg_batch, queue_ms = triton_totals(c.triton)
        total = [_cell("all pilots"), *(_cell(fmt(sum(getattr(t, k) or 0 for t in c.triton)), True)
                                        for k in ("requests", "failures", "inferences", "executions")),
                 _cell(fmt(avg_batch, 2), True), _cell(fmt(queue_ms), True), _cell(""), _cell("")]
    by_model = [[_cell(_text(t.endpoint)), _cell(escape(name)), _cell(fmt(m.requests), True),
                 _cell(fmt(m.inferences), True), _cell(fmt(m.avg_batch, 2), True),
                 _cell(fmt(m.queue_ms_per_request), True)]
                for t in c.triton for name, m in t.models.items()]
    per_model = _table("triton-models", ("endpoint", "model", "requests", "inferences", "avg batch",
                                         "queue ms/request"), by_model) if by_model else ""
    return (_table("triton", header, rows, total) + per_model
            + '<p class="meta">What each pilot counted during this campaign, over all its models, then for each '
              "model. Avg batch: inferences per execution.</p>")


def _configuration(c: Campaign) -> str:
    if c.configuration is None:
        return f"<p>{NOT_RECORDED}: this run folder has no {WORKFLOW_JSON}.</p>"
    return f'<pre id="configuration">{escape(c.configuration)}</pre>'


# ------------------------------------------------------------------------------------ scale test


def _write_scale_report(run_dir: Path, page: Path) -> Path:
    s = read_scale(run_dir)
    links = [_step_report(run_dir, step, page) for step in s.steps]
    figs = Figures(page)
    title = f"Scale test report: {s.workflow}"
    parts = [f"provider <b>{_text(s.provider)}</b>", f"started {_text(s.started_at)}",
             f"folder <code>{escape(str(run_dir.resolve()))}</code>",
             f"{len(s.steps)} step" + ("" if len(s.steps) == 1 else "s")]
    body = [f"<h1>{escape(title)}</h1>", f'<p class="meta">{"; ".join(parts)}</p>', "<h2>Steps</h2>"]
    if not s.steps:
        body.append("<p>No step was recorded.</p>")
        return _finish(page, figs, _page(title, "\n".join(body)))
    body.append(_steps_table(s.steps, links))
    if s.break_even:
        b = s.break_even
        body.append(f"<p><b>Break-even</b> at {fmt(b.get('target_ms'))} ms queue time per execution: "
                    f"{fmt(b.get('clients_per_pilot'))} client workers per pilot, "
                    f"{fmt(b.get('items_per_second_per_pilot'))} items/s per pilot"
                    + ("" if b.get("crossed") else " (the target was not crossed: more clients would fit)") + ".</p>")
    body.append('<p class="meta">Items/s: from each step\'s first result to its last (steady state). Avg batch '
                "and queue ms: Triton's counters over all the step's pilots.</p>")
    summary = "; ".join(f"{st.name} {fmt(st.items_per_second)} items/s" for st in s.steps)
    for stem, draw, detail in (
        ("scale-throughput", figures.scale_throughput, summary),
        ("scale-latency", figures.scale_latency, "; ".join(
            f"{st.name} p50 {fmt(st.latency.p50)} p95 {fmt(st.latency.p95)} p99 {fmt(st.latency.p99)} ms"
            for st in s.steps)),
        ("scale-pilots", figures.scale_items_per_pilot, "; ".join(
            f"{st.name} {fmt(st.pilots)} pilots" for st in s.steps)),
        ("scale-triton", figures.scale_triton, "average batch and queue milliseconds per request for each step"),
    ):
        body.append(f"<h2>{escape(SCALE_FIGURES[stem])}</h2>")
        body.append(figs.html(stem, SCALE_FIGURES[stem], detail, lambda draw=draw: draw(s.steps), NOT_RECORDED))
    body.append("<h2>Each step's campaign report</h2>")
    body.append("<ul id=\"step-reports\">" + "".join(f"<li>{link}</li>" for link in links) + "</ul>")
    return _finish(page, figs, _page(title, "\n".join(body)))


def _step_report(run_dir: Path, step: Step, page: Path) -> str:
    """Write the step's own campaign report; a link to it (or why there is none)."""
    if step.run_dir is None:
        return f"{escape(step.name)}: {NOT_RECORDED} (no run_dir)"
    step_dir = run_dir / step.run_dir
    if Path(step.run_dir).name != step.run_dir or step.run_dir in (".", ".."):
        return f"{escape(step.name)}: no report (run_dir {escape(step.run_dir)!r} is not a folder of this scale test)"
    if not (step_dir / SUMMARY).exists():
        return f"{escape(step.name)}: no report ({escape(step.run_dir)}/{SUMMARY} is missing: the step did not run)"
    step_page = _write_campaign_report(step_dir, step_dir / REPORT)
    return f'<a class="step-report" href="{_href(_relative(step_page, page.parent))}">{escape(step.name)}</a>'


def _steps_table(steps: list[Step], links: list[str]) -> str:
    header = ("step", "blocks", "workers", "pilots", "items", "failed", "items/s", "p50 ms", "p95 ms", "p99 ms",
              "avg batch", "queue ms/request")
    rows = []
    for step, link in zip(steps, links, strict=True):
        avg_batch, queue_ms = triton_totals(step.triton) if step.triton else (None, None)
        triton_missing = NOT_RECORDED if step.triton is None else None
        rows.append([
            _cell(link if link.startswith("<a ") else escape(step.name)),
            *(_cell(fmt(v), True) for v in (step.blocks, step.workers, step.pilots, step.items, step.failed,
                                             step.items_per_second, step.latency.p50, step.latency.p95,
                                             step.latency.p99)),
            _cell(triton_missing or fmt(avg_batch, 2), True), _cell(triton_missing or fmt(queue_ms), True),
        ])
    return _table("steps", header, rows)
