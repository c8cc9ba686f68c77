"""Processes that must not outlive their parent.

`python -m dgaas_flow.lifetime CMD ...` runs CMD so that it receives SIGTERM when the process that
started it dies. The campaign starts Parsl's interchange this way: if the driver is killed
(SIGKILL, OOM), the interchange goes with it, the blocks' worker pools miss its heartbeats and
exit, and their pilots stop their servers, instead of holding GPUs until the walltime ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: ask the kernel to send `sig` when the parent (thread) exits; kept across exec."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def adopt_orphans() -> None:
    """Linux: descendants orphaned by their parent's death become this process's children, not
    init's, so that it can stop them (see `pilot wrap`)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)


def main(argv: list[str]) -> None:
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
