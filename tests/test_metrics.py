"""Triton's Prometheus text becomes the counters a summary reports."""

from __future__ import annotations

from dgaas_flow.pilot import metrics

# As Triton 2.51 writes it (two models; counters without a _total suffix; one GPU gauge).
TEXT = """# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="a",version="1"} 10
nv_inference_request_success{model="b",version="1"} 5
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="a",version="1"} 640
nv_inference_count{model="b",version="1"} 5
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="a",version="1"} 5
nv_inference_exec_count{model="b",version="1"} 5
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="a",version="1"} 1500
# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="a",version="1"} 20000
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-2"} 0.25
"""


def test_counters_are_summed_over_models_and_described_per_request():
    counters = metrics.parse(TEXT)
    assert (counters["requests"], counters["inferences"], counters["executions"]) == (15, 645, 10)
    assert counters["gpu_utilization"] == 0.375
    shown = metrics.describe(counters)
    assert shown["avg_batch"] == 64.5 and shown["queue_ms_per_request"] == 0.1
    assert shown["compute_ms_per_execution"] == 2.0 and shown["gpu_utilization"] == 0.375


def test_counters_of_two_server_lifetimes_add_up():
    first = metrics.parse(TEXT)
    total = metrics.add(metrics.add({}, first), first)
    assert total["inferences"] == 1290 and "gpu_utilization" not in total
    assert metrics.add(total, {}) == total  # a restart before its first reading loses nothing
    assert metrics.describe(None)["avg_batch"] is None and metrics.describe({})["requests"] is None


def test_counters_are_kept_per_model_too():
    text = "\n".join([
        "# TYPE nv_inference_request_success counter",
        'nv_inference_request_success{model="digits",version="1"} 10',
        'nv_inference_request_success{model="jets",version="1"} 4',
        "# TYPE nv_inference_count counter",
        'nv_inference_count{model="digits",version="1"} 640',
        'nv_inference_count{model="jets",version="1"} 8',
        "# TYPE nv_inference_exec_count counter",
        'nv_inference_exec_count{model="digits",version="1"} 5',
        'nv_inference_exec_count{model="jets",version="1"} 4',
    ]) + "\n"
    described = metrics.describe(metrics.subtract(metrics.parse(text), {}))
    assert (described["requests"], described["inferences"]) == (14, 648)
    assert described["models"]["digits"]["avg_batch"] == 128.0 and described["models"]["jets"]["requests"] == 4
