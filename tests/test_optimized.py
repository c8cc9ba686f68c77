"""`python -O` only where its bytecode is cached or can be written (dgaas_flow.optimized): a read-only
environment without it would compile every module at every start."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgaas_flow import optimized
from tests.conftest import run_cli


@pytest.fixture
def probe(tmp_path: Path, monkeypatch) -> Path:
    """A package standing for Parsl; returns where its optimized bytecode would be cached."""
    package = tmp_path / "probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(optimized, "PROBE", "probe_pkg")
    return Path(importlib.util.cache_from_source(str(package / "__init__.py"), optimization=1))


def test_cached_bytecode_pays_even_where_none_may_be_written(probe: Path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert not optimized.pays()
    probe.parent.mkdir()
    probe.write_bytes(b"")
    assert optimized.pays()


def test_bytecode_python_may_write_at_the_first_start_pays(probe: Path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert optimized.pays()


def test_an_environment_without_the_package_runs_plain(monkeypatch):
    monkeypatch.setattr(optimized, "PROBE", "no_such_package_here")
    assert not optimized.pays()
    assert optimized.command(sys.executable, "json.tool") == [sys.executable, "-m", "json.tool"]


def test_the_node_side_launcher_runs_the_module_with_its_arguments(tmp_path: Path):
    (tmp_path / "show_flags.py").write_text("import sys\nprint(sys.flags.optimize, sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run([sys.executable, "-m", "dgaas_flow.optimized", "show_flags", "a b", "--x"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{int(optimized.pays())} ['a b', '--x']"


class Exec(Exception):
    pass


@pytest.fixture
def execs(monkeypatch):
    """os.execv raises Exec(path, argv) instead, where the bytecode is cached."""
    def execv(path: str, argv: list[str]):
        raise Exec(path, argv)

    monkeypatch.setattr(optimized.os, "execv", execv)
    monkeypatch.setattr(optimized, "pays", lambda: True)


def test_the_command_starts_again_optimized_with_the_same_arguments(execs, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/dgaas-flow", "run", "w.yaml", "--limit", "5"])
    with pytest.raises(Exec) as started:
        optimized.cli()
    assert started.value.args == (sys.executable, [sys.executable, "-O", "-m", "dgaas_flow", "run", "w.yaml",
                                                   "--limit", "5"])


def test_a_command_that_imports_no_parsl_runs_as_started(execs, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/dgaas-flow", "schema", "workflow"])
    with pytest.raises(SystemExit) as ended:
        optimized.cli()
    assert ended.value.code == 0 and '"title": "Workflow"' in capsys.readouterr().out


def test_the_restarted_command_keeps_its_name_and_exit_status(tmp_path: Path):
    result = run_cli("render", tmp_path / "missing.yaml")  # a Parsl command: started again where -O pays
    assert result.returncode == 2 and f"error: {tmp_path / 'missing.yaml'}: file not found" in result.stderr
    assert run_cli("render", "--help").stdout.startswith("usage: dgaas-flow render ")
