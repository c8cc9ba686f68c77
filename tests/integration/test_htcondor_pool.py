"""The HTCondor test pool's host-side wrappers (tests/clusters/htcondor/start.sh writes them into
$DGAAS_HTCONDOR_DIR/bin): each must run a tool that exists where the pool runs it, in the chroot
(or on the host, in host mode). A first start once wrote them before the chroot existed, so that
condor_reconfig and condor_off pointed at /usr/bin instead of the chroot's /usr/sbin (exit 127)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_htcondor import CLUSTER, POOL_DIR, htcondor_pool  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.htcondor]


def wrapped_tools() -> set[str]:
    """The tools lib.sh says the pool wraps."""
    (names,) = re.findall(r'^WRAPPED_TOOLS="([^"]*)"', (CLUSTER / "lib.sh").read_text(), re.MULTILINE)
    return set(names.split())


def wrapper_target(wrapper: Path) -> tuple[str, str]:
    """(root, tool): the chroot ('' in host mode) and the tool's path in it, as the wrapper names them."""
    found = dict(re.findall(r"^(root|tool)=(.*?)(?: #.*)?$", wrapper.read_text(), re.MULTILINE))
    assert set(found) == {"root", "tool"}, f"{wrapper}: no root= and tool= lines"
    return found["root"], found["tool"]


def executable_in(root: str, tool: str) -> bool:
    """Whether `tool` is an executable file as seen from `root` (the chroot's own symlinks count)."""
    if not root:
        return os.path.isfile(tool) and os.access(tool, os.X_OK)
    return subprocess.run(["chroot", root, "/bin/sh", "-c", 'test -f "$1" && test -x "$1"', "sh", tool]).returncode == 0


def test_every_wrapper_runs_a_tool_that_exists_in_the_pool(htcondor_pool):  # noqa: F811
    wrappers = sorted((POOL_DIR / "bin").iterdir())
    assert {w.name for w in wrappers} == wrapped_tools()
    missing = []
    for wrapper in wrappers:
        root, tool = wrapper_target(wrapper)
        assert tool.startswith("/"), f"{wrapper}: tool={tool}"
        if not executable_in(root, tool):
            missing.append(f"{wrapper.name} -> {tool} (in {root or 'the host'})")
        # and the wrapper really gets to it: every wrapped tool answers -version, with its version
        # or its usage; none of them acts on it
        ran = subprocess.run([str(wrapper), "-version"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **htcondor_pool})
        assert ran.returncode not in (126, 127) and "failed to execute" not in ran.stderr, (
            f"{wrapper.name} -version: exit {ran.returncode}\n{ran.stderr}")
    assert not missing, "wrappers pointing at no executable:\n" + "\n".join(missing)
