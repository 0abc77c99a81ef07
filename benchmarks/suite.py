"""`make bench` = `python -m benchmarks.suite`: train → export → serve, measured against this machine's limits.

    python -m benchmarks.suite [--out output/bench] [--report BENCHMARKS.md] [--json benchmarks.json]
    python -m benchmarks.suite --quick --bundle ROOT --version N   # seconds: no training, tiny bounded loops

Steps (each a bounded subprocess or loop): the machine as this run sees it (/proc/cpuinfo flags, load average,
whether CUDA is visible) and its fp32 peak (benchmarks/peak.py: the best large MatMul of torch, onnxruntime and
numpy) → a 2-rank DeepSpeed run of digits_hideprompt (benchmarks/training.py: stage-2 images/s, statistics and
alignment seconds per task, each rank's peak RSS) → the counted FLOPs of a stage-2 step → `python -m export`
with its variants → PyTorch-eager two-step vs bare onnxruntime in this process → `python -m benchmarks.serving`
(the server at saturation vs bare onnxruntime, latency at concurrency 1/8/32, variants, server RSS, and our
server vs the PyTorch-eager gRPC server side by side) → the ViT-B section (benchmarks/vitb.py, 6–8 min in its own
process; --skip-vitb and --quick leave it out) → the ort-optimized diagnosis (benchmarks/ort_levels.py) → how
cost grows with the tasks learned (benchmarks/growth.py) → BENCHMARKS.md + the raw JSON.
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

from benchmarks.digits import write_test_npz
from benchmarks.serving import child_env

REPO = Path(__file__).resolve().parent.parent
PRESET = "digits_hideprompt"
RUN_TIMEOUT_S, EXPORT_TIMEOUT_S, SERVE_TIMEOUT_S = 420, 300, 300
VITB_BUDGET_S, VITB_OVERRUN_S = 600, 120  # the ViT-B section's budget and its last steps' overrun past it


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def run_command(argv: list[str], timeout_s: float, **env: str) -> float:
    """Run a step to completion within `timeout_s` (else fail the bench); its wall seconds."""
    start = time.perf_counter()
    log(" ".join(argv))
    subprocess.run(argv, cwd=REPO, check=True, timeout=timeout_s, env=child_env(**env))
    return time.perf_counter() - start


# -- training -----------------------------------------------------------------------------------------------
def train_run(out: Path, ranks: int = 2, backbone_checkpoint: Path | None = None) -> dict:
    """The timed 2-rank run; figures from its results.json and the per-rank bench files."""
    run = out / "run"
    if run.exists():
        subprocess.run(["rm", "-rf", str(run)], check=True)
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    wall = run_command([deepspeed, "--num_gpus", str(ranks), "benchmarks/training.py", PRESET,
                        "--output_dir", str(run),
                        *([f"backbone.checkpoint={backbone_checkpoint}"] if backbone_checkpoint else [])],
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
    from benchmarks.serving import BareTwoStep, timed_rate
    from benchmarks.training import count_flops
    from export.graphs import ClassifierGraph, RouterGraph
    from export.manifest import load_manifest
    from train import load_trained

    trained = load_trained(run)
    router = RouterGraph(trained.method, trained.seen).eval()
    classifier = ClassifierGraph(trained.method, trained.seen).eval()
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
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags(cpuinfo: str) -> list[str]:
    """The flags of CPU_FLAGS that /proc/cpuinfo's first "flags" line lists, in CPU_FLAGS order."""
    line = next((x for x in cpuinfo.splitlines() if x.startswith("flags")), "flags:")
    present = set(line.split(":", 1)[1].split())
    return [f for f in CPU_FLAGS if f in present]


def machine() -> dict:
    import deepspeed
    import onnxruntime
    import timm

    from export.machine import cpu_name

    cpuinfo = Path("/proc/cpuinfo").read_text()
    cuda = torch.cuda.is_available()
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "cpu_flags": cpu_flags(cpuinfo),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "cuda_available": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "load_average_start": list(os.getloadavg()), "python": platform.python_version(),
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "deepspeed": deepspeed.__version__,
                         "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}}


def suite(args: argparse.Namespace) -> dict:
    from benchmarks.peak import engine_rates, fp32_peak
    from benchmarks.training import step_figures
    from benchmarks.vitb_memory import server_memory

    started = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = {"command": " ".join(["python -m benchmarks.suite", *args.argv]),
                     "quick": args.quick, "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    size = {"n": 512, "rounds": 2} if args.quick else {"n": 2048, "rounds": 4}
    figures["peak"] = {**size, "start": engine_rates(**size)}
    log(f"fp32 MatMul rates at the start: {figures['peak']['start']}")
    run = args.run
    if run is None and not args.quick:
        figures["training"] = train_run(out, backbone_checkpoint=args.backbone_checkpoint)
        figures["training"]["backbone_checkpoint"] = str(args.backbone_checkpoint) if args.backbone_checkpoint else None
        run = Path(figures["training"]["run_dir"])
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
    test_npz = write_test_npz(out / "test_digits.npz") if run is not None else None
    if run is not None:
        figures["eager"] = eager_vs_onnx(run, bundle, (8, 32), 0.5 if args.quick else 5.0)
    serving_json = out / "serving.json"
    run_command([sys.executable, "-m", "benchmarks.serving", "--bundle", str(root), "--version", str(version), "--json",
                 str(serving_json), *(["--test-npz", str(test_npz), "--run", str(run)] if run is not None else []),
                 *(["--quick"] if args.quick else [])], SERVE_TIMEOUT_S)
    figures["serving"] = json.loads(serving_json.read_text())
    figures["memory"] = server_memory(bundle, out / "memory")  # one backbone copy vs self-contained graphs
    figures.update(vitb_and_growth(args, bundle))
    peak = figures["peak"]
    peak["end"] = engine_rates(peak["n"], peak["rounds"])
    measured = {f"{engine}, every core, {when} of the run": peak[when][engine]
                for when in ("start", "end") for engine in peak[when]}
    one_thread = figures["step"]["gemm_gflops_torch_1thread_before_after"]
    measured["torch, 1 thread, around the training step"] = max(one_thread)
    peak.update(fp32_peak(measured))
    log(f"fp32 peak: {peak['best_gflops']:.1f} GFLOP/s ({peak['source']})")
    figures["machine"]["load_average_end"] = list(os.getloadavg())
    figures["seconds"] = time.perf_counter() - started
    return figures


def vitb_and_growth(args: argparse.Namespace, bundle: Path) -> dict:
    """The ViT-B section (benchmarks/vitb.py, its own bounded process; not in quick mode or with --skip-vitb), the
    ort-optimized diagnosis on this run's bundle (benchmarks/ort_levels.py) and how cost grows with the tasks
    (benchmarks/growth.py)."""
    from benchmarks.growth import growth_figures
    from benchmarks.ort_levels import level_figures

    figures: dict = {}
    if not (args.quick or args.skip_vitb):
        vitb_json = args.out / "vitb.json"
        vitb_json.unlink(missing_ok=True)
        try:
            run_command([sys.executable, "-m", "benchmarks.vitb", "--out", str(args.out / "vitb"), "--json",
                         str(vitb_json), "--budget-s", str(args.vitb_budget_s),
                         *(["--backbone-checkpoint", str(args.vitb_checkpoint)] if args.vitb_checkpoint else [])],
                        args.vitb_budget_s + VITB_OVERRUN_S)
        except subprocess.SubprocessError as error:  # the report says so; the other sections stand
            figures["vitb_error"] = f"{type(error).__name__}: {str(error)[:300]}"
        if vitb_json.is_file():  # the section saves after every step: what it measured before an error stands
            figures["vitb"] = json.loads(vitb_json.read_text())
            if figures["vitb"].get("memory"):
                figures["vitb_memory"] = figures["vitb"]["memory"]
    figures["ort_levels"] = level_figures(bundle, args.out / "ort_levels", batch=8 if args.quick else 32,
                                          seconds=0.3 if args.quick else 3.0, rounds=1 if args.quick else 2)
    figures["growth"] = growth_figures(args.out / "growth", (2, 5) if args.quick else (5, 20, 100),
                                       calls=3 if args.quick else 50)
    return figures


def main(argv: list[str] | None = None) -> int:
    from .report import render

    p = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "output" / "bench", help="work folder (git-ignored)")
    p.add_argument("--report", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=None, help="raw figures (default: OUT/benchmarks.json)")
    p.add_argument("--run", type=Path, help="use this trained run instead of training one")
    p.add_argument("--bundle", type=Path, help="use this bundle root instead of exporting (with --version)")
    p.add_argument("--version", type=int)
    p.add_argument("--backbone-checkpoint", type=Path, help="weights for the timed run instead of the cached embedded "
                   "backbone (speed does not depend on them; the report names them)")
    p.add_argument("--quick", action="store_true", help="seconds: no training run, tiny bounded loops (tests)")
    p.add_argument("--skip-vitb", action="store_true", help="leave out the ViT-B section (6–8 min; never in --quick)")
    p.add_argument("--vitb-budget-s", type=float, default=VITB_BUDGET_S,
                   help="the ViT-B section's wall-time budget: steps that would start after it are skipped, named")
    p.add_argument("--vitb-checkpoint", type=Path, help="timm-format ViT-B/16 weights for the ViT-B section "
                   "(default: timm's seeded random init; speed and memory do not depend on the weights)")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
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
