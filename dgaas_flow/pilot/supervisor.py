"""The pilot: one Triton server per node, started, watched, restarted and stopped.

One thread owns the server process from spawn to stop. The server runs in its own session (so
its Python-backend stubs are stopped together with it) and receives SIGTERM if that thread dies
(PR_SET_PDEATHSIG), so a killed pilot never leaves an orphaned server behind.

Healthy means serving: the server answers ready and so does every model it serves. A model that
went away (unloaded through the gateway by an admin token, or failed) is loaded again with the
pilot's secret; meanwhile the pilot is `restarting`, not a target for anyone, and if the model
stays away for health_failures probes the server is restarted. The server and its files (log,
the Python backend's shared memory) are created mode 0600: other users of the node read nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections import deque

from dgaas_flow.errors import PilotError
from dgaas_flow.pilot import metrics
from dgaas_flow.pilot.deadline import block_end
from dgaas_flow.pilot.endpoint import Endpoint, key_file, metrics_request
from dgaas_flow.pilot.launch import SECRET_HEADER, LaunchPlan, Ports, plan_launch, require_tool
from dgaas_flow.pilot.ports import free_ports
from dgaas_flow.pilot.settings import PilotConfig
from dgaas_flow.processes import (
    Service,
    http_get,
    http_post,
    log_tail,
    open_private,
    private_child,
    shared_memory,
    stop_group,
    write_atomic,
)

STOP_GRACE_S = 8.0
BACKEND_SHM = "triton_python_backend_shm_region_"
PORT_ATTEMPTS = 3
POLL_S = 0.2
# A campaign in a session asks for Triton's counters as it ends, through a file in the registry (a
# shared filesystem on a cluster). A pilot looks for that file at every poll while campaigns follow
# one another (for REQUEST_FAST_S after it answered one, or after it became ready), and otherwise
# every REQUEST_IDLE_S: a long campaign then waits at most that long for its figures, and a
# thousand pilots cost the filesystem 500 opens a second, not 5,000.
REQUEST_FAST_S = 30.0
REQUEST_IDLE_S = 2.0


class ServerKilled(PilotError):
    """The server was killed by a signal (the OOM killer, an operator, a fault) while it started:
    nothing says the next start would fail too, so it is restarted like a server that died later.
    A server that exits with a status of its own (a broken model) still fails at once."""


def detect_gpus(environ: os._Environ | dict[str, str] = os.environ) -> list[str]:
    """GPUs the batch system gave this job: CUDA_VISIBLE_DEVICES (SLURM and HTCondor set it),
    else SLURM_JOB_GPUS, else HTCondor's _CONDOR_AssignedGPUs."""
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "_CONDOR_AssignedGPUs"):
        value = environ.get(var, "").strip()
        if value and value not in ("-1", "NoDevFiles"):
            return [g.strip() for g in value.split(",") if g.strip()]
    return []


_PILOTS_IN_PROCESS = itertools.count()


class Pilot(Service):
    def __init__(self, config: PilotConfig, block: str | None = None, gpus: list[str] | None = None):
        self.config = config
        self.gpus = detect_gpus() if gpus is None else gpus
        host = socket.gethostname()
        n = next(_PILOTS_IN_PROCESS)  # several pilots in one process (tests, a gateway) need own files
        self.name = f"dgaas-{host}-{os.getpid()}" + (f"-{n}" if n else "")
        self.log_file = config.log_dir / f"{self.name}.log"
        self._logger = logging.getLogger(f"{__name__}.{self.name.replace('.', '_')}")
        self._logger.setLevel(logging.INFO)
        self._log_handler: logging.Handler | None = None
        self.endpoint_file = config.registry / f"{self.name}.json" if config.registry else None
        self.secret = secrets.token_hex(16)  # the server's control plane answers only with it
        self.key_file = key_file(self.endpoint_file or config.log_dir / f"{self.name}.json")
        self._served: list[str] = list(config.models)  # filled from the server when it serves a whole repository
        settings = config.triton
        self.plan: LaunchPlan | None = None
        listen = settings.listen
        self._advertised = "127.0.0.1" if listen in ("127.0.0.1", "localhost") else host if listen == "0.0.0.0" \
            else listen
        self.endpoint = Endpoint(
            name=self.name,
            models=list(config.models),
            gpus=self.gpus,
            block=block,
            launch=settings.launch,
            log=str(self.log_file),
            heartbeat_every_s=settings.health_interval_s,
        )
        self._started = time.time()
        self.ends_at, ends_from = block_end(lifetime_s=settings.block_lifetime_s, started=self._started)
        self.endpoint.ends_at = self.ends_at
        self._ends_from = ends_from
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: PilotError | None = None
        self._misses = 0  # failed health probes in a row
        self._next_probe = 0.0
        self._counters_before: dict[str, float] = {}  # Triton's counters from servers that ended
        self._counters_now: dict[str, float] = {}  # the last reading of the running server
        self._gpu_samples = (0, 0.0)  # how many readings, their sum
        self._metrics_request: str | None = None  # the last counter request read
        self._request_fast_until = self._next_request_check = 0.0  # monotonic times (see REQUEST_FAST_S)
        self._regions: set[str] = set()  # the Python backend's shared memory of the server now running
        self._recent_restarts: deque[float] = deque()  # monotonic times of restarts within restart_window_s
        self._thread = threading.Thread(target=self._own_server, name="pilot", daemon=True)
        self._use_ports(Ports(*free_ports(3, listen)))

    def _use_ports(self, ports: Ports) -> None:
        self.ports = ports
        host = "127.0.0.1" if self.config.triton.listen == "0.0.0.0" else self._advertised
        self.probe_url = f"http://{host}:{ports.http}"
        self.metrics_probe_url = f"http://{host}:{ports.metrics}/metrics"
        self.endpoint.http_url = f"http://{self._advertised}:{ports.http}"
        self.endpoint.grpc_url = f"grpc://{self._advertised}:{ports.grpc}"
        self.endpoint.metrics_url = f"http://{self._advertised}:{ports.metrics}/metrics"

    # ---------------------------------------------------------------- public API

    def start(self) -> Endpoint:
        """Start the server and return once it is ready; raise PilotError with the log's tail."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> Endpoint:
        """Start the server and return at once: the endpoint (state `starting`) is published, and
        its URLs are final unless a port is taken meanwhile (the endpoint file then says so)."""
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        open_private(self.log_file).close()  # Triton's output and the pilot's lines share it, owner-only
        self._log_handler = logging.FileHandler(self.log_file)
        self._log_handler.setFormatter(logging.Formatter("[dgaas-flow pilot %(asctime)s] %(message)s", "%H:%M:%S"))
        self._logger.addHandler(self._log_handler)
        write_atomic(self.key_file, self.secret + "\n")  # mkstemp: mode 0600
        self._publish()
        self._thread.start()
        return self.endpoint

    def wait_ready(self) -> Endpoint:
        while not self._ready.wait(POLL_S):
            if not self._thread.is_alive():
                break
        if self._error:
            raise self._error
        if not self._ready.is_set():
            raise PilotError(f"the pilot's supervisor ended before the server was ready; log {self.log_file}")
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        elif self._thread.ident is None:
            self._set_state("stopped")

    @property
    def drain_at(self) -> float | None:
        """When the pilot begins draining (Unix time), if its block's end is known: drain_s before
        it, or halfway through a block shorter than drain_s (it would otherwise never serve)."""
        if self.ends_at is None:
            return None
        drain_s = self.config.triton.drain_s
        lifetime = self.ends_at - self._started
        return self.ends_at - drain_s if drain_s < lifetime else self._started + lifetime / 2

    @property
    def server_pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # ---------------------------------------------------------------- the owning thread

    def _first_start(self) -> None:
        """Free ports are chosen before the server binds them; another process may take one
        meanwhile (glideins share nodes): then choose again. Restarts keep their ports."""
        attempt = 0
        while True:
            self.plan = self._make_plan()
            try:
                self._spawn_until_ready()
                return
            except ServerKilled as exc:
                if self._stop.is_set():
                    raise
                if not self._may_restart(str(exc)):
                    raise PilotError(self.endpoint.error or str(exc)) from None
                self._log(f"{str(exc).split('; log ')[0]}; restarting")
                self.endpoint.restarts += 1
                self._publish()
            except PilotError as exc:
                attempt += 1
                if "already in use" not in str(exc) or attempt == PORT_ATTEMPTS:
                    raise
                self._log(f"a port was taken before the server bound it; new ports ({exc})")
                self._use_ports(Ports(*free_ports(3, self.config.triton.listen)))

    def _may_restart(self, reason: str) -> bool:
        """Whether one more restart fits in max_restarts within restart_window_s (it is counted);
        when it does not, the pilot says why (endpoint.error) and gives up."""
        settings = self.config.triton
        now = time.monotonic()
        recent = self._recent_restarts
        while recent and now - recent[0] > settings.restart_window_s:
            recent.popleft()
        if len(recent) >= settings.max_restarts:
            self._log(f"{reason.splitlines()[0]}; restart limit reached")
            self.endpoint.error = (
                f"tritonserver needed {len(recent) + 1} restarts within {settings.restart_window_s:.0f} s "
                f"(triton.max_restarts {settings.max_restarts}); log {self.log_file}:\n{log_tail(self.log_file)}"
            )
            return False
        recent.append(now)
        return True

    def _own_server(self) -> None:
        try:
            self._serve()
        finally:
            if self._log_handler is not None:
                self._logger.removeHandler(self._log_handler)
                self._log_handler.close()

    def _serve(self) -> None:
        try:
            self._first_start()
        except PilotError as exc:
            self._error = exc
            self.endpoint.error = str(exc)
            self._terminate()
            self.key_file.unlink(missing_ok=True)
            self._set_state("stopped" if self._stop.is_set() else "failed")
            return
        self._set_state("ready")
        self._request_fast_until = time.monotonic() + REQUEST_FAST_S  # a session's first campaign may be short
        self._ready.set()
        try:
            self._supervise()
        finally:
            self._terminate()
            self.key_file.unlink(missing_ok=True)
            self._set_state("stopped")

    def _make_plan(self) -> LaunchPlan:
        settings = self.config.triton
        plan = plan_launch(settings, self.config.repository, self.config.models, self.ports, self.gpus, self.name,
                           secret=self.secret)
        if settings.launch != "binary":
            require_tool(plan, settings.launch)
        return plan

    def _problem(self) -> str | None:
        """Why the server needs a restart now: it exited, or it stopped serving (hung, e.g.
        SIGSTOP, or wedged, or a model it serves went away and would not load again) for
        health_failures probes in a row."""
        settings = self.config.triton
        if self._proc is None or self._proc.poll() is not None:
            return f"server exited ({self._proc.returncode if self._proc else 'never started'})"
        if time.monotonic() < self._next_probe:
            return None
        self._next_probe = time.monotonic() + settings.health_interval_s
        missing = self.missing_models(timeout=settings.health_interval_s)
        self._protect_regions()  # a model loaded again has new ones
        self._misses = 0 if missing == [] else self._misses + 1
        if missing:
            self._reload(missing)
        elif missing == [] and self.endpoint.state == "restarting":
            self._log("every model is ready again")
            self.endpoint.state = "draining" if self.endpoint.draining_since else "ready"
        if self._misses or not self._read_metrics():
            self._publish()  # the heartbeat, at every probe: readers elsewhere tell a live pilot from a dead node by it
        if self._misses < settings.health_failures:
            return None
        self._terminate(kill=True)
        return f"server not serving for {self._misses} health probes" + (f" (models {', '.join(missing)} not ready)"
                                                                          if missing else "")

    def _reload(self, models: list[str]) -> None:
        """A served model went away: not serving until it is back; ask the server to load it
        again (the repository API needs the pilot's secret)."""
        if self.endpoint.state == "ready":
            self._set_state("restarting")
        for model in models:
            self._log(f"model {model} is not ready; loading it again")
            status, body = http_post(f"{self.probe_url}/v2/repository/models/{model}/load", b"",
                                     {SECRET_HEADER: self.secret}, self.config.triton.ready_timeout_s)
            if status != 200:  # the next probe decides
                self._log(f"loading {model} failed: {status or 'no answer'} {body.decode(errors='replace')}")

    def _supervise(self) -> None:
        """Restart a server that died or hung; more than max_restarts restarts within
        restart_window_s means something is wrong that a restart will not fix: give up, say why."""
        settings = self.config.triton
        self._next_probe = time.monotonic() + settings.health_interval_s
        if self.ends_at is not None:
            self._log(f"the block ends at {time.strftime('%H:%M:%S', time.localtime(self.ends_at))} "
                      f"({self._ends_from}); draining {settings.drain_s:.0f} s before")
        while not self._stop.wait(POLL_S):
            self._answer_metrics_request()
            if self.drain_at is not None and self.endpoint.state == "ready" and time.time() >= self.drain_at:
                self._log("the block ends soon: draining (no new work; what is held finishes)")
                self.endpoint.draining_since = time.time()
                self._set_state("draining")
            reason = self._problem()
            if reason is None:
                continue
            self._misses = 0
            if not self._may_restart(reason):
                self._set_state("failed")
                self._stop.wait()
                return
            self._log(f"{reason}; restarting")
            self.endpoint.restarts += 1
            self._set_state("restarting")
            try:
                self._spawn_until_ready()
            except PilotError as exc:
                self._log(str(exc))
                self._terminate(kill=True)
                continue
            self._next_probe = time.monotonic() + settings.health_interval_s
            self._set_state("draining" if self.endpoint.draining_since else "ready")

    def _spawn_until_ready(self) -> None:
        plan = self.plan
        assert plan is not None
        self._terminate()
        if plan.before:  # e.g. `apptainer instance start`, which may pull an image: bounded too
            self._run_step(plan.before, timeout=self.config.triton.ready_timeout_s)
        env = {**os.environ, **plan.env}
        with open_private(self.log_file) as log:
            try:
                self._proc = subprocess.Popen(
                    plan.run, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True, preexec_fn=private_child,
                )
            except OSError as exc:
                raise PilotError(f"cannot start {plan.run[0]}: {exc}") from None
        self.endpoint.pid = self._proc.pid
        deadline = time.monotonic() + self.config.triton.ready_timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if self._proc.poll() is not None:
                status = self._proc.returncode
                if status < 0 and not self._stop.is_set():
                    raise ServerKilled(f"tritonserver was killed by signal {-status} before it was ready; "
                                       f"log {self.log_file}:\n{log_tail(self.log_file)}")
                raise PilotError(
                    f"tritonserver exited with status {status} before it was ready; "
                    f"log {self.log_file}:\n{log_tail(self.log_file)}"
                )
            if self.is_ready(timeout=2):
                self._protect_regions()
                if not self.config.models:
                    self._served = self._repository_ready()
                return
            time.sleep(POLL_S)
        if self._stop.is_set():
            raise PilotError("stopped while starting")
        raise PilotError(
            f"tritonserver not ready after {self.config.triton.ready_timeout_s:.0f} s "
            f"(triton.ready_timeout_s); log {self.log_file}:\n{log_tail(self.log_file)}"
        )

    def _answer_metrics_request(self) -> None:
        """A campaign in a session asked for the counters now (endpoint.request_metrics): read them
        once; the endpoint names the request only if the reading succeeded (a failed one is not
        tried again: the campaign marks these figures stale, and a log line per poll would not help)."""
        now = time.monotonic()
        if self.endpoint_file is None or self.endpoint.state not in ("ready", "draining") \
                or now < self._next_request_check:
            return
        request = metrics_request(self.endpoint_file.parent)
        if request is not None and request != self._metrics_request:
            self._metrics_request = request
            self._request_fast_until = now + REQUEST_FAST_S
            self._read_metrics(answering=request)
        self._next_request_check = now + (0.0 if now < self._request_fast_until else REQUEST_IDLE_S)

    def _read_metrics(self, answering: str | None = None) -> bool:
        """Triton's counters so far (those of servers that ended included), published with the
        endpoint; a server that crashes keeps the counts of its last reading. GPU utilization is
        published as a sum of samples and their count, so that a campaign can take its own mean.
        Whether a reading was published."""
        try:
            reading = metrics.scrape(self.metrics_probe_url)
        except Exception as exc:  # noqa: BLE001 - metrics are a record, never a reason to stop serving
            self._log(f"cannot read the metrics: {exc}")
            return False
        if reading is None:
            return False
        if "gpu_utilization" in reading:
            n, total = self._gpu_samples
            self._gpu_samples = (n + 1, total + reading["gpu_utilization"])
        self._counters_now = reading
        self.endpoint.metrics = metrics.add(self._counters_before, reading)
        if self._gpu_samples[0]:
            self.endpoint.metrics[metrics.GPU_SAMPLES], self.endpoint.metrics[metrics.GPU_SUM] = self._gpu_samples
        if answering is not None:
            self.endpoint.metrics_answered = answering
        self._publish()
        return True

    def is_ready(self, timeout: float) -> bool:
        return http_get(f"{self.probe_url}/v2/health/ready", timeout)[0] == 200

    def missing_models(self, timeout: float) -> list[str] | None:
        """The served models that are not ready ([] when the pilot serves); None when the server
        is not ready for another reason, or does not answer. (Triton's own readiness turns false
        when a model it was told to load is unloaded, hence the models first.)"""
        status = http_get(f"{self.probe_url}/v2/health/ready", timeout)[0]
        if status is None:
            return None
        missing = [m for m in self._served if http_get(f"{self.probe_url}/v2/models/{m}/ready", timeout)[0] != 200]
        return missing if missing or status == 200 else None

    def _repository_ready(self) -> list[str]:
        """The models a server of a whole repository made ready at its start: those it serves."""
        status, body = http_post(f"{self.probe_url}/v2/repository/index", b"{}", {SECRET_HEADER: self.secret}, 10)
        try:
            if status != 200:
                raise ValueError(f"status {status or 'no answer'}")
            index = json.loads(body)
        except ValueError as exc:
            self._log(f"cannot read the repository index, only the server's readiness is checked: {exc}")
            return []
        return sorted({m["name"] for m in index if m.get("state") == "READY"})

    def _terminate(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM and a grace period, or at once with kill=True (a hung or
        SIGSTOPped server does not act on SIGTERM)."""
        proc = self._proc
        if proc is not None and not kill and proc.poll() is None:
            self._read_metrics()
        self._counters_before, self._counters_now = metrics.add(self._counters_before, self._counters_now), {}
        if proc is not None:
            self._regions |= shared_memory(proc.pid, BACKEND_SHM)
            stop_group(proc, STOP_GRACE_S, kill=kill)
            self._reap_group(proc.pid)
            self._remove_regions()
        if self.plan and self.plan.after and proc is not None:
            self._run_step(self.plan.after, check=False)
        self._proc = None

    @classmethod
    def _reap_group(cls, pgid: int) -> None:
        """Give the backend stubs a moment to release their shared memory, then kill stragglers.
        Stubs that outlive the server are ours to reap under `pilot wrap` (it adopts orphans)."""
        deadline = time.monotonic() + STOP_GRACE_S / 2
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-pgid, os.WNOHANG)[0]:
                    pass
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def _protect_regions(self) -> None:
        """Note the Python backend's shared memory (a crash cannot tell it later) and make it the
        pilot's user's alone: the backend creates it 0644 whatever the umask, and it holds every
        request's tensors."""
        if self._proc is None:
            return
        found = shared_memory(self._proc.pid, BACKEND_SHM)
        for path in found - self._regions:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        self._regions |= found

    def _remove_regions(self) -> None:
        """A server that stops unlinks its Python backend's shared memory (64 MB or more a model
        instance); one that was killed or crashed leaves it in /dev/shm, which is memory, until the
        node reboots. Its group is gone by now, so nothing still maps what is left."""
        for path in self._regions:
            with contextlib.suppress(FileNotFoundError, PermissionError):
                os.unlink(path)
        self._regions = set()

    def _run_step(self, argv: list[str], check: bool = True, timeout: float | None = None) -> None:
        with open_private(self.log_file) as log:
            try:
                result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=timeout)
            except subprocess.TimeoutExpired:
                if self.plan and self.plan.after:
                    self._run_step(self.plan.after, check=False, timeout=60)
                raise PilotError(f"`{' '.join(argv)}` took more than {timeout:.0f} s (triton.ready_timeout_s)") \
                    from None
        if check and result.returncode != 0:
            raise PilotError(
                f"`{' '.join(argv)}` failed with status {result.returncode}; log {self.log_file}:\n"
                f"{log_tail(self.log_file)}"
            )

    def _set_state(self, state: str) -> None:
        self.endpoint.state = state  # type: ignore[assignment]
        self._publish()

    def _publish(self) -> None:
        """Write the endpoint file; a shared filesystem's hiccup is logged, and the server keeps
        serving (the next probe writes it again)."""
        if self.endpoint_file is None:
            return
        self.endpoint.heartbeat_at = time.time()
        try:
            self.endpoint.write(self.endpoint_file)
        except OSError as exc:
            self._log(f"cannot write the endpoint file {self.endpoint_file}: {exc}")

    def _log(self, message: str) -> None:
        """The pilot's own lines: in its log file beside Triton's, and through `logging`."""
        self._logger.info(message)
