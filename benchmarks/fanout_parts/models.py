"""The benchmarked models and their items: every path reads the same prepared rows files and runs
the same chunks, so that their rates compare."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import ModuleType

import numpy as np
import yaml

from dgaas_flow.campaign.chunking import ChunkSizes
from dgaas_flow.inputs import enumerate_items
from dgaas_flow.specs import Workflow, load_workflow

from .locations import WORKFLOWS


def _module(path: Path, name: str) -> ModuleType:
    """A workflow's prepare.py, which is a script, not an installed module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@dataclass
class ModelCase:
    name: str
    workflow: Path
    dtype: str

    @property
    def folder(self) -> Path:
        return self.workflow.parent

    def prepare(self) -> None:
        """The model files (trained digits weights, the heavy ONNX model) and the workflow's own
        inputs exist after this, so the workflow validates on a fresh clone."""
        prepare = self.folder / "prepare.py"
        if self.name == "digits":
            if not (self.folder / "model_repository" / "digits" / "1" / "weights.npz").exists():
                subprocess.run([sys.executable, str(prepare)], check=True, stdout=subprocess.DEVNULL)
        elif self.name == "heavy":
            module = _module(prepare, "heavy_prepare")
            if not module.MODEL.exists():
                module.build_model()
            if not any(module.DATA.glob("*.npy")):
                module.write_rows(module.DATA, 10_000)
        elif self.name == "jets":
            module = _module(prepare, "jets_prepare")
            if not module.MODEL.exists() or not any((self.folder / "data" / "root").glob("*.root")):
                subprocess.run([sys.executable, str(prepare)], check=True, stdout=subprocess.DEVNULL)

    @property
    def named(self) -> bool:
        """Items of several named arrays (.npz files: the jets' points and features), not rows of one."""
        return self.name == "jets"

    def write_items(self, folder: Path, n: int) -> None:
        """n items as files of 10,000 rows (kept when already there with the right count): rows
        (.npy) of one array, or, for a model of several inputs, .npz files of its named arrays."""
        if self.name == "heavy":
            _module(self.folder / "prepare.py", "heavy_prepare").write_rows(folder, n)
            return
        if self.named:
            jets = _module(self.folder / "prepare.py", "jets_prepare")
            _module(WORKFLOWS / "heavy" / "prepare.py", "heavy_prepare").write_rows(
                folder, n, make=lambda m, start: jets.make_jets(m, jets.SEED + start))
            return
        digits = _digit_pixels()

        def make(m: int, start: int) -> np.ndarray:
            return digits[(start + np.arange(m)) % len(digits)]

        _module(WORKFLOWS / "heavy" / "prepare.py", "heavy_prepare").write_rows(folder, n, make=make)


def _digit_pixels() -> np.ndarray:
    """The 1,797 digit images as 8-bit pixels (the same values the example's PNG files hold)."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    return np.clip(np.rint(images * 255.0 / 16.0), 0, 255).astype(np.uint8)


MODELS = {
    "digits": ModelCase("digits", WORKFLOWS / "digits" / "workflow.yaml", "uint8"),
    "heavy": ModelCase("heavy", WORKFLOWS / "heavy" / "workflow.yaml", "float32"),
    "jets": ModelCase("jets", WORKFLOWS / "jets" / "workflow.yaml", "float32"),
}


def bench_workflow(case: ModelCase, items_dir: Path, workers: int, folder: Path, chunk_size: int | None,
                   outputs: str = "jsonl") -> Path:
    """A copy of the model's workflow reading the prepared rows, with `workers` workers per node,
    writing results as `outputs` (jsonl or parquet)."""
    wf = load_workflow(case.workflow)
    data = yaml.safe_load(case.workflow.read_text())
    provider = wf.provider.model_dump(exclude_none=True)
    provider["workers_per_node"] = workers
    data.update(
        name=f"bench-{case.name}", provider=provider,
        model={**data["model"], "repository": str(wf.model.repository)},
        inputs={"files": str(items_dir / "*.npz"), "format": "npz"} if case.named
        else {"files": str(items_dir / "*.npy"), "format": "rows"},
    )
    for hook in ("preprocess", "postprocess"):  # the items are already the model's inputs
        data.pop(hook, None)
    data.pop("outputs", None)
    data["outputs"] = {"top_k": wf.outputs.top_k, "format": outputs}
    if chunk_size:
        data["chunk_size"] = chunk_size
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "workflow.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def chunks(wf: Workflow, n: int) -> Iterator[list]:
    """The campaign's chunks of its n items: the same enumeration, the same chunk sizes (those it
    starts with: it grows them for a fast model as its requests come back)."""
    items = enumerate_items(wf.inputs.files, wf.inputs.format, wf.inputs.labels)
    for size in ChunkSizes(wf, n):
        chunk = list(islice(items, size))
        if not chunk:
            return
        yield chunk


def load_rows(items_dir: Path) -> np.ndarray | dict[str, np.ndarray]:
    """All the prepared items in memory, for the ceiling's clients (no reading on the clock): one
    array, or named arrays (.npz items)."""
    npz = sorted(items_dir.glob("*.npz"))
    if npz:
        parts = []
        for path in npz:
            with np.load(path) as f:
                parts.append({k: f[k] for k in f.files})
        return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    return np.concatenate([np.load(p) for p in sorted(items_dir.glob("*.npy"))])
