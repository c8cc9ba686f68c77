"""(3) naive: what batch jobs do without a shared server. Each Parsl task loads the model in-process
and infers its chunk (the same chunks, executor and workers as the campaign, no Triton), so the
ratio to it says what sharing one loaded model buys."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from dgaas_flow.specs import Workflow

from .models import ModelCase, chunks
from .parsl_tasks import bounded, by_value, load_parsl, stop_parsl
from .rounding import round_or_none


def naive_chunk(items: list, kind: str, model_dir: str, top_k: int) -> dict:
    """A Parsl task that does what a batch job without a server does: load the model, infer its
    chunk in one batch, return one result per item. Self-contained (its imports inside): Parsl
    ships it to the workers by value (see by_value)."""
    import time
    from pathlib import Path

    import numpy as np

    t0 = time.perf_counter()
    folder = Path(model_dir)
    labels = (folder.parent / "labels.txt").read_text().split()
    if kind in ("heavy", "jets"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one worker, one core: as the server's instance
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def infer(batch):  # one array (rows files) for the only input, or the inputs by name (.npz)
            return session.run(None, {n: batch[n if n in batch else ""].astype(np.float32, copy=False)
                                      for n in names})[0]
    else:
        weights = np.load(folder / "weights.npz")
        w1, b1, w2, b2 = weights["w1"], weights["b1"], weights["w2"], weights["b2"]

        def infer(batch):
            x = batch[""]
            h = np.maximum(x.reshape(len(x), -1).astype(np.float32) / 255.0 @ w1 + b1, 0.0)
            logits = h @ w2 + b2
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            return p / p.sum(axis=1, keepdims=True)
    t1 = time.perf_counter()
    arrays: dict = {}
    rows: dict = {}
    for _, path, row in items:
        if path not in arrays:
            data = np.load(path, mmap_mode="r")
            if hasattr(data, "files"):  # .npz: its named arrays, read whole
                with data:
                    arrays[path] = dict(data)
            else:
                arrays[path] = {"": data}
        for name, array in arrays[path].items():
            rows.setdefault(name, []).append(array[row])
    probs = infer({name: np.stack(values) for name, values in rows.items()})
    best = probs.argmax(axis=1)
    t2 = time.perf_counter()
    results = [{"id": item[0], "ok": True, "prediction": labels[k], "score": round(float(probs[i, k]), 6)}
               for i, (item, k) in enumerate(zip(items, best, strict=True))]
    return {"results": results, "load_s": t1 - t0, "infer_s": t2 - t1}


def run_naive(case: ModelCase, wf: Workflow, folder: Path, n: int) -> dict[str, Any]:
    """items/s from parsl.load to the executor's cleanup, the driver writing every result as a JSON line."""
    from parsl import python_app

    shutil.rmtree(folder / "naive", ignore_errors=True)
    (folder / "naive").mkdir(parents=True)
    model_dir = str(wf.model.repository / wf.model.name / "1")
    app = python_app(by_value(naive_chunk))
    stats = {"items": 0, "load_s": 0.0, "infer_s": 0.0, "tasks": 0, "first": None}
    t0 = time.perf_counter()
    dfk = load_parsl(wf, folder / "naive" / "parsl")
    try:
        with open(folder / "naive" / "results.jsonl", "w") as out:
            def done(outcome: dict) -> None:
                out.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in outcome["results"]))
                stats["items"] += len(outcome["results"])
                stats["load_s"] += outcome["load_s"]
                stats["infer_s"] += outcome["infer_s"]
                stats["tasks"] += 1
                if stats["first"] is None:
                    stats["first"] = time.perf_counter() - t0

            bounded(lambda c: app([i.task_item() for i in c], case.name, model_dir, wf.outputs.top_k),
                    chunks(wf, n), wf.in_flight_limit(), done)
    finally:
        stop_parsl(dfk)
    wall = time.perf_counter() - t0
    tasks = max(stats["tasks"], 1)
    return {"items": stats["items"], "seconds": round(wall, 3), "items_per_s": round(stats["items"] / wall, 1),
            "tasks": stats["tasks"], "load_s_per_task": round(stats["load_s"] / tasks, 4),
            "infer_s_per_task": round(stats["infer_s"] / tasks, 4),
            "time_to_first_result_s": round_or_none(stats["first"], 3)}

