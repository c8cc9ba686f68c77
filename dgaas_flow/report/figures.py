"""The report's figures, drawn with matplotlib's Agg backend (no display, no pyplot state) and
returned as PNG bytes. Each function takes what was read from the run folder and returns None when
there is nothing to draw."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from dgaas_flow.report.data import Latency, Pilot, Step, TimelinePoint, triton_totals

WIDTH_IN, DPI = 8.0, 100
PERCENTILES = (("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:red"))


def _figure(height_in: float) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def throughput(points: Sequence[TimelinePoint], first_result_s: float | None,
               decisions: Sequence[dict] = ()) -> bytes | None:
    """Items/s in each interval between timeline lines, cumulative items (and failures), and the
    pilots up and ready, against seconds since the campaign started; the autoscaler's decisions
    (if any) as vertical lines on the pilots' axis, with the queue time per execution they saw."""
    if not points:
        return None
    pts = list(points)
    if pts[0].t > 0:  # the campaign started at t=0 with nothing finished
        pts.insert(0, TimelinePoint(0.0, 0, 0, pts[0].pilots_up, pts[0].pilots_ready))
    t = [p.t for p in pts]
    edges, rates = [t[0]], []
    for a, b in zip(pts, pts[1:], strict=False):
        if b.t > a.t:
            rates.append((b.items - a.items) / (b.t - a.t))
            edges.append(b.t)
    has_pilots = any(p.pilots_up is not None or p.pilots_ready is not None for p in pts)
    fig = _figure(6.0 if has_pilots else 4.5)
    axes = fig.subplots(3 if has_pilots else 2, 1, sharex=True,
                        height_ratios=[2, 2, 1] if has_pilots else [1, 1])
    ax = axes[0]
    if rates:
        ax.stairs(rates, edges, fill=True, alpha=0.35, color="tab:blue")
        ax.stairs(rates, edges, color="tab:blue", label="items/s in each interval")
    ax.set_ylabel("items/s")
    ax.set_ylim(bottom=0)
    if first_result_s is not None:
        for a in axes:
            a.axvline(first_result_s, color="tab:green", linestyle=":", linewidth=1)
        ax.plot([], [], color="tab:green", linestyle=":", label=f"first result ({first_result_s:.1f} s)")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(t, [p.items for p in pts], color="tab:blue", label="items finished")
    if any(p.failed for p in pts):
        ax.plot(t, [p.failed or 0 for p in pts], color="tab:red", label="of which failed")
    ax.set_ylabel("items (cumulative)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    if has_pilots:
        ax = axes[2]
        ax.step(t, [p.pilots_up or 0 for p in pts], where="post", color="tab:gray", linewidth=4, alpha=0.5,
                label="pilots up (starting or ready)")
        ax.step(t, [p.pilots_ready or 0 for p in pts], where="post", color="tab:green", label="pilots ready")
        ax.set_ylabel("pilots")
        most = max(max(p.pilots_up or 0, p.pilots_ready or 0) for p in pts)
        ax.set_ylim(0, max(most, 1) * 1.15 + 0.3)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="lower right", fontsize="small")
        ax.grid(alpha=0.3)
        if decisions:
            for d in decisions:
                ax.axvline(d["t"], color="tab:purple" if d.get("action") == "scale_out" else "tab:orange",
                           linestyle="--", linewidth=1)
            queue = ax.twinx()
            shown = [d for d in decisions if d.get("metric") is not None]
            queue.plot([d["t"] for d in shown], [d["metric"] for d in shown], "o", color="tab:purple",
                       label="queue ms/execution at a decision (dashed: scale out purple, in orange)")
            queue.set_ylabel("queue ms / execution")
            queue.set_ylim(bottom=0)
            queue.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("seconds since the campaign started")
    axes[0].set_title("Throughput over time")
    return _png(fig)


def latency(lat: Latency) -> bytes | None:
    """The request latency histogram (log-spaced buckets, so a log x axis) with p50/p95/p99 marked."""
    buckets = lat.histogram or []
    nonzero = [i for i, (_, count) in enumerate(buckets) if count]
    if not nonzero:
        return None
    uppers = [upper for upper, _ in buckets]
    growth = uppers[1] / uppers[0] if len(uppers) > 1 and uppers[0] > 0 else 2.0  # the buckets' spacing
    edges = [uppers[0] / growth, *uppers]
    lo, hi = nonzero[0], nonzero[-1] + 1
    counts = [count for _, count in buckets[lo:hi]]
    fig = _figure(3.8)
    ax = fig.subplots()
    ax.stairs(counts, edges[lo:hi + 1], fill=True, alpha=0.4, color="tab:purple")
    ax.stairs(counts, edges[lo:hi + 1], color="tab:purple", label="requests")
    if edges[lo] > 0 and edges[hi] / edges[lo] > 20:
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    for name, color in PERCENTILES:
        value = getattr(lat, name)
        if value is not None:
            ax.axvline(value, color=color, linestyle="--", linewidth=1, label=f"{name} {value:g} ms")
    ax.set_xlabel("request latency (ms)")
    ax.set_ylabel("requests")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    ax.set_title("Request latency distribution")
    return _png(fig)


def pilot_label(p: Pilot) -> str:
    where = p.endpoint.removeprefix("http://").removeprefix("https://").removeprefix("grpc://")
    return f"{where} (block {p.block})" if p.block is not None else where


def _plain(text: str) -> str:
    """Text from a file, drawn as written (a `$` would otherwise start matplotlib's math mode)."""
    return text.replace("$", r"\$")


def items_per_pilot(pilots: Sequence[Pilot]) -> bytes | None:
    if not pilots:
        return None
    fig = _figure(max(2.2, 0.9 + 0.32 * len(pilots)))
    ax = fig.subplots()
    labels = [_plain(pilot_label(p)) for p in pilots]
    bars = ax.barh(range(len(pilots)), [p.items for p in pilots], color="tab:blue")
    ax.bar_label(bars, labels=[f"{p.items:,}" for p in pilots], padding=3, fontsize="small")
    ax.set_yticks(range(len(pilots)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("items served")
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Items per pilot")
    return _png(fig)


def _count(n: int | None, noun: str) -> str:
    return f"? {noun}s" if n is None else f"{n:,} {noun}" + ("" if n == 1 else "s")


def _step_ticks(ax, steps: Sequence[Step]) -> None:
    def tick(s: Step) -> str:
        return f"{_plain(s.name)}\n{_count(s.pilots, 'pilot')}\n{_count(s.workers, 'worker')}"

    ax.set_xticks(range(len(steps)), [tick(s) for s in steps], fontsize="small")


def _per_step_axes(ax, steps: Sequence[Step], ylabel: str, title: str) -> None:
    """A line plot over the steps: one tick per step with its pilots and workers."""
    _step_ticks(ax, steps)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    ax.set_title(title)


def scale_throughput(steps: Sequence[Step]) -> bytes | None:
    """Items/s per step, and what linear scaling per worker from the first step would give."""
    measured = [(i, s) for i, s in enumerate(steps) if s.items_per_second is not None]
    if not measured:
        return None
    fig = _figure(4.2)
    ax = fig.subplots()
    ax.plot([i for i, _ in measured], [s.items_per_second for _, s in measured], marker="o",
            color="tab:blue", label="items/s (first to last result)")
    for i, s in measured:
        ax.annotate(f"{s.items_per_second:,.0f}", (i, s.items_per_second), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize="small")
    base = next(((i, s) for i, s in measured if s.workers), None)
    if base is not None and len(measured) > 1:
        per_worker = base[1].items_per_second / base[1].workers
        ideal = [(i, per_worker * s.workers) for i, s in enumerate(steps) if s.workers]
        ax.plot([i for i, _ in ideal], [v for _, v in ideal], linestyle="--", color="tab:gray",
                label=f"linear in workers from {_plain(base[1].name)}")
    ax.margins(y=0.15)
    _per_step_axes(ax, steps, "items/s", "Throughput per step")
    return _png(fig)


def scale_latency(steps: Sequence[Step]) -> bytes | None:
    if not any(getattr(s.latency, name) is not None for s in steps for name, _ in PERCENTILES):
        return None
    fig = _figure(4.2)
    ax = fig.subplots()
    for name, color in PERCENTILES:
        points = [(i, getattr(s.latency, name)) for i, s in enumerate(steps) if getattr(s.latency, name) is not None]
        ax.plot([i for i, _ in points], [v for _, v in points], marker="o", color=color, label=name)
    _per_step_axes(ax, steps, "request latency (ms)", "Request latency percentiles per step")
    return _png(fig)


def scale_items_per_pilot(steps: Sequence[Step]) -> bytes | None:
    """Stacked bars: each segment is one pilot of that step (pilots differ from step to step, so
    they are told apart by colour within a bar, not across bars)."""
    if not any(s.items_per_pilot for s in steps):
        return None
    fig = _figure(4.2)
    ax = fig.subplots()
    colors = [f"C{k}" for k in range(10)]
    for i, s in enumerate(steps):
        bottom = 0
        for k, (_, n) in enumerate(sorted((s.items_per_pilot or {}).items())):
            ax.bar(i, n, bottom=bottom, color=colors[k % len(colors)], edgecolor="white", linewidth=0.8, width=0.6)
            bottom += n
        if s.items_per_pilot:
            counts = list(s.items_per_pilot.values())
            ax.annotate(f"{_count(len(counts), 'pilot')}\nmin {min(counts):,} / max {max(counts):,}", (i, bottom),
                        textcoords="offset points", xytext=(0, 4), ha="center", fontsize="x-small")
    _step_ticks(ax, steps)
    ax.set_ylabel("items (one segment per pilot)")
    ax.margins(y=0.2)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Items per pilot per step")
    return _png(fig)


def scale_triton(steps: Sequence[Step]) -> bytes | None:
    totals = [triton_totals(s.triton) if s.triton else (None, None) for s in steps]
    if all(b is None and q is None for b, q in totals):
        return None
    fig = _figure(5.0)
    batch_ax, queue_ax = fig.subplots(2, 1, sharex=True)
    for ax, k, color, label in ((batch_ax, 0, "tab:blue", "avg batch\n(inferences/execution)"),
                                (queue_ax, 1, "tab:orange", "queue ms\nper request")):
        points = [(i, t[k]) for i, t in enumerate(totals) if t[k] is not None]
        ax.bar([i for i, _ in points], [v for _, v in points], color=color, width=0.6)
        for i, v in points:
            ax.annotate(f"{v:.3g}", (i, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize="small")
        ax.set_ylabel(label, fontsize="small")
        ax.margins(y=0.2)
        ax.grid(axis="y", alpha=0.3)
    _step_ticks(queue_ax, steps)
    batch_ax.set_title("Triton batching and queue time per step")
    return _png(fig)
