"""Shared fixtures: the prepared digits example, a real Triton pilot, CLI runs, and a final check
that the suite left no tritonserver or Parsl worker running, and no Triton shared memory behind."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dgaas_flow.pilot.supervisor import BACKEND_SHM
from dgaas_flow.sites.executor import INTERCHANGE_NAMES

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "workflows" / "digits"
WORKFLOW = DIGITS / "workflow.yaml"
STRAY_NAMES = ("tritonserver", "triton_python_backend_stub", "process_worker_pool", *INTERCHANGE_NAMES)


def processes_mentioning(*needles: str) -> list[str]:
    """Live processes (not zombies, not this one) whose command line contains one of needles."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.pid != os.getpid() and any(n in cmd for n in needles):
            found.append(f"{proc.pid}: {cmd[:200]}")
    return found


def stray_processes() -> list[str]:
    """Triton servers, their stubs, and Parsl workers and interchanges."""
    return processes_mentioning(*STRAY_NAMES)


def backend_regions() -> set[str]:
    return set(glob.glob(f"/dev/shm/{BACKEND_SHM}*"))


@pytest.fixture(scope="session", autouse=True)
def no_strays_left():
    before, regions = set(stray_processes()), backend_regions()
    yield
    deadline = time.monotonic() + 30
    left = [p for p in stray_processes() if p not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [p for p in stray_processes() if p not in before]
    assert not left, "the test suite left processes running:\n" + "\n".join(left)
    leaked = sorted(backend_regions() - regions)  # killed and hung servers' too: their pilots remove them
    assert not leaked, "the test suite left Triton's shared memory in /dev/shm:\n" + "\n".join(leaked)


@pytest.fixture(scope="session")
def digits_data() -> Path:
    """Train the example model and write its images once per session (about 5 s)."""
    weights = DIGITS / "model_repository" / "digits" / "1" / "weights.npz"
    if not (weights.exists() and (DIGITS / "data" / "heldout.txt").exists()):
        subprocess.run([sys.executable, str(DIGITS / "prepare.py")], check=True)
    return DIGITS / "data"


@pytest.fixture(scope="session")
def heavy_data() -> Path:
    """The heavy example's ONNX model and 10,000 jets (about 10 s once; kept between sessions)."""
    heavy = ROOT / "workflows" / "heavy"
    if not ((heavy / "model_repository" / "heavy" / "1" / "model.onnx").exists()
            and any((heavy / "data" / "jets").glob("*.npy"))):
        subprocess.run([sys.executable, str(heavy / "prepare.py"), "--items", "10000"], check=True)
    return heavy / "data"


def copy_workflow(folder: Path, text: str, images: Path) -> Path:
    """A workflow file in its own folder, with the digits model repository and an image folder
    linked beside it, as a user's own workflow folder would look."""
    (folder / "data").mkdir(parents=True)
    (folder / "model_repository").symlink_to(DIGITS / "model_repository")
    (folder / "data" / "images").symlink_to(images)
    path = folder / "workflow.yaml"
    path.write_text(text)
    return path


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll until predicate() is truthy and return its value; fail the test after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def first_port_taken(monkeypatch):
    """take(module): the first ports `module.free_ports` chooses start with one another process
    holds (as when it is taken between the choice and the bind); later choices are free.
    Returns the taken port."""
    import socket

    held: list[socket.socket] = []

    def take(module) -> int:
        thief = socket.socket()
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        held.append(thief)
        taken, real, calls = thief.getsockname()[1], module.free_ports, []

        def first_choice_taken(n: int, host: str) -> list[int]:
            calls.append(n)
            return [taken, *real(n - 1, host)] if len(calls) == 1 else real(n, host)

        monkeypatch.setattr(module, "free_ports", first_choice_taken)
        return taken

    yield take
    for thief in held:
        thief.close()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run `dgaas-flow` as a user does: a separate process, exit status and output captured."""
    return subprocess.run(
        [sys.executable, "-m", "dgaas_flow", *map(str, args)], capture_output=True, text=True,
        cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout,
    )
