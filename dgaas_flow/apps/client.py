"""The client of the node's Triton server, for any app: `triton_client()` inside a Parsl app (or
`PilotClient` in a script) finds the server by discovery, waits until its pilot is ready, sends
named tensors and gets named arrays back, and retries failed requests against a fresh resolution
(the server may have restarted or moved). Underneath, one tritonclient connection per worker
process and server is reused across tasks, over HTTP or gRPC alike."""

from __future__ import annotations

import atexit
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from dgaas_flow.errors import PilotError
from dgaas_flow.gateway.bearer import optional_auth_headers
from dgaas_flow.pilot.discovery import failover_endpoints, resolve_endpoint
from dgaas_flow.pilot.fallback import local_fallback

T = TypeVar("T")
FAILBACK_S = 30.0  # after a fail-over, the node's own server is tried again this much later


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]  # without the batch dimension

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(triton_to_np_dtype(self.datatype))

    def accepts(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(d in (-1, s) for d, s in zip(self.shape, shape, strict=True))


@dataclass(frozen=True)
class ModelInfo:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    max_batch_size: int


ALL_CLASSES = 2**31 - 1  # a classification request for more classes than there are gets them all


class TritonClient:
    """A thin, protocol-neutral wrapper: the same calls over HTTP and gRPC."""

    def __init__(self, url: str, protocol: str, timeout_s: float, headers: dict[str, str] | None = None):
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self.headers = headers or {}  # the bearer token, for a gateway
        address = url.split("://", 1)[-1]
        if protocol == "http":
            self.lib: Any = httpclient
            self.client = httpclient.InferenceServerClient(
                address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:  # imported here: a tenth of a second off every HTTP worker's first task
            import tritonclient.grpc as grpcclient

            self.lib = grpcclient
            self.client = grpcclient.InferenceServerClient(address)
        self._models: dict[tuple[str, str], ModelInfo] = {}
        self._labels: dict[tuple[str, str, str], list[str]] = {}

    def model_info(self, model: str, version: str = "") -> ModelInfo:
        key = (model, version)
        if key not in self._models:
            if self.protocol == "http":
                meta = self.client.get_model_metadata(model, version, headers=dict(self.headers))
                config = self.client.get_model_config(model, version, headers=dict(self.headers))
            else:
                meta = self.client.get_model_metadata(model, version, headers=dict(self.headers), as_json=True)
                config = self.client.get_model_config(model, version, headers=dict(self.headers), as_json=True)
                config = config["config"]
            batch = int(config.get("max_batch_size", 0))
            strip = 1 if batch > 0 else 0

            def tensors(items: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
                return tuple(
                    TensorInfo(t["name"], t["datatype"], tuple(int(d) for d in t["shape"][strip:]))
                    for t in items
                )

            self._models[key] = ModelInfo(tensors(meta["inputs"]), tensors(meta["outputs"]), batch)
        return self._models[key]

    def infer_tensors(self, model: str, version: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                      class_counts: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """The named outputs for named inputs, each already of its tensor's data type; `class_counts`
        asks Triton's classification strings ("score:index:label") of some outputs instead of values."""
        datatypes = {t.name: t.datatype for t in self.model_info(model, version).inputs}
        tensors = []
        for name, array in inputs.items():
            tensor = self.lib.InferInput(name, list(array.shape), datatypes[name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        counts = class_counts or {}
        requested = [self.lib.InferRequestedOutput(name, class_count=counts.get(name, 0))
                     for name in outputs]
        kwargs: dict[str, Any] = {"model_version": version, "outputs": requested, "headers": dict(self.headers)}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self.client.infer(model, tensors, **kwargs)
        return {name: result.as_numpy(name) for name in outputs}

    def class_names(self, model: str, version: str, output: str) -> list[str] | None:
        """The output's class names, index by index, once `infer_outputs` has learnt them."""
        return self._labels.get((model, version, output))

    def infer_outputs(self, model: str, version: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                      classify: str | None = None) -> tuple[dict[str, np.ndarray], list[str] | None]:
        """The named outputs (raw values) for named inputs and, when `classify` names an output whose
        classes are ranked, its class names: learnt once per process from Triton's classification
        strings for that output, asked once per process with real items (tasks send their first one
        alone) so that the server counts no extra inference; the others come back raw in the same
        request. Later requests ask for raw values, which tasks rank in numpy."""
        if classify is None:
            return self.infer_tensors(model, version, inputs, outputs), None
        names = self.class_names(model, version, classify)
        if names is not None:
            return self.infer_tensors(model, version, inputs, outputs), names
        out = self.infer_tensors(model, version, inputs, outputs, class_counts={classify: ALL_CLASSES})
        out[classify], names = self._parse_classes(out[classify])
        self._labels[(model, version, classify)] = names
        return out, names

    @staticmethod
    def _parse_classes(entries: np.ndarray) -> tuple[np.ndarray, list[str]]:
        rows = entries.reshape(-1, entries.shape[-1])
        values = np.empty(rows.shape, dtype=np.float64)
        names = [str(i) for i in range(rows.shape[1])]
        for r, row in enumerate(rows):
            for entry in row:
                value, index, *label = (entry.decode() if isinstance(entry, bytes) else str(entry)).split(":", 2)
                values[r, int(index)] = float(value)
                if label:
                    names[int(index)] = label[0]
        return values.reshape(entries.shape), names

    def is_ready(self) -> bool:
        try:
            return bool(self.client.is_server_ready(headers=dict(self.headers)))
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a broken connection must not mask the real error
            self.client.close()


_CLIENTS: dict[tuple[str, str], TritonClient] = {}


def cached_client(url: str, protocol: str, timeout_s: float, headers: dict[str, str] | None = None) -> TritonClient:
    """One client per worker process and server: connections are reused across tasks. The headers
    (a token, re-read by each task since tokens are refreshed) replace the cached client's."""
    key = (url, protocol)
    if key not in _CLIENTS:
        _CLIENTS[key] = TritonClient(url, protocol, timeout_s)
    _CLIENTS[key].headers = headers or {}
    return _CLIENTS[key]


@atexit.register
def _close_clients() -> None:
    """Close cached clients before interpreter shutdown, when gRPC can no longer close them cleanly."""
    for key in list(_CLIENTS):
        drop_client(*key)


def drop_client(url: str, protocol: str) -> None:
    client = _CLIENTS.pop((url, protocol), None)
    if client is not None:
        client.close()


NOT_RETRYABLE_STATUS = {
    "400", "401", "403", "StatusCode.INVALID_ARGUMENT", "StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED",
}


def retryable(exc: Exception) -> bool:
    """Transport failures take many forms (socket errors, gevent's HTTPConnectionClosed, gRPC
    UNAVAILABLE or DEADLINE_EXCEEDED): retry all of them; only a request the server rejected as
    invalid, or the gateway refused for its token, would fail again the same way."""
    if isinstance(exc, InferenceServerException):
        return str(exc.status()) not in NOT_RETRYABLE_STATUS
    return True


def wait_until_ready(client: TritonClient, seconds: float) -> None:
    """Back off after a failure, but no longer than needed: a restarted server is used as soon as
    it answers ready, instead of after a blind exponential sleep."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not client.is_ready():
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class Connection:
    """How an app reaches its server: `PilotClient`'s parameters."""

    protocol: str = "http"
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5
    server_url: str | None = None
    gateway: str | None = None
    token_file: str | None = None
    ready_timeout_s: float = 120.0
    fallback: str | None = None

    def connection(self) -> Connection:
        """These settings alone (a subclass, e.g. a campaign's InferRequest, carries more)."""
        return Connection(*(getattr(self, f.name) for f in fields(Connection)))


class PilotClient:
    """The server discovery finds, followed across retries and restarts.

    Parameters
    ----------
    protocol
        ``"http"`` or ``"grpc"``.
    timeout_s
        Deadline of one request.
    retries
        Retries of a failed request; each first waits (at most ``backoff_s * 2**attempt``) for the
        server discovery then finds to say ready.
    backoff_s
        Longest first wait between retries.
    server_url
        An explicit server (``http://host:port`` or ``grpc://host:port``): no discovery.
    gateway
        ``host:port`` of a dgaas-flow gateway: no discovery; the token is sent.
    token_file
        The gateway's bearer token; default: ``DGAAS_TOKEN``, then WLCG bearer-token discovery.
    ready_timeout_s
        How long the node's pilot may take to start (``triton.ready_timeout_s``); an app waits up
        to twice that, plus 30 s, for it to say ready.
    fallback
        A session's pilot settings (its ``pilot.json``): when no pilot serves, start a Triton
        server on this node from them (see `dgaas_flow.pilot.fallback`); None: fail instead.
    """

    def __init__(self, protocol: str = "http", timeout_s: float = 30.0, retries: int = 5, backoff_s: float = 0.5,
                 server_url: str | None = None, gateway: str | None = None, token_file: str | None = None,
                 ready_timeout_s: float = 120.0, fallback: str | None = None) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc' (got {protocol!r})")
        self.settings = Connection(protocol, timeout_s, retries, backoff_s, server_url, gateway, token_file,
                                   ready_timeout_s, fallback)
        self.url: str | None = None
        self.headers: dict[str, str] | None = None
        self.failovers = 0  # how often requests moved to another pilot
        self._away_since: float | None = None  # when they last did (monotonic)

    def connect(self, fresh: bool = False) -> TritonClient:
        """The client of the server discovery finds; resolved again only after a failure (the
        server may have moved), not for every request."""
        s = self.settings
        if self.headers is None:
            self.headers = optional_auth_headers(s.token_file)
        if self.url is None or fresh:
            self.url = self._resolve()
        return cached_client(self.url, s.protocol, s.timeout_s, self.headers)

    def _resolve(self) -> str:
        # a pilot started with its workers may still be starting: its worst case is a `before`
        # step (e.g. an image pull) and a server start, each bounded by ready_timeout_s
        s = self.settings
        endpoint = resolve_endpoint(s.server_url, gateway=s.gateway, ready_timeout_s=2 * s.ready_timeout_s + 30)
        url = endpoint.url(s.protocol)
        if url is None:
            raise ValueError(f"the server found offers no {s.protocol} endpoint; use the other protocol")
        return url

    def call(self, fn: Callable[[TritonClient], T]) -> T:
        """fn(client), retrying transport failures with backoff and a fresh resolution; when the
        node's pilot no longer serves, another serving pilot of the session (see `_recover`)."""
        s = self.settings
        for attempt in range(s.retries + 1):
            client = self._current()
            try:
                return fn(client)
            except Exception as exc:
                drop_client(client.url, client.protocol)
                if attempt == s.retries or not retryable(exc):
                    raise
                self._recover(s.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ fail-over (see pilot.discovery)

    @property
    def _may_fail_over(self) -> bool:
        """An explicit server or gateway is what the workflow asked for: never another one."""
        return not (self.settings.server_url or self.settings.gateway)

    def _current(self) -> TritonClient:
        """The client to use now: the node's server, found again FAILBACK_S after a fail-over (it
        may serve again); another serving pilot when discovery says the node's does not serve."""
        if self._away_since is not None and time.monotonic() - self._away_since > FAILBACK_S:
            self.url, self._away_since = None, None
        try:
            return self.connect()
        except PilotError:
            if not self._may_fail_over:
                raise
            return self._fail_over()

    def _recover(self, seconds: float) -> None:
        """After a failed request: the server discovery finds now, if it answers ready within
        `seconds`; else another serving pilot; else the same server again (the next attempt
        tells)."""
        try:
            client = self.connect(fresh=True)
        except PilotError:
            if not self._may_fail_over:
                raise
            client = None
        if client is not None:
            wait_until_ready(client, seconds)
            if not self._may_fail_over or client.is_ready():
                return
        with contextlib.suppress(PilotError):
            self._fail_over()

    def _fail_over(self) -> TritonClient:
        """Another serving pilot of the session, or the gateway, that answers ready; else, with
        `fallback`, this node's own fallback server; PilotError when there is none."""
        s = self.settings
        targets = failover_endpoints(exclude={self.url} if self.url else frozenset())
        if not targets and s.fallback:
            targets = [local_fallback(Path(s.fallback))]
        for endpoint in targets:
            url = endpoint.url(s.protocol)
            if url is None:
                continue
            client = cached_client(url, s.protocol, s.timeout_s, self.headers)
            if client.is_ready():
                self.url, self._away_since = url, time.monotonic()
                self.failovers += 1
                return client
            drop_client(url, s.protocol)
        raise PilotError("the node's pilot does not serve and no other pilot of the session does"
                         + ("" if s.fallback else " (client.fallback: local would start one on this node)"))

    @property
    def raw(self) -> Any:
        """The tritonclient ``InferenceServerClient`` (http or grpc) of the server found now."""
        return self.connect().client

    def model_info(self, model: str, version: str = "") -> ModelInfo:
        """The model's inputs and outputs (names, data types, shapes without the batch) and batch size."""
        return self.call(lambda c: c.model_info(model, version))

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
              version: str = "") -> dict[str, np.ndarray]:
        """Run ``model`` on named inputs (arrays with the batch dimension first when the model
        batches) and return its named outputs (all of them by default). An input is converted to
        its tensor's data type only where that keeps its kind (float64 to FP32, not float to INT8),
        and gets a missing axis of one (a grey image for a model of one channel, see fit_shape)."""
        info = self.model_info(model, version)
        expected = {t.name: t for t in info.inputs}
        if set(inputs) != set(expected):
            raise ValueError(f"model {model} takes inputs {sorted(expected)} (got {sorted(inputs)})")
        batched = info.max_batch_size > 0
        arrays = {name: _as_tensor(value, expected[name], model, batched) for name, value in inputs.items()}
        names = list(outputs) if outputs is not None else [t.name for t in info.outputs]
        unknown = set(names) - {t.name for t in info.outputs}
        if unknown:
            raise ValueError(f"model {model} has no output {sorted(unknown)} (it has {[t.name for t in info.outputs]})")
        return self.call(lambda c: c.infer_tensors(model, version, arrays, names))


def fit_shape(array: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """A missing axis of size one, first or last (a grey image for a model of one channel), is added;
    any other difference is left to the shape check."""
    shape, want = array.shape[1:], tensor.shape
    if len(shape) + 1 == len(want):
        if want[0] == 1 and all(d in (-1, s) for d, s in zip(want[1:], shape, strict=True)):
            return array[:, None]
        if want[-1] == 1 and all(d in (-1, s) for d, s in zip(want[:-1], shape, strict=True)):
            return array[..., None]
    return array


def _as_tensor(value: Any, tensor: TensorInfo, model: str, batched: bool) -> np.ndarray:
    array = fit_shape(np.asarray(value), tensor) if batched else np.asarray(value)
    if tensor.datatype == "BYTES" or array.dtype == tensor.dtype:
        return array
    try:
        return array.astype(tensor.dtype, casting="same_kind")
    except TypeError:
        raise TypeError(f"model {model} input {tensor.name} is {tensor.datatype}; a {array.dtype} array cannot be "
                        f"converted without changing its kind: convert it yourself") from None


_APP_CLIENTS: dict[Connection, PilotClient] = {}


def triton_client(protocol: str = "http", timeout_s: float = 30.0, retries: int = 5, backoff_s: float = 0.5,
                  server_url: str | None = None, gateway: str | None = None, token_file: str | None = None,
                  ready_timeout_s: float = 120.0, fallback: str | None = None) -> PilotClient:
    """The client of this node's Triton server, for use inside any Parsl app: one per worker
    process and settings (connections are reused across the app's calls), found by discovery
    and waiting until the node's pilot is ready. The parameters are `PilotClient`'s."""
    return client_for(Connection(protocol, timeout_s, retries, backoff_s, server_url, gateway, token_file,
                                 ready_timeout_s, fallback))


def client_for(settings: Connection) -> PilotClient:
    """This worker process's client for these settings: what it learnt (a fail-over, its
    connections) lasts across apps; the token is read again for each (tokens are refreshed while
    workers live)."""
    key = settings.connection()
    if key not in _APP_CLIENTS:
        _APP_CLIENTS[key] = PilotClient(**asdict(key))
    client = _APP_CLIENTS[key]
    client.headers = None
    return client
