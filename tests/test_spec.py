"""Workflow and provider files: valid ones load; every mistake names file, line and field, and
the CLI exits 2 without a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dgaas_flow.errors import UserError
from dgaas_flow.specs import load_workflow
from tests.conftest import DIGITS, WORKFLOW, run_cli
from tests.jets import prepared_jets

GOOD = WORKFLOW.read_text()


@pytest.fixture
def workdir(tmp_path: Path, digits_data: Path) -> Path:
    """A copy of the digits workflow folder (model repository and images linked, not copied)."""
    (tmp_path / "model_repository").symlink_to(DIGITS / "model_repository")
    (tmp_path / "data").symlink_to(digits_data)
    return tmp_path


def write(workdir: Path, text: str, name: str = "workflow.yaml") -> Path:
    path = workdir / name
    path.write_text(text)
    return path


def test_example_workflow_loads_with_absolute_paths(digits_data):
    wf = load_workflow(WORKFLOW)
    assert wf.name == "digits"
    assert wf.provider.kind == "local" and wf.provider.name == "local"
    assert wf.model.repository == DIGITS / "model_repository"
    assert wf.inputs.files == str(DIGITS / "data/images/*/*.png")
    assert wf.client.protocol == "http"


def test_provider_override_and_inline_provider(workdir):
    path = write(workdir, GOOD.replace("provider: local", "provider: {kind: local, workers_per_node: 5}"))
    assert load_workflow(path).provider.workers_per_node == 5
    prof = write(workdir, "provider:\n  kind: local\n  workers_per_node: 3\n", "mine.yaml")
    assert load_workflow(path, provider=str(prof)).provider.workers_per_node == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("chunk_size: auto", "chunk_sise: auto"), r"workflow.yaml:\d+: chunk_sise: unknown field"),
        (GOOD.replace("protocol: http", "protocol: tcp"),
         r"workflow.yaml:\d+: client.protocol: Input should be 'http' or 'grpc' \(got 'tcp'\)"),
        (GOOD.replace("timeout_s: 30", "timeout_s: soon"), r"workflow.yaml:\d+: client.timeout_s: .*number"),
        (GOOD.replace("chunk_size: auto", "chunk_size: 0"),
         r"workflow.yaml:\d+: chunk_size: .*expected a number of items of at least 1, or auto \(got 0\)"),
        (GOOD.replace("name: digits\nprovider", "provider"), r"workflow.yaml(:\d+)?: name: required field is missing"),
        (GOOD.replace("  name: digits\n  repository", "  name: nosuch\n  repository"),
         r"workflow.yaml:\d+: model.name: no model 'nosuch' in .*model_repository \(it holds: digits\)"),
        (GOOD.replace("data/images/*/*.png", "data/nothing/*.png"),
         r"workflow.yaml:\d+: inputs.files: the glob .*data/nothing/\*.png matches no file"),
        (GOOD.replace("provider: local", "provider: no-such-site"),
         r"workflow.yaml:\d+: provider: no provider profile named 'no-such-site'; the profiles are: "
         r".*wilson-cluster.* \(looked for no-such-site.yaml in: "),
        (GOOD.replace("provider: local", "provider: {kind: pbs}"),
         r"workflow.yaml:\d+: provider: Input tag 'pbs' found using 'kind' does not match"),
        (GOOD.replace("provider: local", "provider: {kind: slurm, walltime: 2h}"),
         r"workflow.yaml:\d+: provider.walltime: String should match pattern"),
        (GOOD + "model: [unclosed\n", r"workflow.yaml:\d+: not valid YAML"),
        ("- just\n- a list\n", r"workflow.yaml: expected a mapping of workflow fields"),
    ],
    ids=["unknown-field", "bad-enum", "wrong-type", "bad-chunk-size", "missing-field", "missing-model", "empty-glob",
         "unknown-provider", "unknown-kind", "bad-walltime", "yaml-syntax", "not-a-mapping"],
)
def test_bad_workflow_message_names_file_line_and_field(workdir, text, expected):
    path = write(workdir, text)
    with pytest.raises(UserError, match=expected):
        load_workflow(path)
    result = run_cli("validate", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr


def test_unknown_field_points_at_its_line(workdir):
    path = write(workdir, GOOD.replace("  retries: 3", "  retries: 3\n  retires: 4"))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "retires" in t)
    with pytest.raises(UserError, match=rf"workflow.yaml:{line}: client.retires: unknown field"):
        load_workflow(path)


def test_unreadable_and_missing_files(tmp_path):
    missing = run_cli("run", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "nope.yaml: file not found" in missing.stderr
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = run_cli("validate", binary)
    assert result.returncode == 2 and "bin.yaml" in result.stderr and "Traceback" not in result.stderr


def test_bad_provider_file_is_named(workdir):
    bad = write(workdir, "provider:\n  kind: slurm\n  partiton: gpu\n", "site.yaml")
    result = run_cli("validate", bad)
    assert result.returncode == 2
    assert f"{bad}:3: provider.partiton: unknown field" in result.stderr
    path = write(workdir, GOOD.replace("provider: local", "provider: site.yaml"))
    result = run_cli("run", path)
    assert result.returncode == 2 and "site.yaml:3: provider.partiton" in result.stderr


def test_validate_reports_every_shipped_file_ok(digits_data, heavy_data):
    prepared_jets()
    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "providers").glob("*.yaml")) + sorted((root / "workflows").glob("*/workflow.yaml"))
    result = run_cli("validate", *files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(files)


def test_schema_is_json_schema_with_descriptions():
    workflow = json.loads(run_cli("schema", "workflow").stdout)
    assert workflow["additionalProperties"] is False
    assert {"name", "provider", "model", "inputs"} <= set(workflow["required"])
    provider = json.loads(run_cli("schema", "provider").stdout)
    kinds = {d["properties"]["kind"]["const"] for d in provider["$defs"].values() if "kind" in d.get("properties", {})}
    assert kinds == {"local", "slurm", "htcondor", "glideinwms"}


def test_providers_found_beside_the_workflow(workdir, monkeypatch, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(elsewhere)
    (workdir / "providers").mkdir()
    (workdir / "providers" / "mysite.yaml").write_text("provider:\n  kind: local\n  max_blocks: 4\n")
    path = write(workdir, GOOD.replace("provider: local", "provider: mysite"))
    wf = load_workflow(path)
    assert wf.provider.name == "mysite" and wf.provider.max_blocks == 4
    shutil.rmtree(workdir / "providers")
