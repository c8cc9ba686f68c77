"""Two executors, as a site with scarce GPUs runs them: pilot blocks on the GPU partition of the
real single-node SLURM cluster (profile slurm-local), scaled by the autoscaler on Triton's queue
time, and CPU client blocks (local) whose apps reach the pilots only through a real Envoy gateway
with a token, scaled by Parsl on their own backlog. The pilot executor runs no task at all."""

from __future__ import annotations

import json

import parsl
import pytest
from parsl import python_app
from parsl.config import Config

from dgaas_flow import autoscaling, pilot_executor
from dgaas_flow.gateway import Gateway, GatewaySettings, issue_token, tokens
from dgaas_flow.pilot.endpoint import read_registry
from dgaas_flow.sites import LocalProviderSpec
from tests.conftest import DIGITS, wait_for
from tests.integration.test_elastic import AUTOSCALE
from tests.integration.test_slurm import PROFILE, slurm_cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.gateway, pytest.mark.slurm, pytest.mark.elastic,
              pytest.mark.usefixtures("slurm_cluster")]


def burst(seconds: float) -> int:
    """Requests of 16 images to whatever `triton_client()` finds (here: the gateway) for `seconds`."""
    import time

    import numpy as np

    from dgaas_flow import triton_client

    client, batch, sent = triton_client(), np.zeros((16, 8, 8), np.uint8), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        client.infer("digits", {"IMAGE": batch})
        sent += 1
    return sent


def test_gpu_pilots_scale_on_queue_time_while_cpu_clients_reach_them_through_the_gateway(tmp_path, digits_data):
    profile = tmp_path / "gpu.yaml"
    profile.write_text(PROFILE.read_text() + AUTOSCALE)
    gpu = pilot_executor(profile, repository=DIGITS / "model_repository", models=["digits"], label="gpu",
                         run_dir=tmp_path / "gpu")
    registry = tmp_path / "gpu" / "pilots"
    keys = tokens.generate_keypair(tmp_path / "keys")
    token = tmp_path / "token"
    token.write_text(issue_token(keys["private"], sub="tester", scope="triton.infer"))
    settings = GatewaySettings(jwks=keys["jwks"], registry=[registry], sync_interval_s=0.3, health_interval_s=0.5,
                               health_timeout_s=0.5)
    decisions = tmp_path / "autoscale.jsonl"
    with Gateway(settings, tmp_path / "gateway") as gateway:
        address = gateway.address
        cpu = pilot_executor(LocalProviderSpec(kind="local", workers_per_node=4), gateway=address, token_file=token,
                             label="cpu", run_dir=tmp_path / "cpu")
        parsl.load(Config(executors=[gpu, cpu], run_dir=str(tmp_path / "parsl"), strategy_period=0.5))
        try:
            wait_for(lambda: any(h["healthy"] for h in gateway.upstream_health()), timeout=120,
                     what="the first pilot behind the gateway")
            with autoscaling(gpu, clients=cpu, log=decisions):
                app = python_app(burst, executors=["cpu"])
                sent = [f.result() for f in [app(0.5) for _ in range(120)]]  # about 15 s of load on 4 workers
                wait_for(lambda: "scale_in" in decisions.read_text(), timeout=120, what="the idle block released")
                wait_for(lambda: gpu.active_blocks() == 1, timeout=60, what="one pilot block left")
        finally:
            parsl.dfk().cleanup()
            parsl.clear()
    assert all(n > 0 for n in sent)
    made = [json.loads(line) for line in decisions.read_text().splitlines()]
    # one block more under the load, released once it stops: no flapping while pilots publish
    # their counters every 5 s (triton.health_interval_s) and the autoscaler ticks every 0.5 s
    assert [(d["action"], d["blocks_before"], d["blocks_after"]) for d in made] == [("scale_out", 1, 2),
                                                                                   ("scale_in", 2, 1)]
    served = {e.block for e in read_registry(registry) if e.metrics.get("model/digits/requests", 0) > 0}
    assert served == {"0", "1"}, "the added pilot took traffic through the gateway"
