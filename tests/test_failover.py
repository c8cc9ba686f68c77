"""Where a request goes when the node's pilot no longer serves (synthetic registries)."""

from __future__ import annotations

import os
import random
import socket
import time

from dgaas_flow.pilot.discovery import failover_endpoints, reachable_from
from dgaas_flow.pilot.endpoint import ENV_ENDPOINT_FILE, Endpoint


def publish(registry, name, state="ready", host=None, url=None, **fields):
    e = Endpoint(name=name, state=state, host=host or socket.gethostname(), supervisor_pid=os.getpid(),
                 http_url=url or f"http://127.0.0.1:{1000 + len(name)}", heartbeat_at=time.time(),
                 heartbeat_every_s=5.0, **fields)
    e.write(registry / f"{name}.json")
    return e


def test_other_serving_pilots_this_host_reaches_then_the_gateway(tmp_path):
    own = publish(tmp_path, "own")
    a = publish(tmp_path, "a")
    publish(tmp_path, "draining", state="draining")
    publish(tmp_path, "stopped", state="stopped")
    publish(tmp_path, "elsewhere-loopback", host="node7")
    far = publish(tmp_path, "elsewhere-open", host="node8", url="http://10.1.2.3:8000")
    env = {ENV_ENDPOINT_FILE: str(tmp_path / "own.json"), "DGAAS_GATEWAY_URL": "gw:9000"}
    found = failover_endpoints(env, rng=random.Random(1))
    assert {e.name for e in found[:-1]} == {"a", "elsewhere-open"}
    assert found[-1].http_url == "http://gw:9000"
    assert own.http_url not in {e.http_url for e in found}
    assert [e.name for e in failover_endpoints(env, exclude={a.http_url})[:-1]] == ["elsewhere-open"]
    assert reachable_from(far, "here") and not reachable_from(Endpoint(host="x", http_url="http://127.0.0.1:1"), "y")


def test_nothing_to_fail_over_to_without_a_registry_or_gateway():
    assert failover_endpoints({}) == []
