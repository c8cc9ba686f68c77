"""`dgaas-flow validate` checks a workflow against its model's config.pbtxt and a sample of its data,
and says what is wrong with file, field and expectation: exit 2, no traceback, no pilot started."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dgaas_flow.specs.checks import read_config

ROOT = Path(__file__).resolve().parents[1]
JETS_CONFIG = ROOT / "workflows" / "jets" / "model_repository" / "jets" / "config.pbtxt"


def jets_folder(tmp_path: Path, points=(16, 3), dtype=np.float32, config_edit=None, **workflow) -> Path:
    repo = tmp_path / "repo" / "jets"
    repo.mkdir(parents=True)
    text = JETS_CONFIG.read_text()
    (repo / "config.pbtxt").write_text(config_edit(text) if config_edit else text)
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data" / "a.npz", points=rng.standard_normal((5, *points)).astype(dtype),
             feats=rng.standard_normal((5, 4)).astype(np.float32))
    wf = {"name": "jets", "model": {"name": "jets", "repository": "repo"},
          "inputs": {"files": "data/*.npz", "format": "npz", "tensors": {"points": "points", "features": "feats"}},
          "outputs": {"top_k": 0}, "chunk_size": 64}
    for key, value in workflow.items():
        wf[key] = {**wf.get(key, {}), **value} if isinstance(value, dict) else value
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    return tmp_path / "wf.yaml"


def validate(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dgaas_flow.cli", "validate", str(path)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_config_pbtxt_is_parsed_with_tritons_schema():
    config = read_config(JETS_CONFIG)
    assert [(t.name, t.datatype, t.shape) for t in config.info.inputs] == [("points", "FP32", (16, 3)),
                                                                             ("features", "FP32", (4,))]
    assert config.info.max_batch_size == 1024 and config.info.outputs[0].name == "probs"


def test_a_matching_two_input_workflow_is_ok(tmp_path):
    out = validate(jets_folder(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "ok (workflow jets" in out.stdout


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: jets_folder(p, inputs={"tensors": {"pts": "points", "features": "feats"}}),
     r"inputs.tensors.pts: the model has no input 'pts'"),
    (lambda p: jets_folder(p, outputs={"keep": ["logits"]}), r"outputs.keep: the model has no output 'logits'"),
    (lambda p: jets_folder(p, inputs={"tensors": {"points": "points", "features": "nope"}}),
     r"a.npz: no field 'nope' for model input features"),
    (lambda p: jets_folder(p, points=(8, 3)), r"a.npz: field points: shape \[8, 3\], but model input points takes "
     r"\[16, 3\]"),
    (lambda p: jets_folder(p, dtype=np.complex64), r"field points: complex64 values do not cast safely to model "
     r"input points \(FP32\)"),
    (lambda p: jets_folder(p, config_edit=lambda t: t.replace("TYPE_FP32", "TYPE_UINT8", 1)),
     r"field points: float32 values do not cast safely to model input points \(UINT8\)"),
    (lambda p: jets_folder(p, client={"batch_size": 4096}), r"client.batch_size: 4096 is more than the model's "
     r"max_batch_size 1024"),
])
def test_mismatches_exit_2_with_file_field_and_expectation(tmp_path, make, expected):
    out = validate(make(tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert re.search(expected, out.stderr), out.stderr


def test_an_oversized_yaml_is_refused_before_it_is_parsed(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: x\nitems:\n" + "  - 1\n" * 400_000)
    out = validate(big)
    assert out.returncode == 2 and "DGAAS_MAX_YAML_BYTES" in out.stderr and "Traceback" not in out.stderr


def test_run_refuses_a_mismatch_before_any_pilot_starts(tmp_path):
    path = jets_folder(tmp_path, points=(8, 3))
    out = subprocess.run([sys.executable, "-m", "dgaas_flow.cli", "run", str(path), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "shape [8, 3]" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()  # checked before the run folder, a block or a pilot was made
