from __future__ import annotations

from pathlib import Path

import pytest

from dgaas_flow.pilot.settings import PilotConfig
from dgaas_flow.pilot.supervisor import Pilot
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


FAULT_ROWS: list[tuple[str, int, int, int, int, int]] = []


def pytest_terminal_summary(terminalreporter):
    if not FAULT_ROWS:
        return
    tr = terminalreporter
    tr.section("faults injected: nothing may be lost or duplicated")
    tr.write_line(f"{'fault':<40}{'injected':>9}{'items':>8}{'lost':>6}{'dup':>6}{'failed':>8}")
    for row in FAULT_ROWS:
        tr.write_line(f"{row[0]:<40}{row[1]:>9}{row[2]:>8}{row[3]:>6}{row[4]:>6}{row[5]:>8}")
