"""What every daemon this package runs (pilots, the gateway) needs: liveness checks, stopping a
process, turning stop signals into an exception, atomic files, and the useful part of a log."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Self

import psutil

from dgaas_flow.lifetime import die_with_parent

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Service:
    """A `with` block around something with start() and stop() (a pilot, a gateway)."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Terminated(Exception):
    """A stop signal arrived (scancel, condor_rm, Parsl scaling in, Ctrl-C)."""


def _raise(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def stop_on_signals(cleanup: Callable[[], None]) -> Iterator[None]:
    """Stop signals raise Terminated in the body; `cleanup` runs last with the signals ignored, so
    a second signal cannot interrupt it and leave a server behind."""
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        cleanup()
        for s, handler in previous.items():
            signal.signal(s, handler)


def alive(pid: int | None) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def terminate_pid(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM, wait up to grace_s for the process to go, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def stop_group(proc: subprocess.Popen, grace_s: float, kill: bool = False) -> None:
    """Stop a process that leads its own session, with everything it started: SIGTERM to the group
    and up to grace_s, then SIGKILL; or SIGKILL at once (a hung or stopped process ignores TERM)."""
    if proc.poll() is not None:
        return
    _signal_group(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def shared_memory(pid: int, prefix: str) -> set[str]:
    """The /dev/shm files whose names start with prefix that a live process has mapped (none if it
    is gone or not ours to read)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            mapped = [line.split(maxsplit=5)[5:] for line in maps]  # the sixth field, a path, if any
    except OSError:
        return set()
    return {path.rstrip("\n") for (path,) in filter(None, mapped) if path.startswith(f"/dev/shm/{prefix}")}


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a temporary file in the same folder, then rename it over path, so that a reader on a
    shared filesystem (a task, the driver, Envoy's file watch) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    """(status, body) of a GET to a server of ours, never through $http_proxy: on a cluster node a
    site proxy would otherwise receive the probes of 127.0.0.1. (None, b"") when nothing answers."""
    return _http(urllib.request.Request(url), timeout)


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, bytes]:
    """(status, body) of a POST to a server of ours, as `http_get`."""
    return _http(urllib.request.Request(url, data=body, method="POST", headers=headers), timeout)


def _http(request: urllib.request.Request, timeout: float) -> tuple[int | None, bytes]:
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return None, b""


def private_child() -> None:
    """In a server's process before exec: the files it creates are its user's alone, and it dies
    with the thread that owns it."""
    os.umask(0o077)
    die_with_parent()


def open_private(path: Path, mode: str = "ab") -> IO:
    """A file only its owner reads (logs may hold model errors, inputs and addresses)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # an older file of the same name may have been created readable
    return os.fdopen(fd, mode)


_ERROR_LINE = re.compile(  # Triton's glog errors, our own lines, Envoy's [time][pid][error|critical]
    r"^(E\d{4} |error:|\[libprotobuf ERROR|\[dgaas-flow pilot|\[[^\]]+\]\[\d+\]\[(error|critical)\])")


def log_tail(path: Path, lines: int = 12) -> str:
    """The log's error lines (Triton prints its model tables after them; Envoy tags them
    [error]/[critical]), else its last lines."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in text if _ERROR_LINE.match(line)]
    return "\n".join((errors or text)[-lines:])
