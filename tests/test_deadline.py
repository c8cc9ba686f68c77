"""When a block ends, as the pilot learns it (no scheduler needed)."""

from __future__ import annotations

from datetime import datetime

from dgaas_flow.pilot.deadline import ad_attribute, block_end, parse_slurm_time, with_drain_period


def test_slurm_end_time_is_local_iso():
    assert parse_slurm_time("2026-12-02T20:21:16\n") == datetime(2026, 12, 2, 20, 21, 16).timestamp()
    assert parse_slurm_time("N/A") is None and parse_slurm_time("") is None


def test_order_env_then_glidein_then_lifetime(tmp_path):
    ad = tmp_path / "machine.ad"
    ad.write_text('Name = "slot1@node"\nGLIDEIN_ToDie = 1800000000\n')
    assert ad_attribute(str(ad), "GLIDEIN_ToDie") == 1800000000
    assert block_end({"DGAAS_BLOCK_END": "1700000000", "_CONDOR_MACHINE_AD": str(ad)}) == (1700000000.0,
                                                                                          "DGAAS_BLOCK_END")
    assert block_end({"_CONDOR_MACHINE_AD": str(ad)})[0] == 1800000000
    assert block_end({}, lifetime_s=60, started=1000.0) == (1060.0, "triton.block_lifetime_s")
    assert block_end({}) == (None, "unknown")


def test_the_worker_pool_is_asked_to_drain():
    cmd = ["python", "-m", "pool", "--drain_period=None", "--port=1"]
    assert with_drain_period(cmd, 41.7) == ["python", "-m", "pool", "--drain_period=41", "--port=1"]
    assert with_drain_period(cmd, -5)[3] == "--drain_period=1"
