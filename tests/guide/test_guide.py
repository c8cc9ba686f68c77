"""docs/guide.md, run the way a reader runs it.

Every command of the guide (a line starting with `$ ` in a ```console block; a trailing `\\`
continues it on the next line) runs in the guide's order in one shell session, as if typed into
one terminal: it starts at the repository root with a fresh, empty HOME (so `~/wtag` is a
temporary folder and `dgaas-flow`'s default folders are the test's own), and `cd` and `export`
carry over from one command to the next. Each command must exit 0, or with N when its line ends
with `# exit N`. Every output line the guide shows under a command must match a line the command
printed, with numbers allowed to differ, the test's HOME standing for `/home/you` and this host's
name for `myhost`; `...` marks output left out.

Other checks keep the guide's text true: a block after `<!-- file: PATH -->` is docs/guide/PATH
exactly; the block after `<!-- diff: A B -->` is `diff -u A B`; the GPU model configuration (not
run here) is a valid Triton model configuration that matches the served one; no command hides in a
block the test does not run; and every section with commands is run by one of the tests below.

The SLURM step runs on the real test cluster (tests/clusters/slurm), the GlideinWMS step on the
real HTCondor pool (tests/clusters/htcondor) with the glidein's setup script run as
tests/integration/test_htcondor.py runs it; the guide says so where a reader's site differs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from tests.conftest import ROOT, processes_mentioning, wait_for

GUIDE = ROOT / "docs" / "guide.md"
EXAMPLE = ROOT / "docs" / "guide"
LOCAL, SLURM, GLIDEIN = ("0", "1", "2", "3", "4", "7"), ("5",), ("6",)
PREREQUISITES = ("0", "1", "2")  # the folder, the model and its repository
TIMEOUT_S = 300


# ------------------------------------------------------------------------------------ the guide


@dataclass
class Block:
    lang: str
    lines: list[str]
    marker: str | None  # the HTML comment right before the fence
    line: int


@dataclass
class Command:
    section: str
    text: str
    expect: int
    line: int
    shown: list[str] = field(default_factory=list)


def parse(text: str) -> tuple[list[Block], list[Command]]:
    blocks, commands = [], []
    lines = text.splitlines()
    section, marker, i = "", None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            number = re.match(r"## (\d+)\.", line)
            section = number.group(1) if number else line[3:].strip()
        if line.startswith("<!--"):
            start = i
            while "-->" not in lines[i]:
                i += 1
            marker = " ".join(x.strip() for x in lines[start:i + 1])[4:-3].strip()
            i += 1
            continue
        if line.startswith("```"):
            start, body = i, []
            i += 1
            while lines[i] != "```":
                body.append(lines[i])
                i += 1
            blocks.append(Block(line[3:].strip(), body, marker, start + 1))
            if line[3:].strip() == "console":
                commands += console_commands(section, body, start + 2)
        marker = None if line.strip() else marker
        i += 1
    return blocks, commands


def console_commands(section: str, body: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    continued = False
    for n, line in enumerate(body):
        if continued:
            commands[-1].text += "\n" + line
        elif line.startswith("$ "):
            commands.append(Command(section, line[2:], 0, first_line + n))
        elif commands:
            commands[-1].shown.append(line)
        continued = bool(commands) and line.endswith("\\") and not commands[-1].shown
    for c in commands:
        expect = re.search(r"\s#\s*exit\s+(\d+)\s*$", c.text)
        c.expect = int(expect.group(1)) if expect else 0
    return commands


BLOCKS, COMMANDS = parse(GUIDE.read_text())


def shown_pattern(line: str) -> re.Pattern | None:
    """A shown output line as a pattern: numbers may differ, `...` ends the part that must match."""
    if not line.strip() or line.strip() == "..." or line.strip().startswith("... "):
        return None
    head, dots, _ = line.partition("...")
    parts = re.split(r"(\d+(?:\.\d+)?|\s+)", head.rstrip())
    pattern = "".join(r"\d+(?:\.\d+)?" if p and p[0].isdigit() else r"\s+" if p.isspace() else re.escape(p)
                      for p in parts if p)
    return re.compile(pattern + (".*" if dots else r"\s*"))


# ------------------------------------------------------------------------------------ the terminal


@dataclass
class Ran:
    command: Command
    returncode: int
    output: str  # stdout and stderr, as the reader sees them, normalized (HOME, host name)
    seconds: float


class Terminal:
    """One shell session: each command runs in a fresh bash that restores the working folder and the
    exported variables the previous command left (like one terminal window)."""

    def __init__(self, home: Path, log: Path):
        self.home, self.log = home, log
        self.state = home.parent / "shell-state.sh"
        self.ran: dict[int, Ran] = {}
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DGAAS_", "TRITON_", "PARSL_", "PYTEST_")) and k != "VIRTUAL_ENV"}
        self.env = {**env, "HOME": str(home)}

    @property
    def cwd(self) -> Path:
        """The shell's working folder after the last command."""
        path = self.state.with_suffix(".cwd")
        return Path(path.read_text()) if path.exists() else ROOT

    def source(self, script: str) -> None:
        """Lines the next command's shell runs first, as a reader's login shell would (e.g. env.sh)."""
        with self.state.open("a") as f:
            f.write(script + "\n")

    def normalize(self, text: str) -> str:
        text = text.replace(str(self.home.resolve()), "/home/you").replace(str(self.home), "/home/you")
        return re.sub(rf"\b{re.escape(os.uname().nodename)}\b", "myhost", text)

    def run(self, index: int) -> Ran:
        command = COMMANDS[index]
        script = "\n".join([
            f'[ -f "{self.state}" ] && . "{self.state}"',
            command.text,
            "__guide_rc=$?",
            f"{{ export -p; printf 'cd -- %q\\n' \"$PWD\"; }} > \"{self.state}\"",
            f"printf %s \"$PWD\" > \"{self.state.with_suffix('.cwd')}\"",
            "exit $__guide_rc",
        ])
        started = time.monotonic()
        proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # a campaign stops its blocks and pilots on SIGTERM
            try:
                output, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate()
            output += f"\n[killed after {TIMEOUT_S} s]"
        ran = Ran(command, proc.returncode, self.normalize(output), time.monotonic() - started)
        self.ran[index] = ran
        with self.log.open("a") as f:
            f.write(f"$ {command.text}\n{output}[exit {proc.returncode}, {ran.seconds:.1f} s]\n\n")
        where = f"docs/guide.md:{command.line}: $ {command.text}"
        assert ran.returncode == command.expect, (
            f"{where}\nexited {ran.returncode}, the guide expects {command.expect}; output:\n{output[-6000:]}")
        printed = ran.output.splitlines()
        for line in command.shown:
            pattern = shown_pattern(line)
            assert pattern is None or any(pattern.fullmatch(p) for p in printed), (
                f"{where}\nthe guide shows the line\n  {line}\nbut the command printed nothing like it:\n"
                + ran.output[-6000:])
        return ran

    def run_sections(self, *sections: str) -> None:
        for index, command in enumerate(COMMANDS):
            if command.section in sections and index not in self.ran:
                self.run(index)

    def output(self, text: str, section: str | None = None) -> str:
        """The output of the last command run whose text contains `text`."""
        found = [r for r in self.ran.values() if text in r.command.text
                 and (section is None or r.command.section == section)]
        assert found, f"no command with {text!r} was run"
        return found[-1].output


@pytest.fixture(scope="module")
def terminal(tmp_path_factory):
    home = tmp_path_factory.mktemp("guide") / "home"
    home.mkdir()
    term = Terminal(home, home.parent / "transcript.txt")
    yield term
    for pilot_dir in (home / "wtag" / "pilot", home / "wtag" / "broken-pilot"):  # if a step failed halfway
        if pilot_dir.is_dir():
            subprocess.run([sys.executable, "-m", "dgaas_flow", "pilot", "stop", "--dir", str(pilot_dir)],
                           capture_output=True)
    print(f"guide transcript: {term.log}")
    # everything the guide started (servers, workers, glidein) names a path under its HOME
    deadline = time.monotonic() + 30
    while (left := processes_mentioning(str(home))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, "the guide's commands left processes running:\n" + "\n".join(left)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def summary(terminal: Terminal, run: str) -> dict:
    return json.loads((terminal.home / "wtag" / "runs" / run / "summary.json").read_text())


# ------------------------------------------------------------------------------------ the text


def test_every_command_is_in_a_console_block_that_a_test_runs():
    for block in BLOCKS:
        assert block.lang not in ("bash", "sh", "shell", "shell-session"), (
            f"docs/guide.md:{block.line}: commands go in ```console blocks, so the test runs them")
        if block.lang != "console":
            assert not [x for x in block.lines if x.startswith("$ ")], f"docs/guide.md:{block.line}: a `$ ` line"
    planned = set(LOCAL + SLURM + GLIDEIN)
    unplanned = [c for c in COMMANDS if c.section not in planned]
    assert not unplanned, f"commands in sections no test runs: {[(c.section, c.text) for c in unplanned]}"
    assert {c.section for c in COMMANDS} == planned
    assert len(COMMANDS) >= 25, len(COMMANDS)


def test_files_shown_are_the_example_files():
    shown = [b for b in BLOCKS if b.marker and b.marker.startswith("file:")]
    assert len(shown) >= 4
    for block in shown:
        path = EXAMPLE / block.marker.split(":", 1)[1].strip()
        assert block.lines == path.read_text().splitlines(), f"docs/guide.md:{block.line} differs from {path}"


def test_diff_shown_is_the_diff_of_the_two_scripts():
    (block,) = [b for b in BLOCKS if b.marker and b.marker.startswith("diff:")]
    a, b = block.marker.split(":", 1)[1].split()
    diff = subprocess.run(["diff", "-u", a, b], cwd=EXAMPLE, capture_output=True, text=True).stdout.splitlines()
    assert block.lines == diff[2:], "the diff in the guide is not `diff -u` of the scripts in docs/guide"


def test_gpu_variant_is_a_triton_config_matching_the_served_one():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from dgaas_flow.pilot.settings import TritonSettings

    def config(text: str):
        return text_format.Parse(text, model_config_pb2.ModelConfig())

    (gpu,) = [b for b in BLOCKS if b.marker and b.marker.startswith("gpu config")]
    served = config((EXAMPLE / "model_repository" / "wtag" / "config.pbtxt").read_text())
    variant = config("\n".join(gpu.lines))
    assert (variant.platform, served.backend) == ("onnxruntime_onnx", "python")
    assert [g.kind for g in variant.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    for attr in ("name", "max_batch_size", "input", "output", "dynamic_batching"):
        assert getattr(variant, attr) == getattr(served, attr), attr

    (triton,) = [b for b in BLOCKS if b.marker and b.marker.startswith("gpu triton")]
    settings = TritonSettings.model_validate(yaml.safe_load("\n".join(triton.lines))["triton"])
    assert settings.launch == "apptainer"


def test_shown_output_patterns():
    assert shown_pattern("  this run: 300 items in 9.6 s (31.3 items/s), 6 requests").fullmatch(
        "  this run: 12 items in 10.25 s (1.2 items/s), 1 requests")
    assert not shown_pattern("300/300 items ok, 0 failed").fullmatch("299/300 items ok, 1 failed, 3 lost")
    assert shown_pattern('error: x: "failed to load ... more').fullmatch('error: x: "failed to load anything')
    assert shown_pattern("...") is None and shown_pattern("  ...") is None


# ------------------------------------------------------------------------------------ the steps


@pytest.mark.integration
def test_from_the_script_to_a_campaign_on_this_machine(terminal):
    """Steps 0-4 and 7: the plain script, the repository, a standalone pilot and its client, the
    local campaign and its results, and the two failures the guide shows."""
    terminal.run_sections(*LOCAL[:3])
    wtag = terminal.home / "wtag"
    assert (wtag / "model_repository" / "wtag" / "1" / "model.onnx").is_file()
    assert sum(len(np.load(f)) for f in (wtag / "data").glob("*/jets.npy")) == 300
    local = terminal.output("classify_local.py")

    terminal.run_sections("3")
    assert terminal.output("classify_triton.py") == local  # the server gives the script's answers
    (status,) = json.loads(terminal.output("pilot status"))
    assert (status["state"], status["models"]) == ("ready", ["wtag"])
    wait_for(lambda: not alive(status["pid"]) and not alive(status["supervisor_pid"]), timeout=15,
             what="the stopped pilot's server and supervisor to exit")

    terminal.run_sections("4")
    s = summary(terminal, "wtag")
    right = int(re.search(r"for (\d+) of 300", local).group(1))
    assert (s["items_ok"], s["items_failed"], s["accuracy"]) == (300, 0, round(right / 300, 4))
    assert [p["items"] for p in s["pilots"]] == [300]
    assert "300 resumed from an earlier run" in terminal.output("dgaas-flow run workflow.yaml", "4")
    assert (wtag / "runs" / "wtag" / "report.html").is_file()

    terminal.run_sections("7")
    assert "typo.yaml:13: chunksize: unknown field" in terminal.output("validate typo.yaml")
    assert "failed to load 'wtag'" in terminal.output("--model-repository broken")


@pytest.mark.integration
@pytest.mark.slurm
def test_the_workflow_on_slurm(terminal, slurm_cluster):
    """Step 5 on the real SLURM test cluster, with the guide's own Wilson-Cluster-like profile."""
    terminal.run_sections(*PREREQUISITES)
    terminal.run_sections(*SLURM)
    rendered = terminal.output("dgaas-flow render")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=4"):
        assert line in rendered.splitlines()
    assert "dgaas_flow pilot wrap" in rendered
    s = summary(terminal, "wtag-slurm")
    assert (s["provider"], s["items_ok"], s["items_failed"]) == ("wilson-gpu", 300, 0)
    assert s["accuracy"] > 0.9
    assert s["pilots"] and all(p["batch_job"] and p["state"] == "stopped" for p in s["pilots"])
    assert sum(p["items"] for p in s["pilots"]) == 300


@pytest.mark.integration
@pytest.mark.htcondor
@pytest.mark.glidein
def test_the_workflow_on_a_glideinwms_pool(terminal, htcondor_pool, tmp_path):
    """Step 6 on the real HTCondor pool. The glidein: triton_setup.sh run the way a glidein runs it
    (tests/glidein stand-ins), then the startd advertises what it published, as in
    tests/integration/test_htcondor.py; the guide's commands then run unchanged."""
    from tests.glidein.test_glidein_scripts import STANDIN, condor_startup_view, make_glidein
    from tests.integration.test_htcondor import POOL_DIR, reconfigure_startd

    terminal.run_sections(*PREREQUISITES)
    glidein = make_glidein(tmp_path, STANDIN, GLIDEIN_USE_TRITON="True", TRITON_MODELS="wtag",
                           TRITON_MODEL_REPOSITORY=str(terminal.cwd / "model_repository"),
                           TRITON_LAUNCH="binary", TRITON_REQUIRE_GPU="False")
    setup = glidein.setup()
    assert setup.returncode == 0, setup.stdout + setup.stderr
    env = {**os.environ, **htcondor_pool}
    try:
        startd, published, job_env = condor_startup_view(glidein.config, glidein.condor_vars)
        environment = " ".join(f"{k}={v}" for k, v in job_env.items())
        reconfigure_startd(htcondor_pool, [f"{k} = {v}" for k, v in startd.items()] + [
            f"STARTD_ATTRS = $(STARTD_ATTRS) {' '.join(published)}",
            f'STARTER_JOB_ENVIRONMENT = "{environment}"',
        ])
        address = glidein.config["TRITON_ADDRESS"]
        wait_for(lambda: address in subprocess.run(
            ["condor_status", "-af", "TRITON_ADDRESS"], capture_output=True, text=True, env=env).stdout,
            timeout=60, what="the slot to advertise the glidein's Triton")

        terminal.source(f". {POOL_DIR}/env.sh")  # condor_* on PATH, as on a submit host
        terminal.run_sections(*GLIDEIN)
        assert f" {address} wtag" in terminal.output("condor_status")
        s = summary(terminal, "wtag-glidein")
        assert (s["provider"], s["items_ok"], s["items_failed"]) == ("glideinwms", 300, 0)
        assert s["pilots"] == [{"endpoint": f"http://{address}", "items": 300}]  # the glidein's server
    finally:
        reconfigure_startd(htcondor_pool, [])
        assert glidein.cleanup().returncode == 0
