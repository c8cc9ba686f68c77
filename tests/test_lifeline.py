"""The pilot's watch on its worker pool's interchange (real sockets on the loopback)."""

from __future__ import annotations

import socket

from dgaas_flow.pilot.lifeline import InterchangeWatch, interchange_addresses, probe


def test_addresses_come_from_the_worker_pools_command_line():
    cmd = ["python", "-m", "pool", "--max_workers_per_node=2", "-a", "10.0.0.1,127.0.0.1", "-p", "2",
           "--port=54321", "--cert_dir", "None"]
    assert interchange_addresses(cmd) == [("10.0.0.1", 54321), ("127.0.0.1", 54321)]
    assert interchange_addresses(["x", "--addresses=h", "--port", "7"]) == [("h", 7)]
    assert interchange_addresses(["sleep", "300"]) == []


def listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_gone_only_after_an_address_that_accepted_refuses_repeatedly():
    server = listening()
    address = server.getsockname()
    watch = InterchangeWatch([address], every_s=0.0, gone_probes=2)
    assert probe(address) is True
    assert not watch.gone()
    server.close()
    assert probe(address) is False
    assert not watch.gone()  # one refusal is not enough
    assert watch.gone()


def test_an_address_that_never_accepted_proves_nothing():
    closed = listening()
    address = closed.getsockname()
    closed.close()
    watch = InterchangeWatch([address], every_s=0.0, gone_probes=1)
    assert not any(watch.gone() for _ in range(3))


def test_no_addresses_never_gone():
    assert not InterchangeWatch([], every_s=0.0).gone()
