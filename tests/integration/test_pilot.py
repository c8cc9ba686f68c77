"""The pilot with the real tritonserver: serving, supervision, standalone daemon, and wrap."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from dgaas_flow.apps.tasks import InferRequest, infer_items
from dgaas_flow.errors import PilotError
from dgaas_flow.pilot.endpoint import Endpoint
from dgaas_flow.pilot.settings import TritonSettings
from dgaas_flow.pilot.supervisor import BACKEND_SHM, Pilot
from dgaas_flow.processes import shared_memory
from tests.conftest import DIGITS, run_cli, wait_for

pytestmark = pytest.mark.integration
IMAGES = DIGITS / "data" / "images"
REPO = DIGITS / "model_repository"


def some_items(n: int) -> list[tuple[str, str, None]]:
    paths = sorted(IMAGES.glob("*/*.png"))[:: 1797 // n][:n]
    return [(str(p.relative_to(IMAGES)), str(p), None) for p in paths]


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_pilot_serves_on_loopback_and_publishes_its_endpoint(pilot: Pilot):
    endpoint = Endpoint.read(pilot.endpoint_file)
    assert endpoint.state == "ready" and endpoint.pid == pilot.server_pid
    assert endpoint.http_url.startswith("http://127.0.0.1:") and endpoint.models == ["digits"]
    listening = {c.laddr.ip for c in psutil.Process(pilot.server_pid).net_connections() if c.status == "LISTEN"}
    assert listening and all(is_loopback(ip) for ip in listening), listening
    grpc = grpcclient.InferenceServerClient(endpoint.grpc_url.removeprefix("grpc://"))
    assert grpc.is_model_ready("digits")
    grpc.close()
    for url in (endpoint.http_url, endpoint.grpc_url):
        out = infer_items(some_items(20), InferRequest(model="digits", server_url=url, protocol=url.split(":")[0]))
        assert [r["ok"] for r in out["results"]] == [True] * 20
        assert sum(r["prediction"] == r["id"].split("/")[0] for r in out["results"]) >= 18


def test_tasks_rank_classes_exactly_as_tritons_classification_extension(pilot: Pilot):
    """Tasks learn the class names from the server on their first request and rank raw values in
    numpy afterwards; both must give, item by item, what the server's own classification gives."""
    items = some_items(300)  # the first item alone (classification strings), then requests of 256 and 43
    out = infer_items(items, InferRequest(model="digits", server_url=pilot.endpoint.http_url, batch_size=256))
    client = httpclient.InferenceServerClient(pilot.endpoint.http_url.removeprefix("http://"))
    expected = []
    for start in (0, 150):  # requests split differently from the task's
        pixels = np.stack([np.asarray(Image.open(path)) for _, path, _ in items[start:start + 150]])[:, None]
        tensor = httpclient.InferInput("IMAGE", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        top_1 = httpclient.InferRequestedOutput("PROBABILITIES", class_count=1)
        best = client.infer("digits", [tensor], outputs=[top_1])
        expected += [entry.decode().split(":") for entry in best.as_numpy("PROBABILITIES").reshape(-1)]
    client.close()
    assert [(r["prediction"], r["score"]) for r in out["results"]] == [(label, float(score))
                                                                      for score, _, label in expected]
    assert len(out["latencies_ms"]) == 3


def test_digits_meets_the_stock_image_clients_documented_requirements(pilot: Pilot):
    """Triton's example image_client (src/python/examples/image_client.py in triton-inference-server/
    client) classifies any model whose metadata and config pass its parse_model: one input of
    three dims plus the batch with format FORMAT_NCHW or FORMAT_NHWC, one FP32 output that is a
    vector. Its preprocess for one channel: convert("L"), resize to (w, h), add the channel axis,
    cast to the input's type, transpose to CHW; it asks for class_count=1 and prints
    score:index:label. The same steps here, against the served digits model, must classify."""
    client = httpclient.InferenceServerClient(pilot.endpoint.http_url.removeprefix("http://"))
    meta, config = client.get_model_metadata("digits"), client.get_model_config("digits")
    assert (len(meta["inputs"]), len(meta["outputs"]), len(config["input"])) == (1, 1, 1)
    assert meta["outputs"][0]["datatype"] == "FP32"
    assert [d for d in meta["outputs"][0]["shape"][1:] if d > 1] == [10]  # a vector
    c, h, w = meta["inputs"][0]["shape"][1:]  # one dim more for the batch: max_batch_size > 0
    assert config["max_batch_size"] > 0 and config["input"][0]["format"] == "FORMAT_NCHW" and c == 1
    paths = sorted(IMAGES.glob("*/*.png"))[::60]
    batch = np.stack([np.transpose(np.array(Image.open(p).convert("L").resize((w, h), Image.BILINEAR))[:, :, None]
                                   .astype(np.uint8), (2, 0, 1)) for p in paths])
    tensor = httpclient.InferInput(meta["inputs"][0]["name"], list(batch.shape), meta["inputs"][0]["datatype"])
    tensor.set_data_from_numpy(batch)
    wanted = httpclient.InferRequestedOutput(meta["outputs"][0]["name"], class_count=1)
    answer = client.infer("digits", [tensor], outputs=[wanted]).as_numpy(meta["outputs"][0]["name"])
    client.close()
    labels = [entry.decode().split(":")[2] for entry in answer.reshape(-1)]
    assert sum(label == p.parent.name for label, p in zip(labels, paths, strict=True)) >= 0.9 * len(paths)


def test_pilot_restarts_a_killed_server_on_the_same_endpoint(pilot: Pilot):
    first_pid, url = pilot.server_pid, pilot.endpoint.http_url
    regions = shared_memory(first_pid, BACKEND_SHM)
    assert regions, "the Python backend maps its shared memory in /dev/shm"
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: Endpoint.read(pilot.endpoint_file).restarts == 1
             and Endpoint.read(pilot.endpoint_file).state == "ready", what="a restarted server")
    assert pilot.server_pid != first_pid and gone(first_pid)
    # a killed server cannot unlink its shared memory; the pilot does, or /dev/shm fills up
    assert not [r for r in regions if os.path.exists(r)]
    out = infer_items(some_items(5), InferRequest(model="digits", server_url=url))
    assert all(r["ok"] for r in out["results"])


def test_triton_counters_survive_a_server_restart(pilot_config):
    """The endpoint's metrics add up every server lifetime: what the first server counted by its
    last health-probe reading, plus what the restarted one counts."""
    pilot_config.triton = TritonSettings(health_interval_s=0.3)
    with Pilot(pilot_config) as pilot:
        # raw outputs (top_k 0): one request per call, whether or not a client learns class names
        request = InferRequest(model="digits", server_url=pilot.endpoint.http_url, retries=5, top_k=0)
        assert all(r["ok"] for r in infer_items(some_items(300), request)["results"])
        wait_for(lambda: Endpoint.read(pilot.endpoint_file).metrics.get("inferences") == 300, what="a reading")
        os.kill(pilot.server_pid, signal.SIGKILL)
        wait_for(lambda: (e := Endpoint.read(pilot.endpoint_file)).restarts == 1 and e.state == "ready",
                 what="restart")
        assert all(r["ok"] for r in infer_items(some_items(200), request)["results"])
    final = Endpoint.read(pilot.endpoint_file)
    assert final.state == "stopped"
    assert (final.metrics["inferences"], final.metrics["failures"]) == (500, 0)
    assert final.metrics["requests"] == final.metrics["executions"] == 2  # 300, then 200


def test_pilot_gives_up_after_max_restarts_and_says_why(pilot_config):
    pilot_config.triton = TritonSettings(max_restarts=1)
    with Pilot(pilot_config) as pilot:
        first = pilot.server_pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: Endpoint.read(pilot.endpoint_file).state == "ready" and pilot.server_pid != first,
                 what="the first restart")
        os.kill(pilot.server_pid, signal.SIGKILL)
        failed = wait_for(lambda: (e := Endpoint.read(pilot.endpoint_file)).state == "failed" and e,
                          what="the pilot to give up")
    assert "triton.max_restarts 1" in failed.error


def test_broken_model_repository_fails_fast_with_the_server_log(pilot_config, tmp_path):
    broken = tmp_path / "repo" / "digits"
    broken.mkdir(parents=True)
    (broken / "config.pbtxt").write_text('name: "digits"\nbackend: "python"\nmax_batch_size: "lots"\n')
    pilot_config.repository = tmp_path / "repo"
    pilot = Pilot(pilot_config)
    with pytest.raises(PilotError) as err:
        pilot.start()
    pilot.stop()
    assert "before it was ready" in str(err.value) and "config.pbtxt" in str(err.value)
    assert Endpoint.read(pilot.endpoint_file).state == "failed"
    assert gone(Endpoint.read(pilot.endpoint_file).pid)


def test_standalone_pilot_start_status_stop(tmp_path, digits_data):
    state = tmp_path / "state"
    started = run_cli("pilot", "start", "--model-repository", REPO, "--model", "digits", "--dir", state)
    assert started.returncode == 0, started.stderr
    export = next(line for line in started.stdout.splitlines() if line.startswith("export DGAAS_ENDPOINT_FILE="))
    endpoint_file = export.split("=", 1)[1]
    try:
        status = run_cli("pilot", "status", "--dir", state)
        assert status.returncode == 0 and '"running": true' in status.stdout
        # a client that knows nothing but the endpoint file (discovery step 4)
        client = subprocess.run(
            [sys.executable, "-c", "from dgaas_flow import infer_items, InferRequest; import sys, json;"
             f"print(json.dumps(infer_items({some_items(3)!r}, InferRequest(model='digits'))))"],
            env={**os.environ, "DGAAS_ENDPOINT_FILE": endpoint_file}, capture_output=True, text=True)
        assert client.returncode == 0 and client.stdout.count('"ok": true') == 3, client.stderr
        server_pid = Endpoint.read(Path(endpoint_file)).pid
    finally:
        stopped = run_cli("pilot", "stop", "--dir", state)
    assert stopped.returncode == 0 and "stopped 1 pilot" in stopped.stdout
    assert wait_for(lambda: gone(server_pid), what="the server to exit")
    assert run_cli("pilot", "status", "--dir", state).returncode == 1


def test_standalone_start_with_a_missing_model_is_a_user_error(tmp_path, digits_data):
    result = run_cli("pilot", "start", "--model-repository", REPO, "--model", "nosuch", "--dir", tmp_path)
    assert result.returncode == 2 and "--model: no model nosuch" in result.stderr


def test_wrap_gives_the_command_its_server_then_stops_it(tmp_path, digits_data):
    probe = ("import os, sys, urllib.request as u; url = os.environ['DGAAS_TRITON_URL'];"
             "print('URL', url); print('READY', u.urlopen(url + '/v2/health/ready').status); sys.exit(7)")
    result = run_cli("pilot", "wrap", "--model-repository", REPO, "--model", "digits", "--dir", tmp_path,
                     "--block", "3", "--", sys.executable, "-c", probe)
    assert result.returncode == 7, result.stderr  # the command's own exit status
    assert "READY 200" in result.stdout
    (endpoint,) = [Endpoint.read(p) for p in tmp_path.glob("*.json")]
    assert endpoint.state == "stopped" and endpoint.block == "3" and gone(endpoint.pid)
    assert f"URL {endpoint.http_url}" in result.stdout


def test_wrap_stops_server_and_command_on_sigterm(tmp_path, digits_data):
    proc = subprocess.Popen([sys.executable, "-m", "dgaas_flow", "pilot", "wrap", "--model-repository", REPO,
                             "--dir", tmp_path, "--", "sleep", "300"], start_new_session=True)
    endpoint = wait_for(lambda: next((e for p in tmp_path.glob("*.json")
                                      if (e := Endpoint.read(p)).state == "ready"), None), what="ready")
    sleeper = [c for c in psutil.Process(proc.pid).children() if c.name() == "sleep"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert gone(endpoint.pid) and all(gone(c.pid) for c in sleeper)
    assert Endpoint.read(next(tmp_path.glob("*.json"))).state == "stopped"


def test_a_port_taken_before_the_server_binds_it_means_new_ports(pilot_config, first_port_taken):
    import dgaas_flow.pilot.supervisor as supervisor

    taken = first_port_taken(supervisor)
    pilot = Pilot(pilot_config)  # chose its ports; another process took the HTTP one meanwhile
    try:
        endpoint = pilot.start()
        assert endpoint.state == "ready" and not endpoint.http_url.endswith(f":{taken}")
        assert f"Socket '127.0.0.1:{taken}' already in use" in Path(endpoint.log).read_text()
        out = infer_items(some_items(3), InferRequest(model="digits", server_url=endpoint.http_url))
        assert all(r["ok"] for r in out["results"])
    finally:
        pilot.stop()


def test_a_live_pilot_keeps_its_endpoint_file_fresh(pilot_config):
    """The heartbeat other hosts tell a live pilot from a dead node by: written at every health
    probe, whether or not Triton's metrics could be read."""
    pilot_config.triton = TritonSettings(health_interval_s=1.0)
    with Pilot(pilot_config) as pilot:
        first = Endpoint.read(pilot.endpoint_file)
        assert first.heartbeat_every_s == 1.0 and first.heartbeat_at is not None
        wait_for(lambda: Endpoint.read(pilot.endpoint_file).heartbeat_at > first.heartbeat_at + 0.5,
                 what="a later heartbeat")
        pilot.metrics_probe_url = "http://127.0.0.1:9/metrics"  # nothing answers: the heartbeat goes on
        seen = Endpoint.read(pilot.endpoint_file).heartbeat_at
        wait_for(lambda: Endpoint.read(pilot.endpoint_file).heartbeat_at > seen + 0.5,
                 what="a heartbeat without metrics")
        now = Endpoint.read(pilot.endpoint_file)
        assert (now.state, now.restarts) == ("ready", 0) and now.serving()  # not a restart's writes


def killed_while_starting(pilot: Pilot, times: int, marks: Path) -> None:
    """The pilot's first `times` servers are SIGKILLed before they are ready (as the OOM killer or
    an operator might): each start runs through a shell that kills itself until enough marks exist."""
    make_plan = pilot._make_plan
    marks.mkdir()

    def plan():
        launch = make_plan()
        script = (f'n=$(ls {marks} | wc -l); if [ "$n" -lt {times} ]; then touch {marks}/$n; kill -KILL $$; fi; '
                  'exec "$@"')
        launch.run = ["sh", "-c", script, "sh", *launch.run]
        return launch

    pilot._make_plan = plan


def test_a_server_killed_while_starting_is_restarted(pilot_config, tmp_path):
    pilot = Pilot(pilot_config)
    killed_while_starting(pilot, 2, tmp_path / "marks")
    try:
        endpoint = pilot.start()
        assert endpoint.state == "ready" and endpoint.restarts == 2
        assert "killed by signal 9 before it was ready; restarting" in Path(endpoint.log).read_text()
        out = infer_items(some_items(3), InferRequest(model="digits", server_url=endpoint.http_url))
        assert all(r["ok"] for r in out["results"])
    finally:
        pilot.stop()


def test_a_server_killed_while_starting_counts_against_max_restarts(pilot_config, tmp_path):
    pilot_config.triton = TritonSettings(max_restarts=1)
    pilot = Pilot(pilot_config)
    killed_while_starting(pilot, 5, tmp_path / "marks")
    with pytest.raises(PilotError) as err:
        pilot.start()
    pilot.stop()
    assert "triton.max_restarts 1" in str(err.value)
    assert Endpoint.read(pilot.endpoint_file).state == "failed"


def test_wrap_stops_its_pool_and_server_soon_after_the_interchange_is_gone(tmp_path, digits_data):
    """A killed driver takes its interchange along; the pilot sees its port refuse connections and
    stops the worker pool and the server, without waiting for Parsl's heartbeat threshold."""
    import socket

    interchange = socket.socket()
    interchange.bind(("127.0.0.1", 0))
    interchange.listen()
    port = interchange.getsockname()[1]
    pool = [sys.executable, "-c", "import time; time.sleep(600)", "-a", "127.0.0.1", f"--port={port}"]
    proc = subprocess.Popen([sys.executable, "-m", "dgaas_flow", "pilot", "wrap", "--model-repository", REPO,
                             "--dir", tmp_path, "--", *pool], start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    try:
        endpoint = wait_for(lambda: next((e for p in tmp_path.glob("*.json")
                                          if (e := Endpoint.read(p)).state == "ready"), None), what="ready")
        interchange.settimeout(60)
        interchange.accept()[0].close()  # the pilot's first probe: it knows the interchange was there
        interchange.close()
        _, err = proc.communicate(timeout=120)  # the pool itself would sleep for 10 minutes
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert f"the interchange at 127.0.0.1:{port} is gone" in err
    assert gone(endpoint.pid) and Endpoint.read(next(tmp_path.glob("*.json"))).state == "stopped"


def test_requests_fail_over_to_another_serving_pilot_of_the_registry(pilot_config, monkeypatch):
    """The node's pilot stops (its block ended, it failed): the client's next request goes to
    another serving pilot of the same registry instead of failing its retries against the first."""
    from dgaas_flow.apps.client import PilotClient

    with Pilot(pilot_config) as other:
        home = Pilot(pilot_config)
        home.start()
        try:
            monkeypatch.setenv("DGAAS_ENDPOINT_FILE", str(home.endpoint_file))
            monkeypatch.setenv("DGAAS_TRITON_URL", home.endpoint.http_url)
            client = PilotClient(retries=3, backoff_s=0.1)
            batch = {"IMAGE": np.zeros((2, 8, 8), dtype=np.uint8)}
            client.infer("digits", batch)
            assert client.url == home.endpoint.http_url
        finally:
            home.stop()
        assert Endpoint.read(home.endpoint_file).state == "stopped"
        out = client.infer("digits", batch)
        assert client.url == other.endpoint.http_url and client.failovers == 1
        assert next(iter(out.values())).shape[0] == 2
