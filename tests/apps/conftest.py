"""Your own apps on pilots: the jets tagger built once, and a repository serving it beside digits."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import DIGITS, ROOT

JETS = ROOT / "workflows" / "jets"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "apps: users' own Parsl apps on pilot-backed executors (real Triton, Parsl)")


@pytest.fixture(scope="session")
def jets() -> ModuleType:
    """workflows/jets/prepare.py as a module (its `reference` is the tagger in numpy), the model built."""
    if not (JETS / "model_repository" / "jets" / "1" / "model.onnx").exists():
        subprocess.run([sys.executable, str(JETS / "prepare.py"), "--jets", "200", "--files", "2"], check=True)
    spec = importlib.util.spec_from_file_location("jets_prepare", JETS / "prepare.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture
def two_models(tmp_path: Path, jets: ModuleType, digits_data: Path) -> Path:
    """One repository holding the digits classifier and the two-input jets tagger."""
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "digits").symlink_to(DIGITS / "model_repository" / "digits")
    (repo / "jets").symlink_to(JETS / "model_repository" / "jets")
    return repo
