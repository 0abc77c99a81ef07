"""`python -m benchmarks.hold_two_step FOLDER IMG_SIZE CALLS`: the two graphs of FOLDER on the shared runner in a
fresh torch-free process; prints one JSON line with the median latency of one image and the process's peak RSS
(its sessions' and runtime's memory, nothing of the caller's)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from export.manifest import GraphSpec
from export.runtime import TwoStep


def hold_and_time(folder: Path, img_size: int, calls: int) -> dict:
    graphs = {name: GraphSpec.model_construct(file=f"{name}.onnx") for name in ("router", "classifier")}
    runner = TwoStep.open(folder, graphs, "task")
    x = np.random.default_rng(0).standard_normal((1, 3, img_size, img_size)).astype(np.float32)
    runner(x)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - start)
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024
    return {"latency_ms_p50": 1000 * float(np.median(times)), "calls": calls, "peak_rss_mib": peak}


def main(argv: list[str] | None = None) -> int:
    folder, size, calls = (argv or sys.argv[1:])[:3]
    print(json.dumps(hold_and_time(Path(folder), int(size), int(calls))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
