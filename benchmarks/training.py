"""Training benchmarks (torch side): the fp32 GEMM rate, the FLOPs of a HiDe-Prompt stage-2 step (done vs
needed, and what the reference's discarded frozen-model forward would add), in-process step throughput, and
the timed DeepSpeed run.

Two uses:
    python -m benchmarks.training step [--seconds 5] [--json OUT]        # GEMM rate + step FLOPs + in-process steps/s
    deepspeed --num_gpus 2 benchmarks/training.py PRESET --output_dir DIR  # train/main.py, plus per-rank figures

The second is `train/main.py` unchanged, with class statistics and classifier alignment timed separately
(the run's own results.json lumps them with evaluation) and each rank's peak RSS, written to
`DIR/bench_rank<r>.json`. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # launched as a script by deepspeed: import as `python -m benchmarks.training` would
    import train.script_path  # noqa: F401

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def gemm_gflops(threads: int | None = None, n: int = 1024, seconds: float = 1.0, max_rounds: int = 200) -> float:
    """Best fp32 n×n×n matmul rate of torch (GFLOP/s) on `threads` threads, bounded in time and rounds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        a, b = torch.rand(n, n), torch.rand(n, n)
        a @ b
        best, end = 0.0, time.perf_counter() + seconds
        for _ in range(max_rounds):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
            if time.perf_counter() > end:
                break
        return best / 1e9
    finally:
        torch.set_num_threads(previous)


def count_flops(fn) -> tuple[int, object]:
    """FLOPs (2×MAC, matmul/conv/attention kernels) that `fn()` executes, and its result."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return counter.get_total_flops(), result


def two_step_flops(router, classifier, x: torch.Tensor) -> dict[str, float]:
    """Counted FLOPs per image of the exported two steps (export/graphs.py's RouterGraph, ClassifierGraph) on `x`:
    the classifier's own share is its graph's count less the router call that feeds it."""
    routed = count_flops(lambda: router(x))[0] / len(x)
    both = count_flops(lambda: classifier(x, router(x)[0]))[0] / len(x)
    return {"router": routed, "classifier": both - routed, "two_step": both}


# -- one stage-2 HiDe-Prompt step, counted and timed in-process -----------------------------------------------
def stage2_method(preset: str = "digits_hideprompt", task: int = 1, backbone: str | None = None):
    """The preset's method at the start of `task` (random backbone weights: FLOPs and speed do not depend on
    them; `backbone` instead of the preset's), with old-class centroids in place so the contrastive term does its
    real work."""
    from train.backbones.registry import backbone_spec
    from train.backbones.vit import create_vit, freeze
    from train.data.splits import split_classes
    from train.methods import build_method
    from train.presets import preset as load_preset
    from train.stats import ClassStatistics

    config = load_preset(preset)
    if backbone is not None:
        config = replace(config, backbone=replace(config.backbone, model=backbone, original_model=backbone))
    torch.manual_seed(0)
    vit = freeze(create_vit(backbone_spec(config.backbone.model)))
    classes = {"Split-Digits": 10}.get(config.data.dataset, 100)
    split = split_classes(classes, config.data.num_tasks, config.data.shuffle, config.seed)
    method = build_method(config.method, config, vit, split)
    statistics = ClassStatistics(config.alignment.ca_storage_efficient_method, config.alignment.n_centroids)
    for label in split.seen_classes(task - 1):
        statistics.add_class(label, torch.randn(64, vit.num_features), seed=label)
    for t in range(task + 1):
        method.begin_task(t, statistics)
    size = backbone_spec(config.backbone.model).img_size
    return method, config, split, size


def step_flops(method, config, split, size: int, task: int = 1) -> dict:
    """FLOPs of one training step (forward, backward) vs what the step needs and what the reference does."""
    from train.backbones.vit import cls_features

    batch = config.data.batch_size
    x = torch.randn(batch, 3, size, size)
    y = torch.tensor(split.task_classes[task])[torch.arange(batch) % len(split.task_classes[task])]
    method.train()
    forward, loss = count_flops(lambda: method.training_loss(method(x, task), y, task))
    backward, _ = count_flops(loss.backward)
    method.zero_grad(set_to_none=True)
    with torch.no_grad():
        prompted, _ = count_flops(lambda: method.classify(x, torch.full((batch,), task)))
        frozen, _ = count_flops(lambda: cls_features(method.backbone, x))
    return {"batch": batch, "forward": forward, "backward": backward, "done": forward + backward,
            "needed_forward": prompted, "needed": prompted + backward,
            "reference_frozen_forward": frozen, "reference": prompted + backward + frozen,
            "discarded_forward": max(0, forward - prompted)}


def step_throughput(method, config, split, size: int, task: int = 1, seconds: float = 5.0,
                    max_steps: int = 500, threads: int | None = None) -> dict:
    """In-process training steps (torch Adam, no DeepSpeed) per second on `threads` threads, bounded."""
    batch = config.data.batch_size
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    x = torch.randn(batch, 3, size, size)
    y = torch.tensor(split.task_classes[task])[torch.arange(batch) % len(split.task_classes[task])]
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    method.train()

    def step() -> None:
        loss = method.training_loss(method(x, task), y, task)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    try:
        step()
        steps, start = 0, time.perf_counter()
        for _ in range(max_steps):
            step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return {"steps": steps, "seconds": elapsed, "images_per_second": steps * batch / elapsed,
            "threads": threads or os.cpu_count()}


def step_figures(preset: str = "digits_hideprompt", seconds: float = 5.0) -> dict:
    """The step's FLOPs, and in-process steps on one thread (as a training rank runs on this CPU) bracketed by the
    one-thread GEMM rate measured right before and after: their ratio is the step's compute efficiency."""
    method, config, split, size = stage2_method(preset)
    flops = step_flops(method, config, split, size)
    gemm_before = gemm_gflops(1, seconds=min(seconds, 2.0))
    steps = step_throughput(method, config, split, size, seconds=seconds, threads=1)
    gemm_after = gemm_gflops(1, seconds=min(seconds, 2.0))
    gemm = max(gemm_before, gemm_after)
    achieved = flops["done"] / config.data.batch_size * steps["images_per_second"] / 1e9
    return {"preset": preset, "backbone": config.backbone.model, "img_size": size, "flops": flops,
            "in_process": steps, "gemm_gflops_torch_1thread": gemm,
            "gemm_gflops_torch_1thread_before_after": [gemm_before, gemm_after],
            "achieved_gflops": achieved, "efficiency": achieved / gemm}


# -- the timed DeepSpeed run ------------------------------------------------------------------------------------
def _timed(store: list, what: str, fn):
    @functools.wraps(fn)
    def wrapper(method, task, *args, **kwargs):
        config = next(a for a in args if hasattr(a, "stage"))
        start = time.perf_counter()
        try:
            return fn(method, task, *args, **kwargs)
        finally:
            store.append({"stage": config.stage, "task": task, "what": what, "seconds": time.perf_counter() - start})
    return wrapper


def rank_main(argv: list[str]) -> int:
    """`train/main.py ARGV` with statistics and alignment timed; per-rank figures beside the run."""
    from train import engine
    from train.main import main

    timings: list[dict] = []
    engine.collect_statistics = _timed(timings, "statistics", engine.collect_statistics)
    engine.align_classifier = _timed(timings, "alignment", engine.align_classifier)
    started = time.perf_counter()
    code = main(argv)
    output_dir = Path(argv[argv.index("--output_dir") + 1])
    rank = int(os.environ.get("RANK", 0))
    figures = {"rank": rank, "exit_code": code, "seconds": time.perf_counter() - started, "timings": timings,
               "threads": torch.get_num_threads(),
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if output_dir.is_dir():
        (output_dir / f"bench_rank{rank}.json").write_text(json.dumps(figures, indent=1))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "step":
        return rank_main(argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.training step")
    p.add_argument("--preset", default="digits_hideprompt")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv[1:])
    figures = step_figures(args.preset, args.seconds)
    text = json.dumps(figures, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
