"""Shared fixtures: the prepared digits example, a real Triton pilot, CLI runs, and a final check
that the suite left no tritonserver or Parsl worker running, and no Triton shared memory behind.

The session runs with a HOME of its own (so `~/.dgaas-flow/...` defaults never touch the real one)
and a marker, DGAAS_TEST_SESSION, in its environment. The final check counts only processes this
session started (others' pilots and other checkouts' test runs on the same machine are not its
business): see SuiteSession."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

import psutil
import pytest

from dgaas_flow.pilot.supervisor import BACKEND_SHM
from dgaas_flow.sites.executor import INTERCHANGE_NAMES

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "workflows" / "digits"
WORKFLOW = DIGITS / "workflow.yaml"
STRAY_NAMES = ("tritonserver", "triton_python_backend_stub", "process_worker_pool", *INTERCHANGE_NAMES)
SERVER_NAMES = ("tritonserver", "triton_python_backend_stub")  # the processes that map the backend's memory
SESSION_VAR = "DGAAS_TEST_SESSION"
SAMPLE_S = 0.5  # how often the session looks at its processes
SETTLED_S = 10.0  # a process this old that is not the session's will not become so (no exec pending)
# Batch systems' daemons: a test may start them (with the session's marker), but they run jobs for
# anyone, so a job is the session's by its own marks only, never for descending from them.
BATCH_DAEMONS = ("condor_", "slurmctld", "slurmd", "slurmstepd", "munged")


class SuiteSession:
    """What this test session started, told apart from whatever else runs on the machine.

    A process is the session's if it carries the session's marker in its environment (every child
    of the suite inherits it: Triton servers, Parsl interchanges and worker pools, SLURM jobs, which
    sbatch gives the submitter's environment), or if its command line, working folder, environment
    or open files name a path of the session's own (its pytest temporary folder or its HOME: the
    guide's commands run without DGAAS_* variables, and HTCondor jobs get an environment of their
    own but run scripts from the test's run folder), or if its parent is the session's (a batch
    system's daemon excepted). A positive answer is kept for the process's lifetime: Parsl's
    interchange renames itself (setproctitle), which blanks its /proc/PID/environ too, and an orphan
    loses its parent.

    While the session runs, a thread looks every SAMPLE_S at the processes that could be strays, so
    that they are known before they lose their marks, and records the Python backend's shared memory
    regions that the session's Triton servers map (region names are random: a leaked one cannot be
    traced to its server afterwards)."""

    def __init__(self, marker: str, paths: list[Path]):
        self.marker = marker
        self.paths = sorted({str(p) for path in paths for p in (Path(path), Path(path).resolve())})
        self.started = time.time()
        self.regions: set[str] = set()  # backend regions seen mapped by the session's servers
        self._ours: set[tuple[int, float]] = set()  # (pid, create_time) of the session's processes
        self._theirs: set[tuple[int, float]] = set()  # of settled processes that are not
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="suite-session-watch", daemon=True)

    def mentions_own_path(self, text: str) -> bool:
        return any(text == p or f"{p}/" in text for p in self.paths)

    def marked(self, proc: psutil.Process) -> bool:
        """The session's marker in its environment, or one of its paths in what the process shows."""
        try:
            environ = proc.environ()
        except psutil.Error:
            environ = {}
        if environ.get(SESSION_VAR) == self.marker:
            return True
        texts = list(environ.values())
        for read in (lambda: [" ".join(proc.cmdline())], lambda: [proc.cwd()],
                     lambda: [f.path for f in proc.open_files()]):
            try:
                texts += read()
            except psutil.Error:
                continue
        return any(self.mentions_own_path(t) for t in texts)

    def owns(self, proc: psutil.Process, depth: int = 0) -> bool:
        try:
            key = (proc.pid, proc.create_time())
            name = proc.name()
        except psutil.Error:
            return False
        with self._lock:
            if key in self._ours or key in self._theirs:
                return key in self._ours
        if proc.pid == os.getpid():
            return True
        # older than the session (with a margin for the clock psutil derives this from): not ours
        if key[1] < self.started - 5 or depth > 50 or name.startswith(BATCH_DAEMONS):
            return False
        ours = self.marked(proc)
        if not ours:
            try:
                parent = proc.parent()
            except psutil.Error:
                parent = None
            ours = parent is not None and self.owns(parent, depth + 1)
        with self._lock:
            if ours:
                self._ours.add(key)
            elif time.time() - key[1] > SETTLED_S:
                self._theirs.add(key)
        return ours

    def strays(self) -> list[psutil.Process]:
        """The session's live Triton servers, stubs, Parsl worker pools and interchanges."""
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if (proc.info["status"] != psutil.STATUS_ZOMBIE and proc.pid != os.getpid()
                    and any(n in cmd for n in STRAY_NAMES) and self.owns(proc)):
                found.append(proc)
        return found

    def sample(self) -> None:
        for proc in self.strays():
            try:
                if proc.name() in SERVER_NAMES:
                    regions = mapped_regions(proc.pid)
                    with self._lock:
                        self.regions |= regions
            except psutil.Error:
                continue

    def _watch(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                self.sample()
            except Exception as e:  # never let the watch end silently: the check would miss regions
                warnings.warn(f"the test session's process watch failed once: {e!r}", stacklevel=1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()


SESSION: SuiteSession | None = None  # while the session runs
_saved = pytest.StashKey[tuple[dict, Path]]()  # what pytest_configure replaced


def pytest_configure(config):
    """The session's marker and HOME, set before any test module is imported (some read HOME then),
    so that every process the tests start inherits both."""
    home = Path(tempfile.mkdtemp(prefix="dgaas-test-home-"))
    config.stash[_saved] = ({k: os.environ.get(k) for k in (SESSION_VAR, "HOME")}, home)
    os.environ[SESSION_VAR] = uuid.uuid4().hex
    os.environ["HOME"] = str(home)


def pytest_unconfigure(config):
    saved, home = config.stash.get(_saved, ({}, None))
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


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


def describe(proc: psutil.Process) -> str | None:
    try:
        return f"{proc.pid}: {' '.join(proc.cmdline())[:200]}"
    except psutil.Error:
        return None  # gone meanwhile


def stray_processes() -> list[str]:
    """Triton servers, their stubs, and Parsl workers and interchanges that this test session started
    (all of them on the machine outside a session)."""
    if SESSION is None:
        return processes_mentioning(*STRAY_NAMES)
    return [d for d in map(describe, SESSION.strays()) if d]


def backend_regions() -> set[str]:
    return set(glob.glob(f"/dev/shm/{BACKEND_SHM}*"))


def mapped_regions(pid: int) -> set[str]:
    """The Python backend's /dev/shm regions that a live process maps (none if it is gone)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            fields = [line.split(maxsplit=5) for line in maps]
    except OSError:
        return set()
    paths = {f[5].rstrip("\n").removesuffix(" (deleted)") for f in fields if len(f) == 6}
    return {p for p in paths if p.startswith(f"/dev/shm/{BACKEND_SHM}")}


@pytest.fixture(scope="session", autouse=True)
def no_strays_left(tmp_path_factory):
    global SESSION
    regions_before = backend_regions()
    SESSION = session = SuiteSession(os.environ[SESSION_VAR], [tmp_path_factory.getbasetemp(), Path.home()])
    session.start()
    yield
    session.stop()
    deadline = time.monotonic() + 30
    while (left := stray_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    SESSION = None
    assert not left, "the test suite left processes running:\n" + "\n".join(left)
    # killed and hung servers' too: their pilots remove them
    leaked = sorted(r for r in session.regions if os.path.exists(r))
    assert not leaked, "the test suite left Triton's shared memory in /dev/shm:\n" + "\n".join(leaked)
    in_use = set().union(*(mapped_regions(p.pid) for p in psutil.process_iter(["name"])
                           if p.info["name"] in SERVER_NAMES))
    unknown = sorted(backend_regions() - regions_before - session.regions - in_use)
    if unknown:
        warnings.warn("Triton shared memory appeared in /dev/shm during the session that none of its servers "
                      "was seen mapping (another test run's on this machine, or a server of this session that "
                      f"lived under {SAMPLE_S} s):\n" + "\n".join(unknown), stacklevel=1)


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


PACE = """import time


def slow(batch):
    time.sleep({seconds})
    return batch
"""


def paced_workflow(folder: Path, text: str, images: Path, pace_s: float = 0.01) -> Path:
    """copy_workflow, with a preprocess hook (`pace.py` beside the workflow) that takes `pace_s`
    per batch: the digits model answers thousands of items a second, faster than a block starts,
    fails or ends; this makes a campaign last long enough for such events, on any machine."""
    path = copy_workflow(folder, text + "preprocess: pace:slow\n", images)
    (path.parent / "pace.py").write_text(PACE.format(seconds=pace_s))
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
