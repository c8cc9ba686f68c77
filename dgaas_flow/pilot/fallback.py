"""A task's last resort when no pilot serves it (CMS SONIC's local fallback): a Triton server on
the worker's own node, on its CPUs, started from the session's pilot settings (`pilot.json`).

One per node: the first worker that needs it starts `dgaas-flow pilot serve` under a lock in the
session's registry, and publishes it there (block `fallback`, on the loopback), so the node's
other workers find it as a serving pilot (discovery's fail-over) instead of starting their own.
It stops, cleanly, when the worker that started it ends (`--watch-pid`)."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from pydantic import ValidationError

from dgaas_flow.errors import PilotError
from dgaas_flow.pilot.endpoint import ENV_ENDPOINT_FILE, Endpoint, read_registry
from dgaas_flow.pilot.settings import PilotConfig

FALLBACK_BLOCK = "fallback"


def serving_fallback(registry: Path) -> Endpoint | None:
    """This node's fallback server, if one serves."""
    here = socket.gethostname()
    return next((e for e in read_registry(registry) if e.block == FALLBACK_BLOCK and e.host == here and e.serving()),
                None)


def local_fallback(settings_file: Path) -> Endpoint:
    """This node's fallback server, started if none serves; PilotError when it cannot start."""
    from dgaas_flow.pilot.run import start_daemon

    try:
        config = PilotConfig.model_validate_json(Path(settings_file).read_text())
    except (OSError, ValidationError) as exc:
        raise PilotError(f"no local fallback: cannot read the pilot settings {settings_file}: {exc}") from None
    registry = config.registry or Path(settings_file).parent / "pilots"
    registry.mkdir(parents=True, exist_ok=True)
    config = config.model_copy(update={"registry": registry,
                                       "triton": config.triton.model_copy(update={"listen": "127.0.0.1"})})
    with open(registry / f".fallback-{socket.gethostname()}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the node's other workers wait here, then find it serving
        found = serving_fallback(registry)
        if found is not None:
            return found
        own = Path(settings_file).parent / f".fallback-{socket.gethostname()}-{os.getpid()}.json"
        own.write_text(config.model_dump_json())
        # not the node pilot's child by its variables: a block's end stops it through --watch-pid,
        # cleanly, rather than among the pool's leftovers (pilot.run._stop_orphans)
        env = {k: v for k, v in os.environ.items() if k != ENV_ENDPOINT_FILE}
        endpoint, _ = start_daemon(["--config", str(own), "--watch-pid", str(os.getpid()), "--block", FALLBACK_BLOCK],
                                   registry, config.triton.ready_timeout_s, env=env)
        return endpoint
