"""The GlideinWMS custom scripts in providers/glideinwms/, run the way a glidein runs them.

A glidein work dir is laid out by tests/glidein/standin/make_glidein.sh (as glidein_startup.sh
does), with stand-ins for the factory's helpers (add_config_line.source, error_gen.sh) that follow
the upstream files' interface exactly (a GlideinWMS factory cannot exist here). The scripts are run
by standin/glidein_run.sh: `fetch` (setup phase: cwd = work dir, args `glidein_config ID`, stdin
/dev/null), `periodic` (script_wrapper.sh under the startd cron) and `cleanup` (glidein_exit's
gwms_process_scripts). The server is the real tritonserver of the nvidia-pytriton wheel
(TRITON_LAUNCH=binary) serving the digits model; Apptainer is a fake (tests/glidein/fake-apptainer)
that follows its documented CLI, since it cannot be installed here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DIGITS, ROOT, processes_mentioning

pytestmark = [pytest.mark.integration, pytest.mark.glidein]

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin"
SCRIPTS = ROOT / "dgaas_flow" / "providers" / "glideinwms"
FAKE_APPTAINER = HERE / "fake-apptainer"
NEVER_READY = HERE / "bin" / "never-ready-tritonserver"
REPO = DIGITS / "model_repository"
PUBLISHED = {  # name -> condor vars type
    "TRITON_ADDRESS": "S", "TRITON_GRPC_ADDRESS": "S", "TRITON_METRICS_ADDRESS": "S",
    "TRITON_MODELS": "S", "TRITON_GPU_COUNT": "I", "TRITON_READY": "C",
}


@pytest.fixture
def helpers() -> Path:
    """The folder the glidein's add_config_line.source and error_gen.sh come from."""
    return STANDIN


@pytest.fixture(scope="module")
def digits_repository() -> Path:
    if not (REPO / "digits" / "1" / "weights.npz").exists():
        subprocess.run([sys.executable, str(DIGITS / "prepare.py")], check=True)
    return REPO


@dataclass
class Report:
    id: str
    status: str
    metrics: dict[str, str]
    detail: str


class Glidein:
    """One glidein work dir and the three ways the glidein runs custom scripts in it."""

    def __init__(self, work_dir: Path, env: dict[str, str]):
        self.work_dir = work_dir
        self.env = env

    def _run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([str(STANDIN / "glidein_run.sh"), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)

    def fetch(self, name: str, kind: str = "exec") -> subprocess.CompletedProcess:
        return self._run("fetch", str(self.work_dir), "main", str(SCRIPTS / name), kind)

    def setup(self) -> subprocess.CompletedProcess:
        """The factory's file list: triton_cleanup.sh (a plain file) then triton_setup.sh (run)."""
        assert self.fetch("triton_cleanup.sh", "regular").returncode == 0
        return self.fetch("triton_setup.sh")

    def periodic(self, name: str = "triton_health.sh") -> subprocess.CompletedProcess:
        path = self.work_dir / "main" / name
        if not path.exists():
            shutil.copy(SCRIPTS / name, path)
        return self._run("periodic", str(self.work_dir), str(path), "main")

    def cleanup(self) -> subprocess.CompletedProcess:
        return self._run("cleanup", str(self.work_dir))

    @property
    def config(self) -> dict[str, str]:
        """glidein_config: the last line of a key wins."""
        values = {}
        for line in (self.work_dir / "glidein_config").read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition(" ")
                values[key] = value
        return values

    @property
    def condor_vars(self) -> list[str]:
        return [line for line in (self.work_dir / "main" / "condor_vars.lst").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def report(self, where: Path | None = None) -> Report:
        root = ET.parse((where or self.work_dir) / "otrb_output.xml").getroot()
        detail = root.find("detail")
        return Report(
            id=root.get("id"), status=root.findtext("result/status"),
            metrics={m.get("name"): m.text or "" for m in root.iter("metric")},
            detail=" ".join((detail.text or "").split()) if detail is not None else "",
        )


def condor_startup_view(config: dict[str, str], vars_lines: list[str]):
    """What condor_startup.sh set_var makes of the condor vars lines: startd config values,
    GLIDEIN_VARIABLES (published in the machine ad) and STARTER_JOB_ENVIRONMENT entries."""
    startd, published, job_env = {}, [], {}
    for line in vars_lines:
        name, vtype, default, condor_name, required, publish, user = line.split()
        value = config.get(name, "")
        if not value:
            assert required != "Y", f"required {name} missing"
            if default == "-":
                continue
            value = default
        condor_name = name if condor_name == "+" else condor_name
        startd[condor_name] = f'"{value}"' if vtype == "S" else value
        if publish == "Y":
            published.append(condor_name)
        if user != "-":
            job_env[name if user == "+" else condor_name] = value
    return startd, published, job_env


def no_gpu_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a glidein on a node without GPU: no CUDA_VISIBLE_DEVICES or batch-system GPU
    variables, and an nvidia-smi that finds no driver if this machine has a real one."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "_CONDOR_AssignedGPUs", "GLIDEIN_PERIODIC_SCRIPT")}
    env["FAKE_APPTAINER_DIR"] = str(tmp_path / "apptainer-instances")
    if shutil.which("nvidia-smi"):
        shim = tmp_path / "no-gpu-bin"
        shim.mkdir(exist_ok=True)
        (shim / "nvidia-smi").write_text(
            "#!/bin/sh\n"
            "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\n"
            "exit 9\n"
        )
        (shim / "nvidia-smi").chmod(0o755)
        env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    return env


def make_glidein(tmp_path: Path, helpers: Path, **attrs: str) -> Glidein:
    work_dir = tmp_path / "glidein"
    env = no_gpu_env(tmp_path)
    pairs = [f"{k}={v}" for k, v in {"DGAAS_FLOW_PYTHON": sys.executable, **attrs}.items()]
    subprocess.run([str(STANDIN / "make_glidein.sh"), str(work_dir), "test_entry", *pairs], check=True,
                   env={**env, "GWMS_HELPERS_DIR": str(helpers)}, capture_output=True)
    return Glidein(work_dir, env)


def assert_nothing_left(*needles: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(*needles)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, "left running:\n" + "\n".join(left)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except OSError:
        return None


def classad(stdout: str) -> dict[str, str]:
    """The startd cron output up to the first "-" line, as Name -> value text."""
    ad = {}
    for line in stdout.splitlines():
        if line.strip() == "-":
            break
        name, sep, value = line.partition(" = ")
        assert sep, f"not a ClassAd line: {line!r}"
        ad[name] = value
    return ad


# ---------------------------------------------------------------------------------------- success


def test_setup_starts_triton_publishes_it_health_sees_it_cleanup_stops_it(tmp_path, helpers, digits_repository):
    g = make_glidein(tmp_path, helpers, GLIDEIN_USE_TRITON="True", TRITON_MODEL_REPOSITORY=str(digits_repository),
                     TRITON_MODELS="digits", TRITON_LAUNCH="binary", TRITON_REQUIRE_GPU="False")
    try:
        result = g.setup()
        assert result.returncode == 0, result.stdout + result.stderr

        report = g.report()
        assert (report.id, report.status) == ("triton_setup.sh", "OK")
        config = g.config
        address = config["TRITON_ADDRESS"]
        assert report.metrics["TRITON_ADDRESS"] == address
        for name in ("TRITON_ADDRESS", "TRITON_GRPC_ADDRESS", "TRITON_METRICS_ADDRESS"):
            assert re.fullmatch(r"127\.0\.0\.1:\d+", config[name]), (name, config[name])
        assert len({config["TRITON_ADDRESS"], config["TRITON_GRPC_ADDRESS"], config["TRITON_METRICS_ADDRESS"]}) == 3
        assert (config["TRITON_MODELS"], config["TRITON_GPU_COUNT"], config["TRITON_READY"]) == ("digits", "0", "True")
        assert "TRITON_GPUS" not in config  # no GPU: not published
        assert Path(config["TRITON_STATE_DIR"]) == g.work_dir / "triton"

        # condor vars lines: NAME TYPE DEFAULT CONDORNAME REQ PUBLISH JOBENV, one per attribute
        lines = [line for line in g.condor_vars if line.startswith("TRITON_")]
        assert sorted(lines) == sorted(f"{name} {kind} - + N Y +" for name, kind in PUBLISHED.items())
        startd, published, job_env = condor_startup_view(config, g.condor_vars)
        assert startd["TRITON_ADDRESS"] == f'"{address}"' and startd["TRITON_READY"] == "True"
        assert startd["TRITON_GPU_COUNT"] == "0"
        assert set(PUBLISHED) <= set(published)
        assert job_env["TRITON_ADDRESS"] == address and job_env["TRITON_READY"] == "True"

        # the server answers where the glidein says, and a job finds it by discovery
        assert http_status(f"http://{address}/v2/health/ready") == 200
        assert http_status(f"http://{address}/v2/models/digits/ready") == 200
        from dgaas_flow.pilot.discovery import resolve_endpoint

        endpoint = resolve_endpoint(None, {k: job_env[k] for k in ("TRITON_ADDRESS", "TRITON_GRPC_ADDRESS")})
        assert endpoint.http_url == f"http://{address}"
        assert endpoint.grpc_url == f"grpc://{config['TRITON_GRPC_ADDRESS']}"

        # periodic health, first run (setup phase) then as the startd cron runs it
        first = g.fetch("triton_health.sh")
        assert first.returncode == 0, first.stderr
        assert g.report().status == "OK" and g.report().metrics["TRITON_READY"] == "True"
        cron = g.periodic()
        assert cron.returncode == 0, cron.stderr
        assert cron.stdout.splitlines()[-1] == "-"
        ad = classad(cron.stdout)
        assert (ad["TRITON_READY"], ad["TRITON_STATE"], ad["TRITON_RESTARTS"]) == ("True", '"ready"', "0")

        # the server dies: the pilot restarts it, and the health script says so
        server_pid = json.loads(Path(config["TRITON_ENDPOINT_FILE"]).read_text())["pid"]
        os.kill(server_pid, 9)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ad = classad(g.periodic().stdout)
            if ad["TRITON_RESTARTS"] == "1" and ad["TRITON_READY"] == "True":
                break
            time.sleep(0.5)
        assert (ad["TRITON_READY"], ad["TRITON_STATE"], ad["TRITON_RESTARTS"]) == ("True", '"ready"', "1")

        # cleanup registered by the setup script itself, run by glidein_exit
        assert os.access(g.work_dir / ".gwms.d" / "exec" / "cleanup" / "00_triton_cleanup.sh", os.X_OK)
        done = g.cleanup()
        assert done.returncode == 0, done.stderr
        assert g.report(g.work_dir / ".gwms.d" / "exec" / "cleanup").status == "OK"
        assert http_status(f"http://{address}/v2/health/ready") is None
        assert_nothing_left(str(g.work_dir))

        after = g.periodic()
        assert after.returncode == 0 and classad(after.stdout)["TRITON_READY"] == "False"
    finally:
        subprocess.run([sys.executable, "-m", "dgaas_flow", "pilot", "stop", "--dir", str(g.work_dir / "triton")],
                       capture_output=True)


def test_cleanup_hooked_through_glidein_cleanup_script(tmp_path, digits_repository):
    """The factory's own way: GLIDEIN_CLEANUP_SCRIPT names the file, fetch_file_base puts it in
    exec/cleanup instead of running it; with the setup script's copy it runs twice, harmlessly."""
    g = make_glidein(tmp_path, STANDIN, GLIDEIN_USE_TRITON="yes", TRITON_MODEL_REPOSITORY=str(digits_repository),
                     TRITON_LAUNCH="binary", TRITON_REQUIRE_GPU="0", GLIDEIN_CLEANUP_SCRIPT="triton_cleanup.sh")
    try:
        assert g.fetch("triton_cleanup.sh", "exec").returncode == 0
        assert not (g.work_dir / "otrb_output.xml").exists()  # not run at setup
        result = g.fetch("triton_setup.sh")
        assert result.returncode == 0, result.stderr
        assert g.config["TRITON_MODELS"] == "digits"  # TRITON_MODELS unset: every model of the repository
        cleanup_dir = g.work_dir / ".gwms.d" / "exec" / "cleanup"
        assert sorted(p.name for p in cleanup_dir.iterdir()) == ["00_triton_cleanup.sh", "triton_cleanup.sh"]
        assert g.cleanup().returncode == 0
        assert http_status(f"http://{g.config['TRITON_ADDRESS']}/v2/health/ready") is None
        assert_nothing_left(str(g.work_dir))
    finally:
        subprocess.run([sys.executable, "-m", "dgaas_flow", "pilot", "stop", "--dir", str(g.work_dir / "triton")],
                       capture_output=True)


# ---------------------------------------------------------------------------------------- failures


def assert_failed(g: Glidein, result: subprocess.CompletedProcess, failure: str, *in_detail: str) -> Report:
    assert result.returncode != 0, result.stdout + result.stderr
    report = g.report()
    assert (report.id, report.status, report.metrics["failure"]) == ("triton_setup.sh", "ERROR", failure), report
    for text in in_detail:
        assert text in report.detail, report.detail
    assert "TRITON_ADDRESS" not in g.config and not [v for v in g.condor_vars if v.startswith("TRITON_")]
    assert not list((g.work_dir / "triton").glob("*.json"))  # no pilot recorded
    assert_nothing_left(str(g.work_dir))
    return report


def test_no_gpu_when_one_is_required(tmp_path, helpers, digits_repository):
    g = make_glidein(tmp_path, helpers, GLIDEIN_USE_TRITON="True", TRITON_MODEL_REPOSITORY=str(digits_repository),
                     TRITON_LAUNCH="binary", TRITON_REQUIRE_GPU="true")
    assert_failed(g, g.setup(), "WN_Resource", "no GPU", "TRITON_REQUIRE_GPU")
    assert not (g.work_dir / "triton" / "logs").exists()  # nothing was started


def test_apptainer_image_that_does_not_exist(tmp_path, helpers, digits_repository):
    g = make_glidein(tmp_path, helpers, GLIDEIN_USE_TRITON="True", TRITON_MODEL_REPOSITORY=str(digits_repository),
                     TRITON_MODELS="digits", TRITON_LAUNCH="apptainer", TRITON_REQUIRE_GPU="False",
                     TRITON_IMAGE=str(tmp_path / "no-such-tritonserver.sif"))
    g.env["PATH"] = f"{FAKE_APPTAINER}{os.pathsep}{g.env['PATH']}"
    report = assert_failed(g, g.setup(), "WN_Resource", "could not open image", "no such file or directory")
    assert str(tmp_path / "no-such-tritonserver.sif") in report.detail
    assert not list(Path(g.env["FAKE_APPTAINER_DIR"]).glob("*"))  # no instance left


def test_server_that_never_gets_ready(tmp_path, helpers, digits_repository):
    g = make_glidein(tmp_path, helpers, GLIDEIN_USE_TRITON="True", TRITON_MODEL_REPOSITORY=str(digits_repository),
                     TRITON_MODELS="digits", TRITON_LAUNCH="binary", TRITON_BINARY=str(NEVER_READY),
                     TRITON_REQUIRE_GPU="False", TRITON_READY_TIMEOUT="3")
    started = time.monotonic()
    result = g.setup()
    assert time.monotonic() - started < 60  # the 3 s deadline, not the pilot's default 120 s
    assert_failed(g, result, "WN_Resource", "did not become ready within TRITON_READY_TIMEOUT=3s")
    assert_nothing_left(str(NEVER_READY))


def test_switch_off_publishes_nothing_and_starts_nothing(tmp_path, helpers):
    g = make_glidein(tmp_path, helpers, GLIDEIN_USE_TRITON="False", TRITON_MODEL_REPOSITORY=str(REPO))
    before_vars = g.condor_vars
    result = g.setup()
    assert result.returncode == 0, result.stderr
    report = g.report()
    assert (report.status, report.metrics) == ("OK", {"TRITON_USE": "False"})
    assert g.condor_vars == before_vars
    assert not [k for k in g.config if k.startswith("TRITON_") and k != "TRITON_MODEL_REPOSITORY"]
    assert not (g.work_dir / "triton").exists()
    assert not list((g.work_dir / ".gwms.d" / "exec" / "cleanup").iterdir())
    # the health script follows the same switch: OK at setup, nothing in the machine ad later
    assert g.fetch("triton_health.sh").returncode == 0 and g.report().status == "OK"
    cron = g.periodic()
    assert cron.returncode == 0 and set(classad(cron.stdout)) == {"LAST", "LAST_END"}  # the wrapper's own


def test_switch_absent_is_off(tmp_path):
    g = make_glidein(tmp_path, STANDIN)
    assert g.setup().returncode == 0 and g.report().metrics == {"TRITON_USE": "False"}


@pytest.mark.parametrize(("attrs", "failure", "text"), [
    ({}, "Config", "TRITON_MODEL_REPOSITORY is not set"),
    ({"TRITON_MODEL_REPOSITORY": "/nonexistent/models"}, "Config", "is not a folder"),
    ({"TRITON_MODEL_REPOSITORY": "/cvmfs/nonexistent.example.org/models"}, "WN_Resource", "is not a folder"),
    ({"TRITON_LAUNCH": "podman"}, "Config", "TRITON_LAUNCH is 'podman'"),
    ({"TRITON_READY_TIMEOUT": "soon"}, "Config", "TRITON_READY_TIMEOUT is 'soon'"),
    ({"TRITON_MODELS": "digits,nosuchmodel"}, "Config", "nosuchmodel"),
    ({"DGAAS_FLOW_PYTHON": "/nonexistent/bin/python3"}, "Config", "DGAAS_FLOW_PYTHON"),
    ({"TRITON_LAUNCH": "apptainer", "TRITON_REQUIRE_GPU": "no"}, "WN_Resource", "no Apptainer"),
])
def test_bad_attributes(tmp_path, digits_repository, attrs, failure, text):
    base = {"GLIDEIN_USE_TRITON": "1", "TRITON_MODEL_REPOSITORY": str(digits_repository),
            "TRITON_LAUNCH": "binary", "TRITON_REQUIRE_GPU": "false"}
    if not attrs:
        del base["TRITON_MODEL_REPOSITORY"]
    g = make_glidein(tmp_path, STANDIN, **{**base, **attrs})
    if attrs.get("TRITON_LAUNCH") == "apptainer":  # a node without Apptainer, whatever this machine has
        dirs = g.env["PATH"].split(os.pathsep)
        g.env["PATH"] = os.pathsep.join(d for d in dirs if not any((Path(d) / t).exists()
                                                                   for t in ("apptainer", "singularity")))
    assert_failed(g, g.setup(), failure, text)


# ---------------------------------------------------------------------------------------- the fake


def test_fake_apptainer_follows_the_apptainer_cli(tmp_path):
    env = {**os.environ, "FAKE_APPTAINER_DIR": str(tmp_path / "instances"), "APPTAINERENV_GREETING": "hello"}
    apptainer = str(FAKE_APPTAINER / "apptainer")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file.txt").write_text("inside\n")
    image = tmp_path / "image.sif"
    image.write_bytes(b"SIF")

    def run(*args):
        return subprocess.run([apptainer, *args], capture_output=True, text=True, env=env)

    missing = run("instance", "start", "--nv", "--bind", f"{tmp_path}:/models", str(tmp_path / "nope.sif"), "i1")
    assert missing.returncode == 255
    assert re.match(r"FATAL: {3}.*could not open image .*nope\.sif: .*no such file or directory", missing.stderr)

    started = run("instance", "start", "--nv", "--bind", f"{tmp_path / 'data'}:/models", str(image), "i1")
    assert started.returncode == 0 and "INFO:    instance started successfully" in started.stderr
    assert run("instance", "start", str(image), "i1").returncode == 255  # name in use
    shown = run("exec", "instance://i1", "sh", "-c", 'cat "$1"; echo "$GREETING"', "sh", "/models/file.txt")
    assert shown.stdout == "inside\nhello\n"
    assert run("exec", "instance://i1", "cat", "--unknown=/models/file.txt").stderr.count(str(tmp_path / "data"))
    stopped = run("instance", "stop", "i1")
    assert stopped.returncode == 0 and "Stopping i1 instance of" in stopped.stderr
    assert run("exec", "instance://i1", "true").returncode == 255


def test_scripts_are_executable_and_pass_shellcheck():
    files = [*SCRIPTS.glob("*.sh"), *STANDIN.glob("*.sh"), FAKE_APPTAINER / "apptainer", NEVER_READY]
    for f in files:
        assert f.stat().st_mode & stat.S_IXUSR, f"{f} is not executable"
    assert shutil.which("shellcheck"), "shellcheck is missing: scripts/test.sh installs it (apt-get install shellcheck)"
    lint = subprocess.run(["shellcheck", "-x", *map(str, files)], capture_output=True, text=True, cwd=ROOT)
    assert lint.returncode == 0, lint.stdout
    lint = subprocess.run(["shellcheck", "-s", "bash", str(STANDIN / "add_config_line.source")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
