"""Image size, start-up time and memory of the serve image, as docs/deploy.md quotes them.

    .venv/bin/python -m deploy.measure --bundle BUNDLE_ROOT [--image localhost/hidecl-serve:latest] [--runs 5]
                                       [--load-s 20]

Prints one JSON line. The container uses the host network on free ports and mounts the bundle root read-only;
each start is timed from the `podman run` call to the first SERVING answer of a client polling every 20 ms.
With --load-s, one more container is loaded by `python -m serve.client bench` (8 concurrent clients sending
batches of 8 JPEG photos of 2000×1500 pixels) and the server's resident memory is read from the kernel:
idle (VmRSS once SERVING) and peak (VmHWM after the load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from contract.ports import free_port

IMAGE = "localhost/hidecl-serve:latest"


def image_size_mb(image: str) -> float:
    size = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", image], check=True,
                          capture_output=True, text=True).stdout.strip()
    return int(size) / 1e6


def wait_serving(target: str, timeout: float) -> float:
    """Seconds until the health service answers SERVING; raises TimeoutError after `timeout`."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    serving = health_pb2.HealthCheckResponse.SERVING
    start = time.perf_counter()
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.perf_counter() - start < timeout:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == serving:
                    return time.perf_counter() - start
            except grpc.RpcError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"{target} not SERVING after {timeout:g} s")


def start(image: str, bundle: Path) -> tuple[str, int]:
    """A detached server container on free host ports; returns (name, gRPC port)."""
    port, metrics_port = free_port(), free_port()
    name = f"hidecl-measure-{port}"
    subprocess.run(["podman", "run", "-d", "--rm", "--name", name, "--network", "host",
                    "-v", f"{bundle.resolve()}:/bundles:ro", "-e", f"HIDECL_PORT={port}",
                    "-e", f"HIDECL_METRICS_PORT={metrics_port}", image], check=True, capture_output=True)
    return name, port


def stop(name: str) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "2", name], capture_output=True)


def time_to_serving(image: str, bundle: Path, timeout: float = 60.0) -> float:
    begin = time.perf_counter()
    name, port = start(image, bundle)
    try:
        wait_serving(f"127.0.0.1:{port}", timeout)
        return time.perf_counter() - begin
    finally:
        stop(name)


def memory_kb(pid: int, field: str) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def photos(folder: Path, count: int = 8) -> list[Path]:
    """JPEG photos of 2000×1500 noise (incompressible: large messages, full decoding work)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        files.append(folder / f"photo{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(files[-1], quality=60)
    return files


def memory_under_load(image: str, bundle: Path, seconds: float) -> dict:
    import tempfile

    name, port = start(image, bundle)
    try:
        wait_serving(f"127.0.0.1:{port}", 60)
        pid = int(subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", name], check=True,
                                 capture_output=True, text=True).stdout)
        idle = memory_kb(pid, "VmRSS")
        with tempfile.TemporaryDirectory() as tmp:
            bench = subprocess.run([sys.executable, "-m", "serve.client", "--target", f"127.0.0.1:{port}", "bench",
                                    "--concurrency", "8", "--duration", str(seconds), "--batch", "8",
                                    "--images", *map(str, photos(Path(tmp)))],
                                   capture_output=True, text=True, timeout=seconds + 120)
        return {"idle_rss_mb": round(idle / 1024), "peak_rss_mb": round(memory_kb(pid, "VmHWM") / 1024),
                "bench": bench.stdout.strip().splitlines()[-3:] or bench.stderr[-500:]}
    finally:
        stop(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.measure", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, type=Path, help="bundle root to mount at /bundles")
    p.add_argument("--image", default=IMAGE)
    p.add_argument("--runs", type=int, default=5, choices=range(1, 21), metavar="1..20")
    p.add_argument("--load-s", type=float, default=0, help="also measure memory under this long a load (0: no)")
    args = p.parse_args(argv)
    if not args.bundle.is_dir():
        p.error(f"--bundle {args.bundle} is not a folder (python -m export RUN --out ROOT writes one)")
    starts = [time_to_serving(args.image, args.bundle) for _ in range(args.runs)]
    report = {"image": args.image, "size_mb": round(image_size_mb(args.image), 1),
              "start_to_serving_s": {"best": round(min(starts), 2), "median": round(statistics.median(starts), 2),
                                     "worst": round(max(starts), 2),
                                     "runs": [round(s, 2) for s in starts]}}
    if args.load_s > 0:
        report["memory"] = memory_under_load(args.image, args.bundle, args.load_s)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
