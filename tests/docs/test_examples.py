"""Every example in the README and docs runs: each Python block of README.md and docs/*.md (the
guide has its own tests, tests/guide), and the README's command lines, in a folder of their own
where `workflows/` is this checkout's."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.jets import prepared_jets

pytestmark = pytest.mark.integration

FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "guide.md")]


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


PYTHON = [pytest.param(page, i, id=f"{page.name}-{i}") for page in PAGES for i in range(len(blocks(page, "python")))]


@pytest.fixture
def workdir(tmp_path: Path, digits_data) -> Path:
    """A user's folder: the examples' relative paths (workflows/...) resolve as in the checkout,
    whose examples are prepared."""
    prepared_jets()
    (tmp_path / "workflows").symlink_to(ROOT / "workflows")
    return tmp_path


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})


@pytest.mark.parametrize(("page", "index"), PYTHON)
def test_python_example_runs(page: Path, index: int, workdir: Path):
    (workdir / "example.py").write_text(blocks(page, "python")[index])
    result = run([sys.executable, "example.py"], workdir)
    assert result.returncode == 0, f"{page.name} example {index}:\n{result.stdout}\n{result.stderr}"


def test_readme_commands_run(workdir: Path):
    """The README's command lines, in order (the report reads the run before it)."""
    for block in blocks(ROOT / "README.md", "bash"):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if not command.startswith("dgaas-flow"):
                continue  # the two setup commands are what CI itself runs
            result = run(shlex.split(command), workdir)
            assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    assert (workdir / "runs" / "digits" / "report.html").is_file()
