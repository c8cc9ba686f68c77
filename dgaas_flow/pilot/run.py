"""Ways to run a pilot: `wrap` (around a command, e.g. Parsl's worker pool on a node), `serve`
(in the foreground until signalled) and `start`/`status`/`stop` (a standalone daemon)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from dgaas_flow.errors import PilotError
from dgaas_flow.lifetime import adopt_orphans
from dgaas_flow.pilot.deadline import with_drain_period
from dgaas_flow.pilot.endpoint import ENV_ENDPOINT_FILE, Endpoint, read_registry
from dgaas_flow.pilot.lifeline import InterchangeWatch, interchange_addresses
from dgaas_flow.pilot.settings import PilotConfig
from dgaas_flow.pilot.supervisor import Pilot
from dgaas_flow.processes import Terminated, alive, log_tail, stop_on_signals, terminate_pid

logger = logging.getLogger(__name__)
POOL_POLL_S = 0.5
POOL_DRAIN_LAG_S = 2.0  # the pool drains after its pilot says `draining`, never before

DEFAULT_PILOT_DIR = Path(os.environ.get("DGAAS_PILOT_DIR", Path.home() / ".dgaas-flow" / "pilot"))


def wrap(config: PilotConfig, cmd: list[str], block: str | None = None, wait_ready: bool = True) -> int:
    """Start the pilot, run cmd with the endpoint in its environment, stop the pilot when cmd
    ends. wait_ready=False starts cmd while the server starts: a campaign's worker pool then
    starts up meanwhile (a second or two saved), its tasks waiting for the endpoint file to say
    `ready` (see discovery)."""
    pilot = Pilot(config, block=block)
    child: subprocess.Popen | None = None
    adopt_orphans()
    with stop_on_signals(pilot.stop):
        try:
            endpoint = pilot.launch()
            if wait_ready or pilot.endpoint_file is None:  # without the file, tasks could not wait
                pilot.wait_ready()
            if pilot.drain_at is not None:  # the pool drains with its pilot: no task is cut by the block's end
                cmd = with_drain_period(cmd, pilot.drain_at - time.time() + POOL_DRAIN_LAG_S)
            child = subprocess.Popen(cmd, env={**os.environ, **endpoint.worker_env(pilot.endpoint_file)})
            pilot.wait_ready()
            return _wait_child(child, InterchangeWatch(interchange_addresses(cmd)))
        except (Terminated, PilotError) as exc:
            if child is not None and child.poll() is None:
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
            if isinstance(exc, PilotError):
                raise
            return 143
        finally:
            if pilot.endpoint_file is not None:
                _stop_orphans(ENV_ENDPOINT_FILE, str(pilot.endpoint_file))
    raise AssertionError("unreachable")


def _wait_child(child: subprocess.Popen, interchange: InterchangeWatch) -> int:
    """The command's exit status; a worker pool whose interchange has exited (its driver was
    killed) is stopped within seconds instead of after Parsl's heartbeat threshold."""
    while True:
        try:
            return child.wait(timeout=POOL_POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if interchange.gone():
            logger.warning("the interchange at %s is gone (its driver exited): stopping the worker pool",
                           ", ".join(f"{h}:{p}" for h, p in interchange.addresses))
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
            child.wait()
            return 143


def _stop_orphans(key: str, value: str) -> None:
    """What the command left running once it ended: a worker pool that was killed leaves Parsl's
    multiprocessing manager (and any worker still busy) behind, which would hold the node until
    the batch job ends, or forever on a login node. They were adopted (`adopt_orphans`) and are
    told apart from the server's own processes (an Apptainer instance is adopted too) by the
    variable the command was given. Python's resource tracker goes last, by itself: once the others
    are gone it unlinks the semaphores they left in /dev/shm (it ignores SIGTERM for that)."""
    ours = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(key) == value:
                ours.append(proc)
    trackers = [p for p in ours if _is_resource_tracker(p)]
    others = [p for p in ours if p not in trackers]
    for proc in others:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(others, timeout=5)
    _, alive = psutil.wait_procs(trackers, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _is_resource_tracker(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    return False


def serve(config: PilotConfig, watch_pid: int | None = None, block: str | None = None) -> int:
    """Run until signalled or, with watch_pid, until that process ends (a glidein killed without
    its cleanup must not leave a server holding the GPU)."""
    pilot = Pilot(config, block=block)
    with stop_on_signals(pilot.stop):
        try:
            endpoint = pilot.start()
            print(endpoint.model_dump_json(indent=2), flush=True)
            while watch_pid is None or alive(watch_pid):
                time.sleep(1.0)
            return 0
        except Terminated:
            return 0
    raise AssertionError("unreachable")


def start_daemon(serve_argv: list[str], state_dir: Path, timeout_s: float,
                 env: dict[str, str] | None = None) -> tuple[Endpoint, Path]:
    """Run `pilot serve` detached and return its endpoint once ready (or raise with its log);
    `env`: its environment, default this process's."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dgaas_flow", "pilot", "serve", *serve_argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    path = state_dir / f"dgaas-{os.uname().nodename}-{proc.pid}.json"
    deadline = time.monotonic() + timeout_s + 10
    while time.monotonic() < deadline:
        endpoint = Endpoint.read(path) if path.exists() else None
        if endpoint is not None and endpoint.state == "ready":
            return endpoint, path
        if (endpoint is not None and endpoint.state == "failed") or proc.poll() is not None:
            break
        time.sleep(0.2)
    terminate_pid(proc.pid)
    reason = Endpoint.read(path).error if path.exists() else None
    raise PilotError(reason or f"the pilot did not become ready; {log}:\n{log_tail(log)}")


def status(state_dir: Path) -> list[dict]:
    """Every pilot of the folder, with `running`: not stopped or failed, and not gone (see
    Endpoint.gone: another host's starting or restarting pilot writes no heartbeat, so counts)."""
    rows = []
    for e in read_registry(state_dir):
        row = json.loads(e.model_dump_json())
        row["running"] = e.state not in ("stopped", "failed") and not e.gone()
        rows.append(row)
    return rows


def stop_all(state_dir: Path) -> int:
    """Stop every pilot of this host recorded in state_dir, and forget it; returns how many were
    running. Other hosts' pilots (the folder may be shared) are theirs to stop: their pids mean
    nothing here."""
    here, stopped = socket.gethostname(), 0
    for path in sorted(state_dir.glob("*.json")):
        endpoint = Endpoint.read(path)
        if endpoint.host != here:
            continue
        if alive(endpoint.supervisor_pid) and endpoint.state not in ("stopped", "failed"):
            terminate_pid(endpoint.supervisor_pid)
            stopped += 1
        path.unlink(missing_ok=True)
    return stopped
