"""Where the gateway finds pilots, without servers: endpoint files and HTCondor collector ads."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from dgaas_flow.gateway.targets import (
    COLLECTOR_CONSTRAINT,
    CollectorSource,
    RegistrySource,
    Target,
    ad_target,
    collect,
    split_address,
)
from dgaas_flow.pilot.endpoint import Endpoint


def test_split_address_forms():
    assert split_address("http://node1:8000") == ("node1", 8000)
    assert split_address("grpc://10.1.2.3:8001") == ("10.1.2.3", 8001)
    assert split_address("node1.fnal.gov:8000") == ("node1.fnal.gov", 8000)
    assert split_address("[::1]:8000") == ("::1", 8000)


def test_collector_ad_to_target():
    """What a glidein's setup script publishes in its startd ad (TRITON_ADDRESS as the README and
    pilot discovery use it: host:port, optionally with a scheme)."""
    here = socket.gethostname()
    ad = {"Name": f"slot1@glidein_123@{here}", "Machine": here, "TRITON_ADDRESS": "127.0.0.1:8000",
          "TRITON_GRPC_ADDRESS": "grpc://127.0.0.1:8001", "GLIDEIN_Site": "FNAL"}
    t = ad_target(ad)
    assert t == Target(http=("127.0.0.1", 8000), grpc=("127.0.0.1", 8001))
    assert t.name == f"slot1@glidein_123@{here}" and t.source == "collector:FNAL"
    http_only = ad_target({"Machine": here, "TRITON_ADDRESS": "http://127.0.0.1:8000"})
    assert http_only.http == ("127.0.0.1", 8000) and http_only.grpc is None and http_only.name == here
    # loopback means "on that worker node": not reachable from here, whatever listens on the port here
    assert ad_target({**ad, "Machine": "wn042.example.org"}) is None
    assert ad_target({"Machine": "wn042", "TRITON_ADDRESS": "10.1.2.3:8000"}).http == ("10.1.2.3", 8000)
    assert ad_target({"Name": "x", "TRITON_ADDRESS": "no-port"}) is None
    assert ad_target({"Name": "x"}) is None
    resolved = ad_target({"Name": "x", "TRITON_ADDRESS": "localhost:8000"})
    assert resolved.http[0] in ("127.0.0.1", "::1") and resolved.hostname == "localhost"  # EDS needs IPs
    assert ad_target({"Name": "x", "TRITON_ADDRESS": "no-such-host.invalid:8000"}) is None


def test_collector_source_queries_with_constraint_and_merges_slots_of_one_glidein():
    asked = []

    def query(pool, constraint):
        asked.append((pool, constraint))
        who = {"AuthenticatedIdentity": "glidein@pool.example"}
        same = {"TRITON_ADDRESS": "127.0.0.1:8000", "TRITON_GRPC_ADDRESS": "127.0.0.1:8001", **who}
        return [{"Name": "slot1_1@g1", **same}, {"Name": "slot1_2@g1", **same},
                {"Name": "slot1@g2", "TRITON_ADDRESS": "127.0.0.2:8000", **who}, {"Name": "no-triton", **who}]

    source = CollectorSource(pool="cm.example:9618", query=query, identities=("glidein@pool.example",))
    assert asked == [] and len(source.targets()) == 3
    assert asked == [("cm.example:9618", COLLECTOR_CONSTRAINT)]
    assert COLLECTOR_CONSTRAINT == "TRITON_ADDRESS =!= undefined"
    assert [t.http for t in collect([source])] == [("127.0.0.1", 8000), ("127.0.0.2", 8000)]


def test_registry_source_keeps_only_ready_pilots_that_are_alive(tmp_path: Path):
    def publish(name, state, port, supervisor_pid=None, host=None, ip="127.0.0.1"):
        supervisor_pid = supervisor_pid or os.getpid()
        host = host or socket.gethostname()
        Endpoint(http_url=f"http://{ip}:{port}", grpc_url=f"grpc://{ip}:{port + 1}", state=state,
                 supervisor_pid=supervisor_pid, host=host).write(tmp_path / f"{name}.json")

    publish("ready", "ready", 8000)
    publish("starting", "starting", 8010)
    publish("stopped", "stopped", 8020)
    publish("restarting", "restarting", 8030)
    publish("dead", "ready", 8040, supervisor_pid=2**22 + 12345)  # killed: its file still says ready
    publish("remote", "ready", 8050, supervisor_pid=2**22 + 12345, host="another-node", ip="10.9.8.7")
    lost = Endpoint(http_url="http://10.9.8.6:8060", grpc_url="grpc://10.9.8.6:8061", state="ready",
                    host="lost-node", heartbeat_at=time.time() - 3600, heartbeat_every_s=5.0)
    lost.write(tmp_path / "lost.json")  # its node died without a word: its heartbeat stopped an hour ago
    (tmp_path / "garbage.json").write_text("{not json")
    targets = RegistrySource(tmp_path).targets()
    assert sorted(t.http[1] for t in targets) == [8000, 8050]
    assert all(t.grpc == (t.http[0], t.http[1] + 1) for t in targets)


def test_collect_reports_a_failing_source_and_keeps_the_others(tmp_path):
    class Broken:
        name = "collector"

        def targets(self):
            raise RuntimeError("collector unreachable")

    Endpoint(http_url="http://127.0.0.1:8000", state="ready").write(tmp_path / "a.json")
    errors: list[str] = []
    targets = collect([Broken(), RegistrySource(tmp_path)], errors)
    assert [t.http for t in targets] == [("127.0.0.1", 8000)]
    assert errors == ["collector: RuntimeError: collector unreachable"]


def test_collect_sorts_and_merges_http_only_and_grpc_only_pilots():
    class Static:
        name = "static"

        def targets(self):
            return [Target(http=None, grpc=("127.0.0.1", 9001)), Target(http=("127.0.0.1", 8000), grpc=None),
                    Target(http=("127.0.0.1", 8000), grpc=None, name="duplicate")]

    assert collect([Static()]) == [Target(http=None, grpc=("127.0.0.1", 9001)),
                                   Target(http=("127.0.0.1", 8000), grpc=None)]


def test_a_registry_pilot_on_another_host_advertising_loopback_is_not_a_target(tmp_path: Path):
    Endpoint(http_url="http://127.0.0.1:8000", host="wn042.example.org", state="ready").write(tmp_path / "a.json")
    Endpoint(http_url="http://10.1.2.3:8000", host="wn043.example.org", state="ready").write(tmp_path / "b.json")
    assert [t.http for t in RegistrySource(tmp_path).targets()] == [("10.1.2.3", 8000)]
