"""The exact commands each launch mode runs. Apptainer and Docker cannot run on this machine, so
their argv is pinned here against the documented CLIs (apptainer instance start/exec/stop,
docker run/stop); the binary mode is exercised for real in the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgaas_flow.errors import PilotError
from dgaas_flow.pilot.launch import Ports, math_threads, plan_launch, require_tool
from dgaas_flow.pilot.settings import TritonSettings

PORTS = Ports(http=8100, grpc=8101, metrics=8102)
REPO = Path("/data/models")
FLAGS_CPU = [
    "--model-repository=/models", "--http-port=8100", "--grpc-port=8101", "--metrics-port=8102",
    "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
    "--exit-timeout-secs=1", "--disable-auto-complete-config", "--model-control-mode=explicit",
    "--load-model=digits", "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0",
]


def test_apptainer_plan_follows_the_report_and_owns_the_server_process():
    settings = TritonSettings(launch="apptainer", image="/cvmfs/img/tritonserver:24.09-py3")
    plan = plan_launch(settings, REPO, ["digits"], PORTS, ["0", "1"], "dgaas-n1-42")
    assert plan.before == ["apptainer", "instance", "start", "--nv", "--bind", "/data/models:/models",
                           "/cvmfs/img/tritonserver:24.09-py3", "dgaas-n1-42"]
    gpu_flags = [f for f in FLAGS_CPU if not f.startswith(("--allow-gpu", "--pinned"))]
    assert plan.run == ["apptainer", "exec", "instance://dgaas-n1-42", "tritonserver", *gpu_flags]
    assert plan.after == ["apptainer", "instance", "stop", "dgaas-n1-42"]
    assert plan.env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "0,1"


def test_apptainer_without_gpus_has_no_nv_and_cpu_flags():
    plan = plan_launch(TritonSettings(launch="apptainer", image="img.sif"), REPO, ["digits"], PORTS, [], "x")
    assert "--nv" not in plan.before
    assert plan.run[4:] == FLAGS_CPU


def test_docker_plan_is_the_reports_docker_run():
    settings = TritonSettings(launch="docker", image="nvcr.io/nvidia/tritonserver:24.09-py3",
                              container_options=["--shm-size=1g"])
    plan = plan_launch(settings, REPO, ["digits"], PORTS, ["2"], "dgaas-n1-7")
    assert plan.before is None
    assert plan.run[:11] == ["docker", "run", "--rm", "--name", "dgaas-n1-7", "--net=host", "--gpus",
                             '"device=2"', "-v", "/data/models:/models", "--shm-size=1g"]
    assert plan.run[11:13] == ["nvcr.io/nvidia/tritonserver:24.09-py3", "tritonserver"]
    assert plan.after == ["docker", "stop", "dgaas-n1-7"]


def test_binary_plan_uses_the_wheel_server_with_its_stub_and_library_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = TritonSettings(listen="0.0.0.0", extra_args=["--log-verbose=1"])
    plan = plan_launch(settings, REPO, [], PORTS, [], "x")
    binary = Path(plan.run[0])
    assert binary.name == "tritonserver" and binary.is_file()
    backend = next(a for a in plan.run if a.startswith("--backend-directory=")).split("=", 1)[1]
    assert (Path(backend) / "python" / "triton_python_backend_stub").resolve().is_file()
    assert "--http-address=0.0.0.0" in plan.run and plan.run[-1] == "--log-verbose=1"
    assert not any(a.startswith("--load-model") for a in plan.run)  # no models listed: load all
    assert plan.env["LD_LIBRARY_PATH"].split(":")[1].endswith("nvidia_pytriton.libs")


def test_binary_plan_gives_the_server_its_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    plan = plan_launch(TritonSettings(), REPO, ["m"], PORTS, ["1"], "x")
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "--allow-gpu-metrics=false" not in plan.run


@pytest.mark.parametrize("mode", ["apptainer", "docker"])
def test_missing_container_runtime_is_said_clearly(mode, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    plan = plan_launch(TritonSettings(launch=mode), REPO, [], PORTS, [], "x")
    with pytest.raises(PilotError, match=rf"triton.launch is '{mode}' but `{plan.run[0]}` is not on PATH"):
        require_tool(plan, mode)


def test_configured_binary_must_exist():
    with pytest.raises(PilotError, match="triton.binary: /no/tritonserver is not an executable file"):
        plan_launch(TritonSettings(binary="/no/tritonserver"), REPO, [], PORTS, [], "x")


def test_python_backend_models_get_one_blas_thread_unless_the_site_sets_it():
    assert math_threads({}) == {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert math_threads({"OPENBLAS_NUM_THREADS": "8"}) == {"MKL_NUM_THREADS": "1"}
