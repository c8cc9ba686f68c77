"""tritonclient use for tasks: one client per worker process and server, batched requests with a
deadline, and retries that re-resolve the server (it may have been restarted elsewhere)."""

from __future__ import annotations

import atexit
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


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

    def input(self, name: str | None) -> TensorInfo:
        return _pick(self.inputs, name, "input")

    def output(self, name: str | None) -> TensorInfo:
        return _pick(self.outputs, name, "output")


def _pick(tensors: tuple[TensorInfo, ...], name: str | None, what: str) -> TensorInfo:
    if name is None:
        if what == "input" and len(tensors) != 1:
            raise ValueError(f"the model has {len(tensors)} inputs; set inputs.tensor to one of "
                             f"{[t.name for t in tensors]}")
        return tensors[0]
    for t in tensors:
        if t.name == name:
            return t
    raise ValueError(f"the model has no {what} {name!r} (it has {[t.name for t in tensors]})")


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

    def infer(
        self, model: str, version: str, batch: np.ndarray, input_info: TensorInfo, output: str, class_count: int = 0
    ) -> np.ndarray:
        """The output tensor for the batch; class_count > 0 asks for Triton's classification
        strings ("score:index:label") instead of the raw values."""
        inp = self.lib.InferInput(input_info.name, list(batch.shape), input_info.datatype)
        inp.set_data_from_numpy(batch)
        requested = self.lib.InferRequestedOutput(output, class_count=class_count)
        kwargs: dict[str, Any] = {"model_version": version, "outputs": [requested], "headers": dict(self.headers)}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self.client.infer(model, [inp], **kwargs)
        return result.as_numpy(output)

    def class_names(self, model: str, version: str, output: str) -> list[str] | None:
        """The output's class names, index by index, once `infer_classes` has learnt them."""
        return self._labels.get((model, version, output))

    def infer_classes(
        self, model: str, version: str, batch: np.ndarray, input_info: TensorInfo, output: str
    ) -> tuple[np.ndarray, list[str]]:
        """The raw values, as `infer` gives them, and the class names from the server's label file
        (the index where it has none). Asked once per process, with real items (tasks send their
        first one alone), so that the server counts no extra inference: every class's
        classification string ("value:index:label"), parsed back into values in index order.
        Later requests ask for the raw values, and tasks rank them in numpy instead of parsing a
        string per item."""
        entries = self.infer(model, version, batch, input_info, output, class_count=ALL_CLASSES)
        rows = entries.reshape(-1, entries.shape[-1])
        values = np.empty(rows.shape, dtype=np.float64)
        names = [str(i) for i in range(rows.shape[1])]
        for r, row in enumerate(rows):
            for entry in row:
                value, index, *label = (entry.decode() if isinstance(entry, bytes) else str(entry)).split(":", 2)
                values[r, int(index)] = float(value)
                if label:
                    names[int(index)] = label[0]
        self._labels[(model, version, output)] = names
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
