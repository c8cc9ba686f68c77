"""The jets example (workflows/jets): its tagger built once, its prepare step as a module."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

from tests.conftest import ROOT

JETS = ROOT / "workflows" / "jets"


def prepared_jets() -> ModuleType:
    """workflows/jets/prepare.py as a module (its `reference` is the tagger in numpy), the model built."""
    if not ((JETS / "model_repository" / "jets" / "1" / "model.onnx").exists()
            and any((JETS / "data" / "root").glob("*.root"))):
        subprocess.run([sys.executable, str(JETS / "prepare.py"), "--jets", "200", "--files", "2"], check=True)
    spec = importlib.util.spec_from_file_location("jets_prepare", JETS / "prepare.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
