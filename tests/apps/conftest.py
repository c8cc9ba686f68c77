"""Your own apps on pilots: the jets tagger built once, and a repository serving it beside digits."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.jets import JETS, prepared_jets


@pytest.fixture(scope="session")
def jets() -> ModuleType:
    return prepared_jets()


@pytest.fixture
def two_models(jets: ModuleType, digits_data: Path) -> Path:
    """workflows/jets/model_repository: the two-input jets tagger, and the digits classifier (a link)."""
    return JETS / "model_repository"
