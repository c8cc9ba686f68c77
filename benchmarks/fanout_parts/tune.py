"""Server settings for a model (--tune): the ceiling client against variants of the model's
config.pbtxt (max_batch_size, queue delay, instances, onnxruntime threads), so that the workflow's
Triton settings come from a measurement."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dgaas_flow.specs import load_workflow

from .ceiling import ceiling_search, model_info, start_pilot
from .models import ModelCase, bench_workflow, load_rows
from .progress import say


def _variant_config(text: str, max_batch: int, delay_us: int, instances: int, threads: int) -> str:
    """config.pbtxt with the four settings replaced and every other line as it was."""
    import re

    text = re.sub(r"max_batch_size:\s*\d+", f"max_batch_size: {max_batch}", text)
    text = re.sub(r"max_queue_delay_microseconds:\s*\d+", f"max_queue_delay_microseconds: {delay_us}", text)
    text = re.sub(r"(instance_group\s*\[\s*\{\s*count:\s*)\d+", rf"\g<1>{instances}", text)
    return re.sub(r'(key:\s*"intra_op_threads"\s*value:\s*\{\s*string_value:\s*)"\d+"', rf'\g<1>"{threads}"', text)


TUNE_VARIANTS = {
    # (max_batch_size, max_queue_delay_microseconds, instances, onnxruntime intra-op threads)
    "heavy": [(256, 2000, 1, 1), (1024, 0, 1, 1), (1024, 2000, 1, 1), (1024, 10000, 1, 1), (2048, 2000, 1, 1),
              (1024, 2000, 1, 2), (1024, 0, 2, 1), (1024, 2000, 2, 1), (2048, 2000, 2, 1)],
    "digits": [(64, 100, 1, 1), (256, 0, 1, 1), (256, 100, 1, 1), (256, 2000, 1, 1), (256, 100, 2, 1),
               (1024, 100, 1, 1)],
}


def tune(case: ModelCase, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ceiling search over HTTP against a pilot serving each variant (a copy of the model
    repository in a temporary folder, the large weight files linked, not copied)."""
    n = args.items[0]
    items_dir = args.work / case.name / f"items-{n}"
    case.write_items(items_dir, n)
    wf = load_workflow(bench_workflow(case, items_dir, 2, args.work / case.name / "tune", None))
    rows = load_rows(items_dir)
    config = (wf.model.repository / wf.model.name / "config.pbtxt").read_text()
    table = []
    for max_batch, delay, instances, threads in TUNE_VARIANTS[case.name]:
        with tempfile.TemporaryDirectory(prefix="dgaas-tune-") as tmp:
            repo = Path(tmp) / "repo"
            shutil.copytree(wf.model.repository, repo, symlinks=True,
                            ignore=shutil.ignore_patterns("model.onnx", "weights.npz", "__pycache__"))
            version = repo / wf.model.name / "1"
            for big in ("model.onnx", "weights.npz"):
                if (wf.model.repository / wf.model.name / "1" / big).exists():
                    (version / big).symlink_to(wf.model.repository / wf.model.name / "1" / big)
            (repo / wf.model.name / "config.pbtxt").write_text(
                _variant_config(config, max_batch, delay, instances, threads))
            pilot = start_pilot(wf, Path(tmp), repository=repo)
            try:
                info = model_info(pilot.endpoint.http_url, wf.model.name)
                grid = ceiling_search({"http": pilot.endpoint.http_url}, info, wf.outputs.top_k, rows, ["http"],
                                      sorted({64, 256, max_batch}), args.ceiling_procs, args.search_seconds)
            finally:
                pilot.stop()
        for r in grid:
            table.append({"max_batch_size": max_batch, "queue_delay_us": delay, "instances": instances,
                          "ort_threads": threads, **{k: r[k] for k in ("batch", "procs", "items_per_s", "errors")}})
            say(f"tune {case.name}: {table[-1]}")
    return table


def write_tune(case: str, table: list[dict[str, Any]], args: argparse.Namespace, info: dict) -> Path:
    """results/<model>-server-config.md: the table, the best variant marked."""
    path = args.results / f"{case}-server-config.md"
    best = max(table, key=lambda r: r["items_per_s"])
    lines = [f"# {case}: Triton settings measured with the ceiling client", "",
             f"Command: `{info['command']}`  ", f"Date: {info['date']}  ",
             f"Machine: {info['machine']['cpus']} CPUs ({info['machine']['cpu_model']}), "
             f"{info['machine']['memory_gb']} GB; load average at start {info['machine']['loadavg_start']}", "",
             "Raw tritonclient processes over HTTP, each sending requests of `batch` rows back to back for "
             f"{args.search_seconds} s; items/s summed over the processes. Client and server share the cores.", "",
             "| max_batch_size | queue delay us | instances | ort threads | batch | processes | items/s | errors |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        mark = " **best**" if r is best else ""
        lines.append(f"| {r['max_batch_size']} | {r['queue_delay_us']} | {r['instances']} | {r['ort_threads']} | "
                     f"{r['batch']} | {r['procs']} | {r['items_per_s']:.0f}{mark} | {r['errors']} |")
    lines += ["", f"Best: max_batch_size {best['max_batch_size']}, queue delay {best['queue_delay_us']} us, "
              f"{best['instances']} instance(s) of {best['ort_threads']} onnxruntime thread(s), with requests of "
              f"{best['batch']} from {best['procs']} processes: {best['items_per_s']:.0f} items/s."]
    path.write_text("\n".join(lines) + "\n")
    return path
