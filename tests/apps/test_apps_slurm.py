"""Own apps on SLURM: two blocks of the single-node test cluster, each with its own pilot serving
both models; every app is served by its own block's pilot."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dgaas_flow import Session
from dgaas_flow.pilot.endpoint import read_registry
from tests.integration.test_slurm import PROFILE, slurm_cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.apps, pytest.mark.slurm]


def both_models(seed: int) -> tuple[str | None, str, np.ndarray, np.ndarray]:
    import os
    import time

    import numpy as np

    from dgaas_flow import triton_client

    rng = np.random.default_rng(seed)
    client = triton_client()
    digits = client.infer("digits", {"IMAGE": rng.integers(0, 16, (2, 8, 8), dtype=np.uint8)})
    points, features = rng.standard_normal((2, 16, 3)).astype(np.float32), rng.standard_normal((2, 4))
    jets = client.infer("jets", {"points": points, "features": features})
    time.sleep(0.2)  # long enough that both blocks' workers take some of the apps
    return os.environ.get("PARSL_WORKER_BLOCK_ID"), str(client.url), digits["PROBABILITIES"], jets["probs"]


def test_each_blocks_apps_use_their_own_pilot(slurm_cluster, tmp_path, two_models):  # noqa: F811
    with Session(provider=PROFILE, repository=two_models, models=["digits", "jets"], out=tmp_path / "s") as session:
        pilots = session.wait_ready(timeout_s=300, pilots=2)
        futures = [session.submit(both_models, seed) for seed in range(40)]
        results = [f.result() for f in futures]
    by_block = {p.block: p.http_url for p in pilots}
    assert len(by_block) == 2 and len(set(by_block.values())) == 2
    for block, url, digits, jets in results:
        assert url == by_block[block], (block, url, by_block)  # the node's own pilot, found by discovery
        assert digits.shape == (2, 10) and jets.shape == (2, 3)
    assert set(Counter(block for block, *_ in results)) == set(by_block)  # both blocks served apps
    assert all(sorted(p.models) == ["digits", "jets"] for p in read_registry(session.registry))
