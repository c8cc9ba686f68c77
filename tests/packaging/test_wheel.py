"""A wheel of dgaas-flow, installed non-editable the way a site puts it on CVMFS or in a shared
environment, finds its own provider profiles and GlideinWMS scripts and runs the example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT, WORKFLOW

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel alone; the dependencies come from the test
    environment's site-packages through a .pth line (whose own .pth files, among them the
    editable install of this checkout, are not read)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True)
    (wheel,) = (tmp / "dist").glob("dgaas_flow-*.whl")
    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([env / "bin" / "python", "-c", where], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True)
    return env


def run_installed(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([env / "bin" / "python", "-m", "dgaas_flow", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_the_wheel_carries_its_files(installed: Path, tmp_path: Path):
    found = subprocess.run([installed / "bin" / "python", "-c", "import dgaas_flow; print(dgaas_flow.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert found.startswith(str(installed)), found  # the installed copy, not this checkout
    profiles = installed.glob("lib/python*/site-packages/dgaas_flow/providers/*.yaml")
    assert {p.stem for p in profiles} >= {"local", "wilson-cluster", "wilson-cluster-cpu", "htcondor", "glideinwms"}


def test_render_finds_a_packaged_profile(installed: Path, tmp_path: Path, digits_data):
    result = run_installed(installed, "render", str(WORKFLOW), "--provider", "wilson-cluster",
                           "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --partition=gpu" in result.stdout and "pilot wrap" in result.stdout


def test_glidein_render_points_at_installed_scripts(installed: Path, tmp_path: Path):
    result = run_installed(installed, "glidein", "render", "--model-repository", "/cvmfs/vo/models",
                           "--models", "digits", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scripts = [line.split('absfname="')[1].split('"')[0] for line in result.stdout.splitlines() if "absfname" in line]
    assert len(scripts) == 3
    for script in scripts:
        assert script.startswith(str(installed)) and Path(script).is_file(), script


def test_the_example_runs_from_the_wheel(installed: Path, tmp_path: Path, digits_data):
    result = run_installed(installed, "run", str(WORKFLOW), "--limit", "64", "--out", str(tmp_path / "run"),
                           "--progress", "quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["items_ok"] == 64 and summary["items_failed"] == 0
