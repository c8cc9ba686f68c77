"""What may share a session, decided before any block starts (the campaigns themselves run in
tests/integration/test_session.py)."""

from __future__ import annotations

from dgaas_flow import metrics
from dgaas_flow.pilot.endpoint import metrics_request, request_metrics
from dgaas_flow.session import differences
from dgaas_flow.spec import load_workflow
from tests.conftest import WORKFLOW, copy_workflow, run_cli


def variant(tmp_path, digits_data, name: str, old: str = "", new: str = ""):
    text = WORKFLOW.read_text().replace("\nname: digits\n", f"\nname: {name}\n").replace(old, new)
    return copy_workflow(tmp_path / name, text, digits_data / "images")


def test_workflows_differing_only_in_inputs_outputs_and_client_share_a_session(tmp_path, digits_data):
    base = load_workflow(variant(tmp_path, digits_data, "base"))
    same = load_workflow(variant(tmp_path, digits_data, "same", "chunk_size: 128", "chunk_size: 64\nmax_in_flight: 3"))
    same.inputs.files = same.inputs.files.replace("*/*.png", "1/*.png")
    same.client.protocol = "grpc"
    assert differences(base, same) == []
    grown = load_workflow(variant(tmp_path, digits_data, "grown", "provider: local",
                                  "provider: {kind: local, workers_per_node: 3}"))
    assert differences(base, grown) == ["provider"]
    grown.model.name = "another"
    grown.task_retries += 1
    assert differences(base, grown) == ["provider", "task_retries", "model.name"]


def test_run_refuses_workflows_that_cannot_share_before_starting_anything(tmp_path, digits_data):
    a = variant(tmp_path, digits_data, "a")
    b = variant(tmp_path, digits_data, "b", "provider: local", "provider: {kind: local, workers_per_node: 1}")
    result = run_cli("run", a, b, "--progress", "quiet", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"workflow b ({b}): provider differ from those of workflow a ({a})" in result.stderr
    assert "run this workflow in a session of its own" in result.stderr
    assert not (tmp_path / "runs").exists()  # no run folder, no Parsl, no block

    result = run_cli("run", a, a, "--out", tmp_path / "one", cwd=tmp_path)
    assert result.returncode == 2 and "set outputs.dir in the workflows instead" in result.stderr
    assert not (tmp_path / "one").exists()


def test_a_campaign_counts_what_the_server_did_between_its_two_readings(tmp_path):
    before = {"requests": 10.0, "inferences": 640.0, "executions": 12.0, "gpu_utilization": 0.2}
    after = {"requests": 25.0, "inferences": 1600.0, "executions": 20.0, "gpu_utilization": 0.5}
    counted = metrics.subtract(after, before)
    assert counted == {"requests": 15.0, "inferences": 960.0, "executions": 8.0, "gpu_utilization": 0.5}
    assert metrics.describe(counted)["avg_batch"] == 120.0
    assert metrics.subtract(after, {}) == after  # a pilot that started during the campaign

    assert metrics_request(tmp_path) is None
    first, second = request_metrics(tmp_path), request_metrics(tmp_path)
    assert first != second and metrics_request(tmp_path) == second
