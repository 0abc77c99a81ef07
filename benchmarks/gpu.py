"""The GPU profile, one prepared command for a lent GPU machine (`device` tool), sized for ≤ 10 minutes on an H200:

    python -m benchmarks.gpu --out gpu_bench.json [--max-seconds 480]
    python -m benchmarks.gpu --plan                 # what it would run, without a GPU

ViT-B/16 at 224 (random weights: speed does not depend on them; nothing is downloaded), HiDe-Prompt stage 2:
1. DeepSpeed training steps in bf16 and in fp16 (ds_configs/bf16_zero2.json, fp16_zero2.json; one rank), images/s
   and achieved TFLOP/s from the counted FLOPs of the step, plus a bf16 matmul rate measured in the same run;
2. the exported two-step (router.onnx → classifier.onnx) on onnxruntime's CUDA provider (onnxruntime-gpu) at
   batch 1/8/32/64, with the providers onnxruntime really used, and PyTorch eager (fp32 and bf16 autocast)
   at the same batches.
Every loop is bounded in steps and seconds, and the whole script stops starting new measurements at
`--max-seconds`. Nothing here runs on the CPU-only development machine: it exits 2 saying it needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

PRESET = "cifar100_hideprompt_5e"  # ViT-B/16 at 224, the reference's HiDe-Prompt settings (batch 24)
PLAN = {"preset": PRESET, "training": {"dtypes": ["bf16", "fp16"], "warmup_steps": 5, "max_steps": 60,
                                       "max_seconds_each": 60},
        "onnxruntime_cuda": {"batches": [1, 8, 32, 64], "max_seconds_each": 10, "max_rounds": 500},
        "eager": {"batches": [1, 8, 32, 64], "dtypes": ["fp32", "bf16-autocast"], "max_seconds_each": 8}}


def sync() -> None:
    import torch

    torch.cuda.synchronize()


def bounded(step, warmup: int, max_steps: int, max_seconds: float) -> tuple[int, float]:
    """Steps done and seconds taken after `warmup` untimed steps (CUDA synchronised)."""
    for _ in range(warmup):
        step()
    sync()
    done, start = 0, time.perf_counter()
    for _ in range(max_steps):
        step()
        done += 1
        if done % 5 == 0:
            sync()
            if time.perf_counter() - start >= max_seconds:
                break
    sync()
    return done, time.perf_counter() - start


def matmul_tflops(dtype_name: str, n: int = 8192) -> float:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    steps, seconds = bounded(lambda: a @ b, 3, 50, 5)
    return 2 * n**3 * steps / seconds / 1e12


def training(dtype_name: str) -> dict:
    """DeepSpeed steps of the stage-2 method (task 1) in `dtype_name`, one rank on cuda:0."""
    import torch

    from benchmarks.training import stage2_method, step_flops
    from train.distributed import build_engine, engine_dtype, init_distributed, load_ds_config

    ctx = init_distributed()
    method, config, split, size = stage2_method(PRESET)
    flops = step_flops(method, config, split, size)  # on the CPU, before the move: the counts are the same
    method = method.to(ctx.device)
    batch = config.data.batch_size
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    engine = build_engine(method, optimizer, load_ds_config(f"{dtype_name}_zero2", batch, config.optim.clip_grad))
    dtype = engine_dtype(engine)
    x = torch.randn(batch, 3, size, size, device=ctx.device, dtype=dtype)
    y = torch.tensor(split.task_classes[1], device=ctx.device)[torch.arange(batch, device=ctx.device) % 10]

    def step() -> None:
        loss = method.training_loss(engine(x, 1), y, 1)
        engine.backward(loss)
        engine.step()

    torch.cuda.reset_peak_memory_stats()
    plan = PLAN["training"]
    steps, seconds = bounded(step, plan["warmup_steps"], plan["max_steps"], plan["max_seconds_each"])
    engine.destroy()
    return {"dtype": str(dtype), "batch": batch, "steps": steps, "images_per_second": steps * batch / seconds,
            "step_flops": flops["done"], "achieved_tflops": flops["done"] * steps / seconds / 1e12,
            "matmul_tflops": matmul_tflops(dtype_name), "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def onnx_two_step(folder: Path) -> dict:
    """Export the two graphs of the ViT-B method, then onnxruntime CUDA and PyTorch eager by batch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from benchmarks.serving import BareTwoStep
    from benchmarks.training import count_flops, stage2_method
    from export.graphs import ClassifierGraph, RouterGraph, export_onnx
    from export.runtime import TwoStep, session_options

    method, config, split, size = stage2_method(PRESET)
    method.eval()
    seen = split.seen_mask(1)
    router, classifier = RouterGraph(method, seen).eval(), ClassifierGraph(method, seen).eval()
    example = torch.randn(2, 3, size, size)
    names = router.output_names(example)
    export_onnx(router, (example,), ["pixel_values"], names, folder / "router.onnx")
    export_onnx(classifier, (example, router(example)[0]), classifier.input_names(), classifier.output_names(),
                folder / "classifier.onnx")
    with torch.no_grad():
        flops = count_flops(lambda: classifier(example, router(example)[0]))[0] / 2
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sessions = {n: ort.InferenceSession(str(folder / f"{n}.onnx"), session_options(), providers=providers)
                for n in ("router", "classifier")}
    bare = BareTwoStep(TwoStep(sessions, "task"))
    out = {"providers_used": sessions["classifier"].get_providers(), "flops_per_image": flops, "onnxruntime": {},
           "eager": {}}
    plan = PLAN["onnxruntime_cuda"]
    for batch in plan["batches"]:
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        steps, seconds = bounded(lambda x=x: bare(x), 2, plan["max_rounds"], plan["max_seconds_each"])
        out["onnxruntime"][str(batch)] = steps * batch / seconds
    router.cuda(), classifier.cuda()
    for batch in PLAN["eager"]["batches"]:
        x = torch.randn(batch, 3, size, size, device="cuda")
        for mode in PLAN["eager"]["dtypes"]:
            def run(x=x, mode=mode):
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=mode != "fp32"):
                    classifier(x, router(x)[0])
            steps, seconds = bounded(run, 2, 500, PLAN["eager"]["max_seconds_each"])
            out["eager"][f"{mode}@{batch}"] = steps * batch / seconds
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu_bench.json"))
    p.add_argument("--max-seconds", type=float, default=480, help="no new measurement starts after this")
    p.add_argument("--plan", action="store_true", help="print what would run and exit")
    args = p.parse_args(argv)
    if args.plan:
        print(json.dumps(PLAN, indent=1))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("error: the GPU profile needs a GPU (torch.cuda.is_available() is False): run it on a lent GPU "
              "machine with the `device` tool; BENCHMARKS.md says the GPU figures were not measured.",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    figures: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "plan": PLAN}
    for dtype_name in PLAN["training"]["dtypes"]:
        if time.perf_counter() - started < args.max_seconds:
            figures[f"training_{dtype_name}"] = training(dtype_name)
            print(json.dumps(figures[f"training_{dtype_name}"]), flush=True)
    if time.perf_counter() - started < args.max_seconds:
        with tempfile.TemporaryDirectory() as folder:
            figures["two_step"] = onnx_two_step(Path(folder))
    figures["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
