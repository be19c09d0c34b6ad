"""Where, when and by which command a figure was measured: stored with every saved result
(benchmarks, evaluations, training summaries)."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def command_line() -> str:
    return shlex.join(["recsys", *sys.argv[1:]])


def provenance() -> dict[str, Any]:
    """Where, when and by which command a figure was measured (stored with every result)."""
    return {
        "machine": machine(),
        "command": command_line(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
