"""A gateway-only executor: its blocks start no pilot; the apps on them reach two real pilots
elsewhere through a real Envoy, with a token, by `triton_client()` alone."""

from __future__ import annotations

import numpy as np
import parsl
import pytest
from parsl import python_app
from parsl.config import Config

from dgaas_flow import pilot_executor
from dgaas_flow.sites import LocalProviderSpec
from tests.gateway.test_gateway import http_infer, images, successes, two_pilots_and_a_gateway

pytestmark = [pytest.mark.integration, pytest.mark.gateway, pytest.mark.apps]


def classify(batch: np.ndarray) -> tuple[np.ndarray, str]:
    from dgaas_flow import triton_client

    client = triton_client()
    return client.infer("digits", {"IMAGE": batch})["PROBABILITIES"], str(client.url)


def test_apps_reach_pilots_elsewhere_through_the_gateway(tmp_path, digits_data):
    with two_pilots_and_a_gateway(tmp_path / "servers") as servers:
        token = tmp_path / "token"
        token.write_text(servers.token(scope="triton.infer"))
        address = servers.gateway.state.http_url.split("://", 1)[1]
        direct = http_infer(servers.pilots[0].endpoint.http_url.split("://", 1)[1], images(64), None)
        before = [successes(p) for p in servers.pilots]
        executor = pilot_executor(LocalProviderSpec(kind="local", workers_per_node=2), gateway=address,
                                  token_file=token, label="clients", run_dir=tmp_path / "clients")
        parsl.load(Config(executors=[executor], run_dir=str(tmp_path / "parsl")))
        try:
            app = python_app(classify, executors=["clients"])
            results = [f.result() for f in [app(images(64)[i:i + 4]) for i in range(0, 64, 4)]]
        finally:
            parsl.dfk().cleanup()
            parsl.clear()
        served = [successes(p) - b for p, b in zip(servers.pilots, before, strict=True)]
    np.testing.assert_allclose(np.concatenate([probs for probs, _ in results]), direct, rtol=1e-5)
    assert {url for _, url in results} == {f"http://{address}"}  # the gateway, not a pilot of their own
    assert sum(served) >= 16 and all(n > 0 for n in served), served  # through Envoy, to both pilots
    assert not (tmp_path / "clients").exists()  # a gateway-only executor writes no pilot settings
