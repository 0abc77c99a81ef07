"""Bare two-step onnxruntime on a bundle version, in a process of its own that never imports torch.

    python -m benchmarks.bare --bundle VERSION_FOLDER --batch 8 --seconds 4 --json bare.json
    python -m benchmarks.bare --bundle VERSION_FOLDER --batch 8 --rounds 3 --server HOST:PORT --server-pid PID \\
        --json cost.json

The first form: images/s at batch 1 and `--batch`, and CPU seconds per image at `--batch` (benchmarks/serving.py's
bare_throughput and bare_cost, the server's own runner and session options). Before measuring, it runs batch-1
calls for `--seconds`: a fresh process's first ViT-B calls ran markedly slower for a few seconds.

The second form is the server's cost against bare, paired in time: each round times one bare call of `--batch`
images here, then one request of the same `--batch` images to the server serving that version (so it executes that
batch), and reads the server's CPU seconds from /proc/<pid>/stat. On this shared 2-core machine one ViT-B call's
speed drifts by tens of percent within a minute; a round's two halves see the same drift, so the per-round ratio
(server CPU per image / bare's) is the figure, and its median over the rounds is kept.

Why a process of its own: in a process where torch has run (the ViT-B section counts FLOPs and runs bf16 with
torch), onnxruntime ran the ViT-B two-step measurably slower than in a fresh process or in the server, and the bare
figure the server is compared with would be the slower one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.serving import BareTwoStep, bare_cost, bare_throughput, process_cpu_seconds
from export.manifest import load_manifest


def open_bare(folder: Path) -> tuple[BareTwoStep, list[int]]:
    manifest = load_manifest(folder)
    size = manifest.preprocessing.img_size
    return BareTwoStep.open(folder, manifest), [3, size, size]


def bare_figures(folder: Path, batch: int, seconds: float) -> dict:
    runner, shape = open_bare(folder)
    bare_throughput(runner, shape, 1, seconds)  # warm-up
    one = bare_throughput(runner, shape, 1, seconds)
    batched = bare_cost(runner, shape, batch, seconds)
    return {"images_per_second": {"1": one, str(batch): batched["images_per_second"]},
            "cpu_seconds_per_image": {str(batch): batched["cpu_seconds_per_image"]}}


def paired_cost(folder: Path, batch: int, rounds: int, target: str, server_pid: int) -> dict:
    """Rounds of (one bare call, one server request) of `batch` images: CPU seconds per image of each, their ratio."""
    from serve.client import Client, wait_ready

    runner, shape = open_bare(folder)
    pixels = np.random.default_rng(2).standard_normal((batch, *shape)).astype(np.float32)
    client = Client.connect(target)
    wait_ready(client, 60)
    runner(pixels)  # warm-up, both sides
    client.classify(pixels=pixels, top_k=1)
    out = []
    for _ in range(rounds):
        cpu = time.process_time()  # this process: nanoseconds; the server's /proc counter ticks in 10 ms
        runner(pixels)
        bare = (time.process_time() - cpu) / batch
        cpu = process_cpu_seconds(server_pid)
        client.classify(pixels=pixels, top_k=1)
        server = (process_cpu_seconds(server_pid) - cpu) / batch
        out.append({"bare_cpu_seconds_per_image": bare, "server_cpu_seconds_per_image": server,
                    "ratio": server / bare})
    return {"batch": batch, "rounds": out, "ratio": statistics.median(r["ratio"] for r in out),
            "bare_cpu_seconds_per_image": statistics.median(r["bare_cpu_seconds_per_image"] for r in out),
            "server_cpu_seconds_per_image": statistics.median(r["server_cpu_seconds_per_image"] for r in out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bare", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="a bundle version folder (ROOT/N)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="per measured point")
    p.add_argument("--server", help="HOST:PORT of a server of this version: the paired cost instead")
    p.add_argument("--server-pid", type=int, help="that server's process id (its CPU seconds)")
    p.add_argument("--rounds", type=int, default=3, help="paired rounds (with --server)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    if args.server and not args.server_pid:
        p.error("--server needs --server-pid (the server's CPU seconds are read from /proc/<pid>/stat)")
    figures = (paired_cost(args.bundle, args.batch, args.rounds, args.server, args.server_pid) if args.server
               else bare_figures(args.bundle, args.batch, args.seconds))
    args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
