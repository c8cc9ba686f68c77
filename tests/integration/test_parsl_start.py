"""The first block is submitted as soon as Parsl's executor is up, not at the strategy's next poll."""

from __future__ import annotations

import time
from pathlib import Path

import parsl
import pytest

from dgaas_flow.sites import LocalProviderSpec
from dgaas_flow.sites.executor import EXECUTOR_LABEL, load

pytestmark = pytest.mark.integration


def test_the_first_block_does_not_wait_a_strategy_period(tmp_path: Path):
    # a strategy period far longer than the wait below: a block submitted at Parsl's next poll fails
    spec = LocalProviderSpec(kind="local", workers_per_node=1, strategy_period_s=600)
    dfk = load(spec, tmp_path / "parsl", None, retries=0)
    try:
        executor = dfk.executors[EXECUTOR_LABEL]
        deadline = time.monotonic() + 120
        while not executor.blocks_to_job_id and time.monotonic() < deadline:
            time.sleep(0.05)
        assert executor.blocks_to_job_id, "no block was submitted in 120 s"
        assert dfk.job_status_poller.interval == 600  # later polls keep the profile's period
    finally:
        dfk.cleanup()
        parsl.clear()
