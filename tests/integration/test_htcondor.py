"""HTCondor: the digits workflow through a real personal pool (tests/clusters/htcondor: collector,
negotiator, schedd and startd of Debian's minicondor, unprivileged; 2 simulated GPUs). Each block is
an HTCondor job asking for a GPU; its pilot starts inside that job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from dgaas_flow.pilot.endpoint import read_registry
from tests.conftest import DIGITS, ROOT, WORKFLOW, copy_workflow, paced_workflow, run_cli, wait_for
from tests.integration.test_elastic import exactly_once
from tests.integration.test_faults import many_images, start_run

pytestmark = [pytest.mark.integration, pytest.mark.htcondor]
CLUSTER = ROOT / "tests" / "clusters" / "htcondor"
POOL_DIR = Path(os.environ.get("DGAAS_HTCONDOR_DIR", "/var/lib/dgaas-htcondor"))


def pool_env() -> dict[str, str]:
    """PATH (condor_* wrappers) and CONDOR_CONFIG as the pool's env.sh sets them."""
    out = subprocess.run(["bash", "-c", f". {POOL_DIR}/env.sh && env -0"], capture_output=True, check=True)
    env = dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)
    return {k: env[k] for k in ("PATH", "CONDOR_CONFIG")}


def condor_q(env: dict[str, str]) -> list[str]:
    out = subprocess.run(["condor_q", "-af", "JobStatus"], capture_output=True, text=True, env={**os.environ, **env})
    return out.stdout.split()


@pytest.fixture(scope="module")
def htcondor_pool():
    """Starts the pool (idempotent; the checkout is bound into its chroot) and fails loudly if it
    cannot; afterwards checks the queue drained and stops the pool if this fixture started it."""
    was_up = (POOL_DIR / "env.sh").exists() and subprocess.run(
        ["condor_q"], capture_output=True, env={**os.environ, **pool_env()}).returncode == 0
    started = subprocess.run(["bash", str(CLUSTER / "start.sh")], capture_output=True, text=True,
                             env={**os.environ, "DGAAS_HTCONDOR_BINDS": str(ROOT)})
    assert started.returncode == 0, f"the HTCondor test pool did not start:\n{started.stdout}\n{started.stderr}"
    env = pool_env()
    for flags in (["-all"], ["-forcex", "-all"]):  # an earlier run's leftovers (Parsl's leave_in_queue)
        subprocess.run(["condor_rm", *flags], capture_output=True, env={**os.environ, **env})
    wait_for(lambda: not condor_q(env), timeout=60, what="an empty queue")
    yield env
    deadline = time.monotonic() + 60
    while condor_q(env) and time.monotonic() < deadline:
        time.sleep(1)
    left = condor_q(env)
    if not was_up:
        subprocess.run(["bash", str(CLUSTER / "stop.sh")], capture_output=True)
    assert not left, f"jobs left in the queue: {left}"


def test_digits_through_the_pool_with_the_pilot_inside_the_job(htcondor_pool, tmp_path, digits_data):
    profile = ROOT / "providers" / "htcondor-local.yaml"
    text = WORKFLOW.read_text().replace("provider: local", f"provider: {profile}")
    path = copy_workflow(tmp_path / "wf", text, digits_data / "images")
    out = tmp_path / "run"
    result = run_cli("run", path, "--out", out, "--progress", "log", env=htcondor_pool)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items_ok"], summary["items_failed"]) == (1797, 0) and summary["accuracy"] >= 0.95
    (pilot,) = summary["pilots"]
    assert pilot["items"] == 1797 and pilot["state"] == "stopped"
    assert pilot["gpus"] and pilot["gpus"][0].startswith("GPU-")  # the slot's assigned GPU
    cluster, _ = pilot["batch_job"].split(".")  # read from the job ad inside the HTCondor job
    assert cluster in pool_jobs(cluster, htcondor_pool)


def pool_jobs(cluster: str, env: dict[str, str]) -> list[str]:
    """Cluster ids the pool knows for `cluster`, in its queue or its history."""
    found = []
    for cmd in (["condor_q", cluster], ["condor_history", cluster, "-limit", "1"]):
        out = subprocess.run([*cmd, "-af", "ClusterId"], capture_output=True, text=True, env={**os.environ, **env})
        found += out.stdout.split()
    return found


def reconfigure_startd(env: dict[str, str], lines: list[str]) -> None:
    """Add (or, with no lines, remove) startd settings in the pool's config and reconfigure."""
    path = POOL_DIR / "pool" / "etc" / "config.d" / "60-glidein-triton.conf"
    if lines:
        path.write_text("\n".join(lines) + "\n")
    else:
        path.unlink(missing_ok=True)
    subprocess.run(["condor_reconfig"], check=True, capture_output=True, env={**os.environ, **env})


def test_glideinwms_blocks_run_only_where_the_glidein_started_triton(htcondor_pool, tmp_path, digits_data):
    """The glidein path: the factory custom script runs as a glidein runs it (helpers: the documented-
    interface stand-ins of tests/glidein, since no factory can exist here); a glideinwms campaign's block
    does not match the slot while it advertises no Triton (a glidein with the switch off), then runs
    once the startd advertises what the script published, the way condor_startup.sh makes it do
    (startd config values, STARTD_ATTRS, STARTER_JOB_ENVIRONMENT); its tasks use that server."""
    from tests.glidein.test_glidein_scripts import STANDIN, condor_startup_view, make_glidein

    glidein = make_glidein(tmp_path / "glidein", STANDIN, GLIDEIN_USE_TRITON="True", TRITON_MODELS="digits",
                           TRITON_MODEL_REPOSITORY=str(DIGITS / "model_repository"), TRITON_LAUNCH="binary",
                           TRITON_REQUIRE_GPU="False")
    setup = glidein.setup()
    assert setup.returncode == 0, setup.stderr
    driver = None
    try:
        startd, published, job_env = condor_startup_view(glidein.config, glidein.condor_vars)
        profile = ROOT / "providers" / "glideinwms-local.yaml"
        text = WORKFLOW.read_text().replace("provider: local", f"provider: {profile}")
        out = tmp_path / "run"
        workflow = copy_workflow(tmp_path / "wf", text, digits_data / "images")
        driver = subprocess.Popen(
            [sys.executable, "-m", "dgaas_flow", "run", str(workflow), "--out", str(out), "--progress", "quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **htcondor_pool})
        wait_for(lambda: condor_q(htcondor_pool) == ["1"], timeout=60, what="an idle block")
        time.sleep(5)  # several negotiation cycles (1 s each): a slot without Triton never matches
        assert condor_q(htcondor_pool) == ["1"] and not (out / "results.jsonl").stat().st_size

        environment = " ".join(f"{k}={v}" for k, v in job_env.items())
        reconfigure_startd(htcondor_pool, [f"{k} = {v}" for k, v in startd.items()] + [
            f"STARTD_ATTRS = $(STARTD_ATTRS) {' '.join(published)}",
            f'STARTER_JOB_ENVIRONMENT = "{environment}"',
        ])
        _, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["items_ok"], summary["items_failed"]) == (1797, 0) and summary["accuracy"] >= 0.95
        assert summary["pilots"] == [{"endpoint": f"http://{glidein.config['TRITON_ADDRESS']}", "items": 1797}]

        # the gateway's collector source finds the same glidein through the real collector, as long as
        # the collector authenticated its startd as a trusted identity (this personal pool's daemons
        # authenticate as condor@family; a real pool's glideins as its pilot identity)
        def collector_targets(identity: str) -> list[str]:
            found = subprocess.run(
                [sys.executable, "-c", "import sys\nfrom dgaas_flow.gateway.targets import CollectorSource\n"
                 "targets = CollectorSource(identities=(sys.argv[1],)).targets()\n"
                 "print(*[f'{t.http[1]} {t.grpc[1]}' for t in targets], sep='\\n')", identity],
                capture_output=True, text=True, env={**os.environ, **htcondor_pool})
            assert found.returncode == 0, found.stderr
            return [line for line in found.stdout.split("\n") if line]

        ports = [glidein.config[k].rsplit(":", 1)[1] for k in ("TRITON_ADDRESS", "TRITON_GRPC_ADDRESS")]
        assert collector_targets("condor@family")[:1] == [" ".join(ports)]
        assert collector_targets("someone-else@*") == []  # an ad of an identity not trusted is no target
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        try:
            reconfigure_startd(htcondor_pool, [])
        finally:  # the glidein's server goes even if the pool cannot be reconfigured
            assert glidein.cleanup().returncode == 0


def test_a_block_with_a_walltime_drains_before_the_schedd_removes_it(htcondor_pool, tmp_path, digits_data,
                                                                       monkeypatch):
    """`walltime` on an HTCondor profile: the block's job carries a periodic_remove after it, and
    the block tells its pilot when that is (HTCondor does not tell a job), so the pilot drains
    `drain_s` before; replacement blocks take over, the campaign loses nothing, and the ended
    jobs leave the queue (the fixture checks it is empty afterwards)."""
    profile = tmp_path / "htcondor.yaml"
    profile.write_text((ROOT / "providers" / "htcondor-local.yaml").read_text() + '  walltime: "00:01:00"\n')
    text = WORKFLOW.read_text().replace("provider: local", f"provider: {profile}").replace(
        "chunk_size: auto", "chunk_size: 2") + "triton: {drain_s: 50}\n"
    images = many_images(tmp_path / "images", digits_data / "images", 4000)
    out = tmp_path / "run"
    for name, value in htcondor_pool.items():  # the driver (start_run) and condor_q below see the pool
        monkeypatch.setenv(name, value)
    driver = start_run(paced_workflow(tmp_path / "wf", text, images), out)
    try:
        wait_for(lambda: "(time() - EnteredCurrentStatus > 60)" in subprocess.run(
            ["condor_q", "-af:r", "PeriodicRemove"], capture_output=True, text=True).stdout,
            timeout=120, what="a block job removed after its walltime")
        _, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err
    exactly_once(out, 4000)
    pilots = read_registry(out / "pilots")
    drained = [e for e in pilots if e.draining_since is not None]
    assert drained, "no pilot drained"
    for e in drained:
        lifetime = e.ends_at - datetime.fromisoformat(e.started_at).timestamp()
        assert 50 < lifetime <= 61, "the pilot's block end is the job's start plus its walltime"
        assert e.draining_since < e.ends_at and e.state == "stopped"
    assert len(pilots) > 1, "replacement blocks took over"
