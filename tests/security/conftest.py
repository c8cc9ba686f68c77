"""Security tests: keys in a temporary folder, and the gateway tests' check that no envoy they
started is left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgaas_flow.gateway import tokens
from tests.gateway.conftest import no_envoy_left  # noqa: F401 - an autouse session fixture, shared


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return tokens.generate_keypair(tmp_path / "keys")
