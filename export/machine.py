"""The machine a figure was measured on, named the same way wherever one is recorded (a bundle's measurement,
the benchmark report)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model /proc/cpuinfo names, else what `platform` knows (the architecture at least)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())


def onnxruntime_cpu_machine() -> str:
    """The machine line of an export's measurement: onnxruntime on this CPU, with every thread."""
    return f"{cpu_name()}, {os.cpu_count()} CPU threads, onnxruntime CPU"
