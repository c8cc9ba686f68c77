"""Gateway tests: keys in a temporary folder, the `gateway` marker, and a final check that no
envoy started by these tests is left running."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from dgaas_flow.gateway import tokens


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gateway: starts a real Envoy gateway (with real Triton pilots)")


def envoy_processes() -> set[str]:
    found = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
        except psutil.Error:
            continue
        if proc.info["status"] == psutil.STATUS_ZOMBIE or not cmd:
            continue
        if Path(cmd[0]).name == "envoy" or proc.info["name"] == "envoy":
            found.add(f"{proc.pid}: {' '.join(cmd)[:160]}")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_envoy_left():
    before = envoy_processes()
    yield
    deadline = time.monotonic() + 20
    left = envoy_processes() - before
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = envoy_processes() - before
    assert not left, "the gateway tests left envoy running:\n" + "\n".join(sorted(left))


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return tokens.generate_keypair(tmp_path / "keys")


@pytest.fixture
def token_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No token or key of the user's account is seen by a test."""
    for var in ("DGAAS_TOKEN", "BEARER_TOKEN", "BEARER_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv(tokens.ENV_TOKEN_DIR, str(tmp_path / "default-keys"))
    return runtime


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DGAAS_TOKEN", "BEARER_TOKEN", "BEARER_TOKEN_FILE")}
    return {**env, **extra}
