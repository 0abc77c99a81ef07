"""`make bench` = `python -m export.bench`: train → export → serve, measured against this machine's limits.

    python -m export.bench [--out output/bench] [--report BENCHMARKS.md] [--json benchmarks.json]
    python -m export.bench --quick --bundle ROOT --version N   # seconds: no training, tiny bounded loops

Steps (each a bounded subprocess or loop): a 2-rank DeepSpeed run of digits_hideprompt (train/bench.py: stage-2
images/s, statistics and alignment seconds per task, each rank's peak RSS) → the GEMM rate and the counted FLOPs
of a stage-2 step (train.bench) → `python -m export` with its variants → PyTorch-eager two-step vs bare
onnxruntime in this process → `python -m serve.bench` (torch-free: the server at saturation vs bare
onnxruntime, latency at concurrency 1/8/32, variants, server RSS) → BENCHMARKS.md + the raw JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
PRESET = "digits_hideprompt"
RUN_TIMEOUT_S, EXPORT_TIMEOUT_S, SERVE_TIMEOUT_S = 420, 300, 300


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def run_command(argv: list[str], timeout_s: float, **env: str) -> float:
    """Run a step to completion within `timeout_s` (else fail the bench); its wall seconds."""
    start = time.perf_counter()
    log(" ".join(argv))
    subprocess.run(argv, cwd=REPO, check=True, timeout=timeout_s, env={**os.environ, **env})
    return time.perf_counter() - start


# -- training -----------------------------------------------------------------------------------------------
def train_run(out: Path, ranks: int = 2) -> dict:
    """The timed 2-rank run; figures from its results.json and the per-rank bench files."""
    run = out / "run"
    if run.exists():
        subprocess.run(["rm", "-rf", str(run)], check=True)
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    wall = run_command([deepspeed, "--num_gpus", str(ranks), "train/bench.py", PRESET, "--output_dir", str(run)],
                       RUN_TIMEOUT_S)
    results = json.loads((run / "results.json").read_text())
    ranks_json = [json.loads(p.read_text()) for p in sorted(run.glob("bench_rank*.json"))]
    per_task = []
    for timing in results["timings"]:
        task = timing["task"]
        seconds = {what: max((t["seconds"] for r in ranks_json for t in r["timings"]
                              if t["stage"] == "wtp" and t["task"] == task and t["what"] == what), default=0.0)
                   for what in ("statistics", "alignment")}
        per_task.append({"task": task, "train_images_per_second": timing["train_images_per_second"],
                         "train_seconds": timing["train_seconds"], **seconds})
    return {"run_dir": str(run), "wall_seconds": wall, "world_size": results["world_size"],
            "final_average_accuracy": results["final_average_accuracy"],
            "train_images_per_second": results["train_images_per_second"], "per_task": per_task,
            "rank_peak_rss_mib": [r["peak_rss_mib"] for r in ranks_json],
            "rank_threads": [r["threads"] for r in ranks_json],
            "stage1_train_images_per_second": _stage1_rate(run)}


def _stage1_rate(run: Path) -> float | None:
    path = run / "tii" / "results.json"
    return json.loads(path.read_text())["train_images_per_second"] if path.is_file() else None


# -- PyTorch eager vs onnxruntime, and the graphs' FLOPs --------------------------------------------------------
def eager_vs_onnx(run: Path, bundle: Path, batches: tuple[int, ...], seconds: float) -> dict:
    """Eager two-step (the exported modules, no_grad) and bare onnxruntime on the same graphs, side by side."""
    from export.graphs import ClassifierGraph, RouterGraph
    from export.manifest import load_manifest
    from export.restore import restore
    from serve.bench import BareTwoStep, timed_rate
    from train.bench import count_flops

    restored = restore(run)
    seen = restored.split.seen_mask(restored.task)
    router, classifier = RouterGraph(restored.method, seen).eval(), ClassifierGraph(restored.method, seen).eval()
    manifest = load_manifest(bundle)
    bare = BareTwoStep.open(bundle, manifest)
    size = manifest.preprocessing.img_size
    torch.set_num_threads(os.cpu_count() or 1)

    def eager(x: torch.Tensor):
        with torch.no_grad():
            return classifier(x, router(x)[0])[0]

    x8 = torch.randn(8, 3, size, size)
    flops = {"router": count_flops(lambda: router(x8))[0] / 8, "classifier": count_flops(
        lambda: classifier(x8, router(x8)[0]))[0] / 8 - count_flops(lambda: router(x8))[0] / 8}
    out = {"flops_per_image": {**flops, "two_step": flops["router"] + flops["classifier"]}, "by_batch": {}}
    for batch in batches:
        x = torch.randn(batch, 3, size, size)
        xn = x.numpy()
        run_eager, run_onnx = (lambda x=x: eager(x)), (lambda xn=xn: bare(xn))
        pair = {"eager": timed_rate(run_eager, batch, seconds), "onnxruntime": timed_rate(run_onnx, batch, seconds)}
        pair["eager_again"] = timed_rate(run_eager, batch, seconds)  # bracket: noise shows as a spread
        pair["ratio"] = pair["onnxruntime"] / ((pair["eager"] + pair["eager_again"]) / 2)
        out["by_batch"][str(batch)] = pair
        log(f"batch {batch}: eager {pair['eager']:.1f}/{pair['eager_again']:.1f}, onnxruntime "
            f"{pair['onnxruntime']:.1f} images/s")
    return out


# -- the whole suite --------------------------------------------------------------------------------------------
def machine() -> dict:
    import deepspeed
    import onnxruntime
    import timm

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f" {f} " in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg(), "python": platform.python_version(),
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "deepspeed": deepspeed.__version__,
                         "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}}


def suite(args: argparse.Namespace) -> dict:
    from train.bench import gemm_gflops, step_figures

    started = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = {"command": "make bench" if not args.quick else "python -m export.bench --quick",
                     "quick": args.quick, "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    run = args.run
    if run is None and not args.quick:
        figures["training"] = train_run(out)
        run = Path(figures["training"]["run_dir"])
        figures["training"]["gemm_gflops_torch_2threads"] = gemm_gflops(seconds=2.0)
    figures["step"] = step_figures(PRESET, seconds=0.5 if args.quick else 8.0)
    log(f"step: {figures['step']['efficiency']:.1%} of the one-thread GEMM rate")
    root, version = args.bundle, args.version
    if root is None:
        root = out / "bundles"
        subprocess.run(["rm", "-rf", str(root)], check=True)
        figures["export_seconds"] = run_command([sys.executable, "-m", "export", str(run), "--out", str(root)],
                                                EXPORT_TIMEOUT_S)
        version = max(int(p.name) for p in root.iterdir() if p.name.isdigit())
    bundle = Path(root) / str(version)
    test_npz = write_test_npz(out) if run is not None else None
    if run is not None:
        figures["eager"] = eager_vs_onnx(run, bundle, (8, 32), 0.5 if args.quick else 5.0)
    serving_json = out / "serving.json"
    run_command([sys.executable, "-m", "serve.bench", "--bundle", str(root), "--version", str(version), "--json",
                 str(serving_json), *(["--test-npz", str(test_npz)] if test_npz else []),
                 *(["--quick"] if args.quick else [])], SERVE_TIMEOUT_S)
    figures["serving"] = json.loads(serving_json.read_text())
    figures["seconds"] = time.perf_counter() - started
    return figures


def write_test_npz(out: Path) -> Path:
    """The Split-Digits test split as training evaluates it: pixel_values + labels (variant accuracy)."""
    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
    from train.data.digits import digits_arrays
    from train.data.transforms import grayscale_to_input

    _, x, _, y = digits_arrays()
    path = out / "test_digits.npz"
    np.savez(path, labels=y, pixel_values=grayscale_to_input(x, backbone_spec(EMBEDDED_BACKBONE)).numpy())
    return path


def main(argv: list[str] | None = None) -> int:
    from .bench_report import render

    p = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "output" / "bench", help="work folder (git-ignored)")
    p.add_argument("--report", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=None, help="raw figures (default: OUT/benchmarks.json)")
    p.add_argument("--run", type=Path, help="use this trained run instead of training one")
    p.add_argument("--bundle", type=Path, help="use this bundle root instead of exporting (with --version)")
    p.add_argument("--version", type=int)
    p.add_argument("--quick", action="store_true", help="seconds: no training run, tiny bounded loops (tests)")
    args = p.parse_args(argv)
    if args.bundle is not None and args.version is None:
        p.error("--bundle needs --version")
    if args.quick and args.bundle is None:
        p.error("--quick needs --bundle and --version (it trains and exports nothing)")
    figures = suite(args)
    json_path = args.json or args.out / "benchmarks.json"
    json_path.write_text(json.dumps(figures, indent=1))
    args.report.write_text(render(figures))
    log(f"wrote {args.report} and {json_path} in {figures['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
