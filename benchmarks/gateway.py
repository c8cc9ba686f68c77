"""Requests per second to two Triton pilots: direct (the ceiling) vs through the Envoy gateway
(every protection on: token check with its cache, per-subject quota, RBAC, body limit, load
balancing), in one run, on the same two pilots, with the same items.

    .venv/bin/python benchmarks/gateway.py [--seconds 3] [--threads 4] [--batch 1] [--protocol both]
                                           [--concurrency N]

Each case is a tight tritonclient loop in a few threads for a fixed time (after a short warm-up);
direct clients go round-robin over the two pilots, gateway clients send everything to the gateway,
which balances. Everything listens on 127.0.0.1. Each case also says where the CPU went: µs per
request of the clients (this process), the gateway (Envoy), the Triton servers and the model
(Python-backend stubs); on a machine whose cores the direct case already fills, the gateway's
share is taken from the others. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fanout_parts.cpu import CpuTracker  # noqa: E402
from dgaas_flow.gateway import Gateway, GatewaySettings, auth_headers, issue_token, tokens  # noqa: E402
from dgaas_flow.pilot.settings import PilotConfig  # noqa: E402
from dgaas_flow.pilot.supervisor import Pilot  # noqa: E402

DIGITS = ROOT / "workflows" / "digits"


def items(batch: int) -> np.ndarray:
    images = DIGITS / "data" / "images"
    if not (DIGITS / "model_repository" / "digits" / "1" / "weights.npz").exists() or not images.is_dir():
        subprocess.run([sys.executable, str(DIGITS / "prepare.py")], check=True)
    paths = sorted(images.glob("*/*.png"))[:batch]
    return np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.uint8) for p in paths])[:, None]  # N, C, H, W


def start_pilot(root: Path, index: int) -> Pilot:
    pilot = Pilot(PilotConfig(repository=DIGITS / "model_repository", models=["digits"],
                              registry=root / "pilots", log_dir=root / "logs"))
    pilot.name = f"{pilot.name}-{index}"  # one endpoint file per pilot of this process
    pilot.log_file = root / "logs" / f"{pilot.name}.log"
    pilot.endpoint_file = root / "pilots" / f"{pilot.name}.json"
    pilot.start()
    return pilot


def make_call(protocol: str, address: str, x: np.ndarray, token: str | None):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(address)
    inp = mod.InferInput("IMAGE", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)

    def call() -> None:
        headers = auth_headers(token) if token else None  # a fresh dict: tritonclient HTTP adds to it
        client.infer("digits", [inp], headers=headers)

    return call


def run_case(protocol: str, addresses: list[str], x: np.ndarray, token: str | None, threads: int,
             seconds: float, warmup: float = 0.5) -> dict:
    stop = threading.Event()
    measuring = threading.Event()
    counts, errors, latencies = [0] * threads, [0] * threads, [[] for _ in range(threads)]

    def worker(i: int) -> None:
        calls = [make_call(protocol, a, x, token) for a in addresses]
        k = i
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                calls[k % len(calls)]()
                ok = True
            except Exception:  # noqa: BLE001 - counted, the loop goes on
                ok = False
            k += 1
            if measuring.is_set():
                if ok:
                    counts[i] += 1
                    latencies[i].append(time.perf_counter() - t0)
                else:
                    errors[i] += 1

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    time.sleep(warmup)
    measuring.set()
    t0 = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in pool:
        t.join()
    lat = np.array([v for per in latencies for v in per]) * 1000
    return {
        "requests": sum(counts), "errors": sum(errors), "rps": sum(counts) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
    }


def with_cpu(cpu: CpuTracker, *case: object) -> dict:
    """`run_case(*case)`'s result with the CPU µs per request of each role over it (its warm-up
    included in the CPU, not in the requests counted: a small overcount)."""
    before = cpu.snapshot()
    result = run_case(*case)  # type: ignore[arg-type]
    after = cpu.snapshot()
    per = {("clients" if role == "driver" else role): (after[role] - before.get(role, 0.0)) * 1e6
           / max(result["requests"], 1) for role in after}
    result["cpu_us_per_request"] = {role: round(us, 1) for role, us in per.items() if us >= 0.05}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    parser.add_argument("--threads", type=int, default=4, help="client threads per case")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    parser.add_argument("--protocol", choices=["http", "grpc", "both"], default="both")
    parser.add_argument("--concurrency", type=int, help="Envoy worker threads (default: the gateway's)")
    args = parser.parse_args(argv)
    x = items(args.batch)
    protocols = ["http", "grpc"] if args.protocol == "both" else [args.protocol]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dgaas-bench-gateway-") as tmp:
        root = Path(tmp)
        keys = tokens.generate_keypair(root / "keys")
        pilots: list[Pilot] = []
        gateway = None
        try:
            pilots = [start_pilot(root, i) for i in range(2)]
            extra = {"concurrency": args.concurrency} if args.concurrency else {}
            gateway = Gateway(GatewaySettings(jwks=keys["jwks"], registry=[root / "pilots"], sync_interval_s=0.5,
                                              health_interval_s=0.5, **extra), root / "gateway")
            gateway.start()
            deadline = time.monotonic() + 30
            while sum(h["healthy"] for h in gateway.upstream_health()) < 4:
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway did not see both pilots healthy in 30 s")
                time.sleep(0.1)
            token = issue_token(keys["private"], sub="benchmark")
            cpu = CpuTracker(os.getpid(), str(root))
            for protocol in protocols:
                direct = [(p.endpoint.http_url if protocol == "http" else p.endpoint.grpc_url).split("://")[1]
                          for p in pilots]
                results[f"{protocol} direct"] = with_cpu(cpu, protocol, direct, x, None, args.threads,
                                                         args.seconds)
                results[f"{protocol} gateway"] = with_cpu(cpu, protocol, [gateway.address], x, token, args.threads,
                                                          args.seconds)
        finally:
            if gateway is not None:
                gateway.stop()
            for p in pilots:
                p.stop()

    print(f"{'case':<14} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        print(f"{name:<14} {r['requests']:>9} {r['rps']:>9.1f} {r['p50_ms'] or 0:>8.2f} {r['p99_ms'] or 0:>8.2f} "
              f"{r['errors']:>7}   CPU µs/request: "
              + ", ".join(f"{role} {us:.0f}" for role, us in r["cpu_us_per_request"].items()))
    summary = {
        "benchmark": "gateway", "pilots": 2, "threads": args.threads, "batch": args.batch,
        "envoy_concurrency": gateway.settings.concurrency,
        "seconds_per_case": args.seconds,
        "direct_rps": {p: round(results[f"{p} direct"]["rps"], 1) for p in protocols},
        "gateway_rps": {p: round(results[f"{p} gateway"]["rps"], 1) for p in protocols},
        "gateway_over_direct": {p: round(results[f"{p} gateway"]["rps"] / results[f"{p} direct"]["rps"], 3)
                                for p in protocols if results[f"{p} direct"]["rps"]},
        "cpu_us_per_request": {name: r["cpu_us_per_request"] for name, r in results.items()},
        "errors": sum(r["errors"] for r in results.values()),
    }
    print(json.dumps(summary))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
