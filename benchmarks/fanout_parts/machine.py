"""The machine a benchmark ran on, recorded beside its numbers: they mean little without it."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """CPUs, memory, OS, Python and the load average now (the machine is shared)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem_kb / 1024**2, 1),
            "os": platform.platform(), "python": platform.python_version(), "loadavg_start": list(os.getloadavg())}
