"""One training probe under DeepSpeed: stage-2 HiDe-Prompt steps of every rank at one precision and ZeRO stage.

    deepspeed --num_gpus 2 benchmarks/vitb_training.py --backbone vit_base_patch16_224 --precision fp32|bf16 \\
        --zero 0|2 [--steps 2] [--batch 2] --out DIR

Each rank builds the stage-2 method of digits_hideprompt on `--backbone` (random weights: speed and memory do not
depend on them, benchmarks/training.py's stage2_method), wraps it in a DeepSpeed engine (ds_configs/fp32.json with
the ZeRO stage and bf16 switched as asked, a torch Adam as train/ does), takes one warm-up step and `--steps`
timed steps, and writes DIR/rank<r>.json: images/s, its peak RSS, with --count-flops the counted FLOPs of a step
(forward and backward, counted before DeepSpeed on the fp32 module: the count does not depend on the precision;
it is then also the step's compute efficiency) and torch's
one-thread fp32 GEMM rate right before and after the steps (a rank runs one thread on this CPU), whose ratio to
the achieved rate is the step's compute efficiency. Bounded in steps; the caller bounds it in time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # launched as a script by deepspeed: the repository root on the path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch  # noqa: E402

from benchmarks.training import gemm_gflops, stage2_method, step_flops  # noqa: E402

TASK = 1  # the second task: old-class statistics exist, so the contrastive term does its real work


def ds_config(precision: str, zero: int, batch: int, clip: float) -> dict:
    from train.distributed import load_ds_config

    config = load_ds_config("fp32", batch, clip)
    config["zero_optimization"] = {"stage": zero}
    config["bf16"] = {"enabled": precision == "bf16"}
    return config


def probe(args: argparse.Namespace) -> dict:
    from dataclasses import replace

    from train.distributed import build_engine, engine_dtype, init_distributed

    ctx = init_distributed()
    method, config, split, size = stage2_method(task=TASK, backbone=args.backbone)
    config = replace(config, data=replace(config.data, batch_size=args.batch))
    flops = step_flops(method, config, split, size, TASK) if args.count_flops else None
    optimizer = torch.optim.Adam(method.param_groups(config.optim.scaled_lr(args.batch)))
    engine = build_engine(method, optimizer, ds_config(args.precision, args.zero, args.batch, config.optim.clip_grad))
    dtype = engine_dtype(engine)
    classes = torch.tensor(split.task_classes[TASK])
    x = torch.randn(args.batch, 3, size, size).to(dtype)
    y = classes[torch.arange(args.batch) % len(classes)]
    method.train()

    def step() -> None:
        loss = method.training_loss(engine(x, TASK), y, TASK)
        engine.backward(loss)
        engine.step()

    step()  # warm-up: kernels, allocator, DeepSpeed's first-step bookkeeping
    gemm_before = gemm_gflops(1, seconds=1.0)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - started
    gemm_after = gemm_gflops(1, seconds=1.0)
    rate = args.steps * args.batch / seconds
    achieved = flops["done"] / args.batch * rate / 1e9 if flops else None
    gemm = max(gemm_before, gemm_after)
    return {"rank": ctx.rank, "world_size": ctx.world_size, "backbone": args.backbone, "precision": args.precision,
            "zero_stage": args.zero, "batch": args.batch, "steps": args.steps, "seconds": seconds,
            "images_per_second": rate, "threads": torch.get_num_threads(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "step_flops": flops, "flops_per_image": flops["done"] / args.batch if flops else None,
            "gemm_gflops_torch_1thread_before_after": [gemm_before, gemm_after], "achieved_gflops": achieved,
            "efficiency": achieved / gemm if achieved is not None and gemm else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/vitb_training.py", description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="vit_base_patch16_224")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--zero", type=int, choices=(0, 1, 2), default=0)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=2, help="images per rank and step")
    p.add_argument("--count-flops", action="store_true", help="count one step's FLOPs first (one more step's time)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)  # set by the launcher
    args = p.parse_args(argv)
    figures = probe(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{figures['rank']}.json").write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
