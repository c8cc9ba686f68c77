"""What elastic pilots cost at scale, on paper and in simulation: 1,000 (or --pilots) synthetic
endpoint files with Triton counters in one registry folder, then

- one autoscaler decision: read the registry (what Session._autoscale does each tick) and feed the
  serving pilots' counters to the controller (campaign.autoscaler.Autoscaler.observe);
- one gateway sync: the registry source's targets (gateway.targets.RegistrySource) and the EDS
  file Envoy watches (gateway.envoy.write_eds);
- how long a change in the pilot set takes to reach Envoy's EDS file: the gateway re-reads its
  sources every sync_interval_s, so at most that plus one sync (Envoy applies a moved EDS file at
  once, through its file watch); measured here as the sync cost, the interval being a setting.

    .venv/bin/python benchmarks/elastic.py [--pilots 1000] [--repeat 20]

Prints one JSON object; no server is started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from dgaas_flow.campaign.autoscaler import Autoscaler
from dgaas_flow.gateway import envoy as envoy_config
from dgaas_flow.gateway.targets import RegistrySource
from dgaas_flow.pilot.endpoint import Endpoint, read_registry
from dgaas_flow.sites.base import AutoscaleSpec


def publish(registry: Path, n: int, tick: int) -> None:
    now = time.time()
    for i in range(n):
        ip = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
        Endpoint(name=f"dgaas-node{i:05d}-1", host=f"node{i:05d}", supervisor_pid=1, state="ready",
                 http_url=f"http://{ip}:8000", grpc_url=f"grpc://{ip}:8001", metrics_url=f"http://{ip}:8002/metrics",
                 models=["digits"], gpus=["0"], batch_job=str(1000 + i), heartbeat_at=now, heartbeat_every_s=5.0,
                 metrics={"requests": 1000.0 * tick, "executions": 100.0 * tick, "queue_us": 3.0e6 * tick,
                          "inferences": 64000.0 * tick, "compute_infer_us": 1.0e6 * tick},
                 ).write(registry / f"dgaas-node{i:05d}-1.json")


def timed(fn, repeat: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pilots", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        registry, eds = Path(tmp, "pilots"), Path(tmp, "eds")
        registry.mkdir()
        eds.mkdir()
        t0 = time.perf_counter()
        publish(registry, args.pilots, 1)
        write_s = time.perf_counter() - t0

        read_s, endpoints = timed(lambda: [e for e in read_registry(registry) if e.serving()], args.repeat)
        ctl = Autoscaler(AutoscaleSpec(target=20, window_s=30), min_blocks=1, max_blocks=args.pilots + 1)
        clock = [0.0]

        def observe():
            clock[0] += 2.0
            counters = {e.key: {k: v * clock[0] for k, v in e.metrics.items()} for e in endpoints}
            return ctl.observe(clock[0], counters, blocks=args.pilots, waiting=10)

        observe_s, _ = timed(observe, args.repeat)
        source = RegistrySource(registry)
        targets_s, targets = timed(source.targets, args.repeat)
        version = [0]

        def write():
            version[0] += 1
            envoy_config.write_eds(eds, targets, version[0])

        eds_s, _ = timed(write, args.repeat)
        eds_bytes = sum(p.stat().st_size for p in eds.iterdir())
    print(json.dumps({
        "pilots": args.pilots,
        "write_all_endpoint_files_s": round(write_s, 3),
        "decision": {"read_registry_s": round(read_s, 4), "controller_observe_s": round(observe_s, 5),
                     "total_s": round(read_s + observe_s, 4)},
        "gateway_sync": {"registry_targets_s": round(targets_s, 4), "write_eds_s": round(eds_s, 4),
                         "total_s": round(targets_s + eds_s, 4), "eds_bytes": eds_bytes, "targets": len(targets)},
        "change_to_envoy_s": {"at_most": "sync_interval_s (2 s default) + gateway_sync.total_s",
                              "with_default_interval": round(2.0 + targets_s + eds_s, 3)},
    }, indent=2))


if __name__ == "__main__":
    main()
