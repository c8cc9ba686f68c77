"""The markdown report: the command and the machine, the results table, each run's details (where
the time and the CPU went) and the ceiling searches."""

from __future__ import annotations

from pathlib import Path

from .run import Run
from .table import markdown_table


def write_markdown(runs: list[Run], info: dict, path: Path, plots: list[Path]) -> None:
    """<tag>.md, the plots linked at its end."""
    m = info["machine"]
    lines = ["# Fan-out: ceiling, dgaas-flow, naive and the Parsl floor", "",
             f"Command: `{info['command']}`  ", f"Date: {info['date']}  ",
             f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, {m['os']}, Python {m['python']}; "
             f"load average at start {m['loadavg_start']}", "",
             "items/s of each path (see benchmarks/README.md); `steady` is dgaas-flow between 10% and 90% of its "
             "items (results.jsonl, sampled every 50 ms); `warm` is a later campaign of the same items in one "
             "session (`dgaas-flow run warm-up.yaml c1.yaml ... cK.yaml`: blocks, pilot and clients already up, as "
             "they are for the ceiling), items over its own campaign time, the median of the "
             "`--warm-repeats` sessions' `--warm-campaigns` campaigns; "
             "`floor` is empty Parsl tasks/s x chunk size; "
             "`1st s` is the campaign's time to its first result; RSS is the campaign driver's peak resident "
             "memory.", "",
             *markdown_table(runs)]
    lines += ["", "## Details", ""]
    for r in runs:
        bits = [f"**{r.model}, {r.items} items, {r.workers} workers**:"]
        if r.ceiling:
            c = r.ceiling
            bits.append(f"ceiling {c['protocol']}, batch {c['batch']}, {c['procs']} client processes "
                        f"({c['errors']} errors)"
                        + (f", again after the other paths {c['after_items_per_s']:.0f} items/s "
                           f"(x{c['after_items_per_s'] / c['items_per_s']:.2f})" if c.get("after_items_per_s") else "")
                        + ";")
        if r.dgaas:
            d = r.dgaas
            lat = d["latency_ms"] or {}
            bits.append(f"campaign wall {d['campaign_wall_s']} s (command {d['command_wall_s']} s), "
                        f"{d['requests']} requests, latency p50 {lat.get('p50')} ms p99 {lat.get('p99')} ms, "
                        f"first result {d['first_result_from_command_s']} s after the command started;")
            bits.append("CPU us per item over the whole run: "
                        + ", ".join(f"{k} {v}" for k, v in d["cpu_us_per_item"].items()) + ";")
            if d["steady_cpu_us_per_item"]:
                bits.append("between the first and the last result: "
                            + ", ".join(f"{k} {v}" for k, v in d["steady_cpu_us_per_item"].items()) + ";")
            for t in d["triton"]:
                bits.append(f"server: avg batch {t.get('avg_batch')}, queue {t.get('queue_ms_per_request')} "
                            f"ms/request, compute {t.get('compute_ms_per_execution')} ms/execution;")
        if r.warm:
            w = r.warm
            bits.append(f"warm (later campaigns in one session; the median of {len(w['repeats_items_per_s'])} "
                        f"campaigns, whose rates were {w['repeats_items_per_s']} items/s): campaign "
                        f"{w['campaign_wall_s']} s, call {w['call_wall_s']} s, first result "
                        f"{w['time_to_first_result_s']} s after it started;")
        if r.naive:
            bits.append(f"naive: {r.naive['tasks']} tasks, load {r.naive['load_s_per_task']} s + infer "
                        f"{r.naive['infer_s_per_task']} s per task;")
        if r.floor:
            bits.append(f"floor: {r.floor['tasks']} empty tasks at {r.floor['tasks_per_s']} tasks/s.")
        lines.append("- " + " ".join(bits))
    ceilings = {(r.model, r.items): r.ceiling for r in runs if r.ceiling}
    for (model, n), c in ceilings.items():
        lines += ["", f"### Ceiling search: {model}, {n} items (max_batch_size {c['max_batch_size']})", "",
                  "| protocol | batch | processes | items/s | errors |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {s['protocol']} | {s['batch']} | {s['procs']} | {s['items_per_s']:.0f} | {s['errors']} |"
                  for s in c["search"]]
    if plots:
        lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")
