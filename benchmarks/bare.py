"""Bare two-step onnxruntime on a bundle version, in a process of its own that never imports torch.

    python -m benchmarks.bare --bundle VERSION_FOLDER --batch 8 --seconds 4 --json bare.json

Images/s at batch 1 and `--batch`, and CPU seconds per image at `--batch` (benchmarks/serving.py's bare_throughput
and bare_cost, the server's own runner and session options).

Why a process of its own: in a process where torch has run (the ViT-B section counts FLOPs and runs bf16 with
torch), onnxruntime ran the ViT-B two-step measurably slower than in a fresh process or in the server, and the bare
figure the server is compared with would be the slower one. Before measuring, it runs batch-1 calls for
`--seconds`: a fresh process's first ViT-B calls ran markedly slower for a few seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.serving import BareTwoStep, bare_cost, bare_throughput
from export.manifest import load_manifest


def bare_figures(folder: Path, batch: int, seconds: float) -> dict:
    manifest = load_manifest(folder)
    size = manifest.preprocessing.img_size
    runner = BareTwoStep.open(folder, manifest)
    shape = [3, size, size]
    bare_throughput(runner, shape, 1, seconds)  # warm-up
    one = bare_throughput(runner, shape, 1, seconds)
    batched = bare_cost(runner, shape, batch, seconds)
    return {"images_per_second": {"1": one, str(batch): batched["images_per_second"]},
            "cpu_seconds_per_image": {str(batch): batched["cpu_seconds_per_image"]}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bare", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="a bundle version folder (ROOT/N)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="per measured point")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    args.json.write_text(json.dumps(bare_figures(args.bundle, args.batch, args.seconds), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
