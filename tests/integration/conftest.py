from __future__ import annotations

from pathlib import Path

import pytest

from dgaas_flow.pilot.supervisor import Pilot, PilotConfig
from tests.conftest import DIGITS


@pytest.fixture
def pilot_config(tmp_path: Path, digits_data: Path) -> PilotConfig:
    return PilotConfig(repository=DIGITS / "model_repository", models=["digits"],
                       registry=tmp_path / "pilots", log_dir=tmp_path / "logs")


@pytest.fixture
def pilot(pilot_config: PilotConfig):
    """A real tritonserver serving the digits model; fails the test loudly if it cannot start."""
    with Pilot(pilot_config) as p:
        yield p
