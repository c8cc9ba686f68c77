"""The line from a wrapped worker pool to its driver: the Parsl interchange it connects to.

A driver killed with SIGKILL takes its interchange with it (`dgaas_flow.lifetime`), but the
worker pool only notices when the interchange's heartbeats have been missing for
`heartbeat_threshold_s` (30 s by default), and meanwhile its pilot's server holds the node's GPU.
The pilot notices sooner: it reads the interchange's addresses and port from the pool's own
command line and connects to them every PROBE_S. An address that accepted once and now refuses
(the host answers, no process listens: the interchange has exited) for GONE_PROBES probes in a
row means the driver is gone; an address that does not answer at all (a network partition, a
busy host) proves nothing, and is left to Parsl's heartbeat.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Sequence

PROBE_S = 1.0
GONE_PROBES = 2
CONNECT_TIMEOUT_S = 1.0


def interchange_addresses(cmd: Sequence[str]) -> list[tuple[str, int]]:
    """(host, port) of the interchange named by a Parsl worker pool's command line (`-a A,B`
    or `--addresses=A,B`, and `--port=P` or `--port P`); [] when the command names none."""
    hosts: list[str] = []
    port: int | None = None
    args = list(cmd)
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("-a", "--addresses"):
            hosts = [h for h in following.split(",") if h]
        elif arg.startswith("--addresses="):
            hosts = [h for h in arg.split("=", 1)[1].split(",") if h]
        elif arg == "--port" and following.isdigit():
            port = int(following)
        elif arg.startswith("--port=") and arg.split("=", 1)[1].isdigit():
            port = int(arg.split("=", 1)[1])
    return [(h, port) for h in hosts] if port else []


def probe(address: tuple[str, int], timeout: float = CONNECT_TIMEOUT_S) -> bool | None:
    """True: something listens; False: the host refused (nothing listens); None: no answer."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False
    except OSError as exc:
        return False if exc.errno == errno.ECONNREFUSED else None


class InterchangeWatch:
    """Tells, from repeated probes, that the interchange a pool connected to has exited."""

    def __init__(self, addresses: list[tuple[str, int]], every_s: float = PROBE_S, gone_probes: int = GONE_PROBES):
        self.addresses, self.every_s, self.gone_probes = addresses, every_s, gone_probes
        self._seen: set[tuple[str, int]] = set()  # addresses that accepted once: the ones that count
        self._refused = 0
        self._next = 0.0

    def gone(self, now: float | None = None) -> bool:
        """Probe when due; True once every address that accepted before has refused for
        gone_probes probes in a row."""
        now = time.monotonic() if now is None else now
        if not self.addresses or now < self._next:
            return False
        self._next = now + self.every_s
        answers = {a: probe(a) for a in (self._seen or self.addresses)}
        accepting = {a for a, ok in answers.items() if ok}
        if accepting:
            self._seen |= accepting
            self._refused = 0
            return False
        if self._seen and all(answers[a] is False for a in self._seen):
            self._refused += 1
        else:
            self._refused = 0
        return self._refused >= self.gone_probes
