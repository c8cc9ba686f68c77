"""What may share a session, decided before any block starts (the campaigns themselves run in
tests/integration/test_session.py)."""

from __future__ import annotations

import threading
import time

from dgaas_flow.campaign import format_summary, summarize
from dgaas_flow.campaign import session as session_module
from dgaas_flow.campaign.session import Session
from dgaas_flow.campaign.sink import ResultsFile
from dgaas_flow.campaign.stats import RunStats
from dgaas_flow.errors import UserError
from dgaas_flow.pilot import metrics, supervisor
from dgaas_flow.pilot.endpoint import Endpoint, metrics_request, read_registry, request_metrics
from dgaas_flow.pilot.settings import PilotConfig
from dgaas_flow.pilot.supervisor import Pilot
from dgaas_flow.specs import load_workflow
from tests.conftest import WORKFLOW, copy_workflow, run_cli


def variant(tmp_path, digits_data, name: str, old: str = "", new: str = ""):
    text = WORKFLOW.read_text().replace("\nname: digits\n", f"\nname: {name}\n").replace(old, new)
    return copy_workflow(tmp_path / name, text, digits_data / "images")


def test_workflows_differing_only_in_inputs_outputs_and_client_share_a_session(tmp_path, digits_data):
    base = load_workflow(variant(tmp_path, digits_data, "base"))
    same = load_workflow(variant(tmp_path, digits_data, "same", "chunk_size: auto", "chunk_size: 64\nmax_in_flight: 3"))
    same.inputs.files = same.inputs.files.replace("*/*.png", "1/*.png")
    same.client.protocol = "grpc"
    session = Session(base, tmp_path / "session")
    assert session.mismatches(same) == []
    grown = load_workflow(variant(tmp_path, digits_data, "grown", "provider: local",
                                  "provider: {kind: local, workers_per_node: 3}"))
    assert session.mismatches(grown) == ["provider"]
    grown.model.name = "another"
    grown.task_retries += 1
    assert session.mismatches(grown) == ["provider", "task_retries", "model.name"]


def test_a_session_serves_the_models_of_all_its_workflows(tmp_path, digits_data):
    """Two models of one repository: one session, whose pilots load both (its folder is its own)."""
    digits = load_workflow(variant(tmp_path, digits_data, "a"))
    other = load_workflow(variant(tmp_path, digits_data, "b"))
    other.model.name = "heavy-stand-in"
    session = Session.for_workflows([digits, other])
    assert session.models == ["digits", "heavy-stand-in"] and session.mismatches(other) == []
    assert session.dir == digits.out_dir().parent / "session-a+b"


def test_a_session_without_a_workflow_checks_its_repository_and_models(tmp_path):
    repo = tmp_path / "models"
    (repo / "tagger").mkdir(parents=True)
    session = Session(provider="local", repository=repo, out=tmp_path / "s")
    assert session.models is None and session.provider.kind == "local" and session.starts_pilots
    try:
        Session(provider="local", repository=repo, models=["tagger", "missing"])
    except UserError as exc:
        assert "no model 'missing'" in str(exc) and "it holds: tagger" in str(exc)
    else:
        raise AssertionError("a model that is not in the repository was accepted")
    try:
        Session(provider="local")
    except UserError as exc:
        assert "need a model repository" in str(exc)
    else:
        raise AssertionError("a session that starts pilots without a repository was accepted")


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
    result = run_cli("run", a, a, cwd=tmp_path)  # the second would only resume the first
    assert result.returncode == 2 and f"two of the workflows write to {tmp_path / 'runs' / 'a'}" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_campaign_counts_what_the_server_did_between_its_two_readings(tmp_path):
    before = {"requests": 10.0, "inferences": 640.0, "executions": 12.0,
              metrics.GPU_SUM: 0.4, metrics.GPU_SAMPLES: 2.0}
    after = {"requests": 25.0, "inferences": 1600.0, "executions": 20.0,
             metrics.GPU_SUM: 2.2, metrics.GPU_SAMPLES: 5.0}
    counted = metrics.describe(metrics.subtract(after, before))
    assert (counted["requests"], counted["inferences"], counted["avg_batch"]) == (15, 960, 120.0)
    assert counted["gpu_utilization"] == 0.6  # this campaign's samples, not the pilot's lifetime mean
    assert metrics.describe(after)["gpu_utilization"] == 0.44

    assert metrics_request(tmp_path) is None
    first, second = request_metrics(tmp_path), request_metrics(tmp_path)
    assert first != second and metrics_request(tmp_path) == second


def test_a_session_campaign_summary_counts_only_its_own_pilots_work(tmp_path, digits_data):
    """Pilots as their endpoint files say: one that stopped before the campaign, one up all along
    (restarted once during it), one started during it, and one that did not answer the request
    for counters at the end."""
    wf = load_workflow(variant(tmp_path, digits_data, "base"))
    session = Session(wf, tmp_path / "session")
    session.registry.mkdir(parents=True)
    session.started_at = "2026-11-29T01:00:00+00:00"

    def pilot(name: str, state: str, requests: float, restarts: int = 0) -> Endpoint:
        return Endpoint(name=name, host="n1", state=state, started_at="2026-11-29T01:00:05+00:00", restarts=restarts,
                        http_url=f"http://{name}:8000", metrics={"requests": requests, "inferences": requests})

    before = {e.key: e for e in (pilot("gone", "stopped", 50), pilot("steady", "ready", 100),
                                 pilot("mute", "ready", 7))}
    for e in (pilot("gone", "stopped", 50), pilot("steady", "ready", 130, restarts=1), pilot("mute", "ready", 9),
              pilot("newcomer", "ready", 12)):
        e.write(session.registry / f"{e.name}.json")
    stats = RunStats()
    stats.end()
    tally = ResultsFile(tmp_path / "results.jsonl").tally
    s = summarize(wf, tmp_path, 0, stats, tally, session, before,
                  fresh={e.key for e in read_registry(session.registry) if e.name != "mute"})
    assert {t["endpoint"]: t["requests"] for t in s["triton"]} == {
        "http://steady:8000": 30, "http://mute:8000": 2, "http://newcomer:8000": 12}  # not the one gone before
    assert [t["endpoint"] for t in s["triton"] if t.get("stale")] == ["http://mute:8000"]
    assert s["restarts"] == 1 and s["blocks"] == 1  # the block is None for all: one
    assert "as last published: the pilot did not answer" in format_summary({**s, "out_dir": "x"})


def test_a_pilot_looks_for_counter_requests_at_every_poll_only_while_campaigns_follow_one_another(
        tmp_path, monkeypatch):
    """The request file lives on the shared filesystem: an idle pilot opens it every REQUEST_IDLE_S,
    not at every poll. (The clock is moved by setting the pilot's own deadlines.)"""
    monkeypatch.setattr(supervisor, "REQUEST_IDLE_S", 3600.0)  # the polls below all fall within it
    pilot = Pilot(PilotConfig(repository=tmp_path, registry=tmp_path / "pilots", log_dir=tmp_path / "logs"))
    pilot.endpoint.state = "ready"
    opened, answered = [], []
    monkeypatch.setattr(supervisor, "metrics_request", lambda registry: opened.append(1) or metrics_request(registry))
    monkeypatch.setattr(pilot, "_read_metrics", lambda answering=None: answered.append(answering))
    (tmp_path / "pilots").mkdir()

    first = request_metrics(tmp_path / "pilots")  # idle (no campaign for a while): found at its next check
    pilot._answer_metrics_request()
    second = request_metrics(tmp_path / "pilots")  # a campaign that followed: found at the next poll
    pilot._answer_metrics_request()
    assert answered == [first, second] and len(opened) == 2

    pilot._request_fast_until = 0.0  # REQUEST_FAST_S later, without a request
    pilot._answer_metrics_request()
    third = request_metrics(tmp_path / "pilots")
    for _ in range(5):  # polls within REQUEST_IDLE_S: the file is not opened
        pilot._answer_metrics_request()
    assert answered == [first, second] and len(opened) == 3
    pilot._next_request_check = 0.0  # REQUEST_IDLE_S later
    pilot._answer_metrics_request()
    assert answered == [first, second, third] and len(opened) == 4


def test_a_campaign_waits_only_for_the_pilots_that_served_it(tmp_path, digits_data, monkeypatch):
    wf = load_workflow(variant(tmp_path, digits_data, "a"))
    session = Session(wf, tmp_path / "session")
    session.registry.mkdir(parents=True)
    busy = Endpoint(name="busy", host="node-a", http_url="http://node-a:1", state="ready")
    idle = Endpoint(name="idle", host="node-b", http_url="http://node-b:1", state="ready")
    for e in (busy, idle):
        e.write(session.registry / f"{e.name}.json")

    late = Endpoint(name="late", host="node-c", http_url="http://node-c:1", state="ready")

    def answer() -> None:  # what the busy pilot's supervisor does (tested above)
        while (request := metrics_request(session.registry)) is None:
            time.sleep(0.01)
        late.write(session.registry / "late.json")  # ready meanwhile: it served nothing, so is not waited for
        busy.model_copy(update={"metrics_answered": request}).write(session.registry / "busy.json")

    responder = threading.Thread(target=answer, daemon=True)
    responder.start()
    assert session.read_counters({"http://node-a:1"}) == {busy.key, idle.key, late.key}
    responder.join(timeout=10)
    assert not responder.is_alive()
    (session.registry / "late.json").unlink()

    monkeypatch.setattr(session_module, "METRICS_WAIT_S", 0.2)
    assert session.read_counters({"http://node-b:1"}) == {busy.key}  # idle did not answer: its figures are stale
    assert session._silent == {idle.key}
    assert session.read_counters(set()) == {busy.key, idle.key}  # a campaign that asked no server
    session._silent = set()
    # a URL that is no pilot's (a gateway in front of them): any of them may have served
    assert session.read_counters({"http://gateway:1"}) == set() and session._silent == {busy.key, idle.key}
