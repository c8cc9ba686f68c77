"""Triton's own Prometheus metrics, read from a pilot's metrics port: what the server saw, as
opposed to what the clients measured. The achieved batch size (inferences per execution) and the
queue time tell whether the server or the clients are the limit."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from dgaas_flow.processes import http_get

# Counters summed over models and versions: Triton's name -> ours.
COUNTERS = {
    "nv_inference_request_success": "requests",
    "nv_inference_request_failure": "failures",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}
GPU_UTILIZATION = "nv_gpu_utilization"  # a gauge, 0..1 per GPU
# A pilot samples that gauge at each reading and publishes the sum and count of its samples, so a
# campaign's mean is the difference of two readings, like the counters'.
GPU_SUM, GPU_SAMPLES = "gpu_utilization_sum", "gpu_utilization_samples"


MODEL_PREFIX = "model/"  # per-model counters: model/<name>/<counter>, beside the totals


def parse(text: str) -> dict[str, float]:
    """Counters by our names, summed over models and per model (`model/<name>/<counter>`), and
    `gpu_utilization` (the mean over GPUs) when the server has any."""
    totals = dict.fromkeys(COUNTERS.values(), 0.0)
    gpus: list[float] = []
    for family in text_string_to_metric_families(text):
        # the parser names a counter's samples <name>_total, whatever the server wrote
        samples = [s for s in family.samples if s.name in (family.name, f"{family.name}_total")]
        if family.name in COUNTERS:
            ours = COUNTERS[family.name]
            for sample in samples:
                totals[ours] += sample.value
                if "model" in sample.labels:
                    key = f"{MODEL_PREFIX}{sample.labels['model']}/{ours}"
                    totals[key] = totals.get(key, 0.0) + sample.value
        elif family.name == GPU_UTILIZATION:
            gpus += [sample.value for sample in samples]
    if gpus:
        totals["gpu_utilization"] = sum(gpus) / len(gpus)
    return totals


def scrape(url: str, timeout: float = 2.0) -> dict[str, float] | None:
    """One reading of a metrics URL; None when the server does not answer."""
    status, body = http_get(url, timeout)
    if status != 200:
        return None
    try:
        return parse(body.decode(errors="replace"))
    except ValueError:
        return None


def add(total: dict[str, float], reading: dict[str, float]) -> dict[str, float]:
    """Counters of two server lifetimes (a restart resets Triton's counters)."""
    keys = (total.keys() | reading.keys()) - {"gpu_utilization"}
    return {k: total.get(k, 0.0) + reading.get(k, 0.0) for k in keys}


def subtract(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """What a pilot counted between two readings of its endpoint."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def per_model(counters: dict[str, float]) -> dict[str, dict[str, float]]:
    """The per-model counters, by model."""
    models: dict[str, dict[str, float]] = {}
    for key, value in counters.items():
        if key.startswith(MODEL_PREFIX):
            model, name = key[len(MODEL_PREFIX):].rsplit("/", 1)
            models.setdefault(model, {})[name] = value
    return models


def describe(counters: dict[str, float] | None) -> dict[str, Any]:
    """The figures a person reads: requests, achieved batch size, queue and compute time, in all
    and (`models`) for each model the server counted."""
    if not counters:
        return {"requests": None, "failures": None, "inferences": None, "executions": None, "avg_batch": None,
                "queue_ms_per_request": None, "compute_ms_per_execution": None, "gpu_utilization": None,
                "models": {}}
    figures = _figures(counters)
    figures["models"] = {model: {k: v for k, v in _figures(own).items() if k != "gpu_utilization"}
                         for model, own in sorted(per_model(counters).items())}
    return figures


def _figures(counters: dict[str, float]) -> dict[str, Any]:
    requests, executions = counters.get("requests", 0.0), counters.get("executions", 0.0)
    per = lambda us, n: round(us / n / 1000.0, 3) if n else None  # noqa: E731
    samples = counters.get(GPU_SAMPLES)
    gpu = counters.get(GPU_SUM, 0.0) / samples if samples else counters.get("gpu_utilization")
    return {
        "requests": int(requests),
        "failures": int(counters.get("failures", 0.0)),
        "inferences": int(counters.get("inferences", 0.0)),
        "executions": int(executions),
        "avg_batch": round(counters.get("inferences", 0.0) / executions, 2) if executions else None,
        "queue_ms_per_request": per(counters.get("queue_us", 0.0), requests),
        "compute_ms_per_execution": per(counters.get("compute_infer_us", 0.0), executions),
        "gpu_utilization": round(gpu, 3) if gpu is not None else None,
    }
