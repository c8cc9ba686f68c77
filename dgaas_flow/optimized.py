"""Python under `-O` for the processes a campaign starts, where that pays.

Parsl decorates its functions with typeguard's `@typechecked`, which recompiles each of them at
import unless Python runs optimized: `import parsl` takes about 0.45 s with -O and 0.8 s without.
Before a campaign's first result, five processes import it one after another: the driver (`dgaas-flow
run`), the interchange, the worker pool, its multiprocessing manager and the workers it spawns
(which inherit -O). The checks guard Parsl's API against its callers' mistakes, and dgaas-flow builds its Parsl
config from validated models.

Optimized imports read `.opt-1.pyc` files. Where they are missing and cannot be written (with
PYTHONDONTWRITEBYTECODE set, or in a read-only environment such as CVMFS), -O would compile every
module at every start and cost more than it saves; Python then runs as it was started.
`scripts/setup.sh` writes them.

`python -m dgaas_flow.optimized MODULE [ARG ...]` runs `python [-O] -m MODULE [ARG ...]`, decided
on the node, by that node's Python.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

PROBE = "parsl"  # the package whose imports -O speeds up; its cached bytecode stands for the rest
PARSL_COMMANDS = ("run", "scale-test", "render")  # the `dgaas-flow` commands that import Parsl


def pays() -> bool:
    """True where optimized bytecode is cached, or can be written at the first start."""
    spec = importlib.util.find_spec(PROBE)
    if spec is None or spec.origin is None:
        return False
    cache = Path(importlib.util.cache_from_source(spec.origin, optimization=1))
    if cache.exists():
        return True
    folder = cache.parent if cache.parent.exists() else cache.parent.parent
    return not sys.dont_write_bytecode and os.access(folder, os.W_OK)


def command(python: str, module: str) -> list[str]:
    """`python [-O] -m MODULE`: decided now for this interpreter; for another (a site's Python on
    the nodes), decided where it runs, at the cost of one more interpreter start (50 ms)."""
    if python == sys.executable:
        return [python, *(["-O"] if pays() else []), "-m", module]
    return [python, "-m", "dgaas_flow.optimized", module]


def cli() -> None:
    """The `dgaas-flow` command: one that imports Parsl is started again under -O where that pays
    (50 ms for the new interpreter, 0.35 s off the imports); the others run as they were started."""
    if not sys.flags.optimize and sys.argv[1:2] and sys.argv[1] in PARSL_COMMANDS and pays():
        os.execv(sys.executable, [sys.executable, "-O", "-m", "dgaas_flow", *sys.argv[1:]])
    from dgaas_flow.cli import main

    sys.exit(main())


if __name__ == "__main__":
    os.execv(sys.executable, command(sys.executable, sys.argv[1]) + sys.argv[2:])
