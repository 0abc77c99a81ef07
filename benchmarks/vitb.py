"""The ViT-B section of `make bench`: the realistic model size (ViT-B/16 at 224) trained, exported, served and
measured on this machine, in one bounded run.

    python -m benchmarks.vitb --out DIR --json vitb.json [--budget-s 600] [--step-timeout-scale 1]
                              [--backbone-checkpoint FILE] [--quick]

Weights: a local timm-format file (--backbone-checkpoint), else timm's seeded random initialisation
(`backbone.checkpoint=random`; speed and memory do not depend on the weights, accuracy means nothing and the figures
say so). Data: two Split-Digits task folders of a few PNGs each, enlarged to 224 by the backbone's own transforms.

Steps, most important first, each a bounded subprocess or loop; a step that would start after the budget is spent is
skipped and recorded as such: a 2-rank HiDe-Prompt run (benchmarks/training.py: stage-2 images/s per rank, each
rank's peak RSS) → `python -m export` (two graphs, parity, time, sizes) → the counted FLOPs of the two steps →
bare two-step onnxruntime at batch 1 and 8 (benchmarks/bare.py, a torch-free process) → one server (start-up to
its serving line, CPU seconds per image against bare's in paired rounds, peak RSS, then it vs the PyTorch-eager
gRPC server at concurrency 1 and 8, benchmarks/serving.py) → the server's memory with one shared backbone copy
vs self-contained graphs (benchmarks/vitb_memory.py) → int8 and bf16 against fp32 on the same
images → training probes (benchmarks/vitb_training.py: fp32 ZeRO 0, fp32 ZeRO 2, bf16 ZeRO 0) → a HiDe-LoRA run
on the same data (reusing the HiDe-Prompt run's stage 1) and its export.
`--quick` runs the same steps on the embedded backbone with tiny loops (a plumbing check, minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.serving import (
    Plan,
    child_env,
    peak_rss_mib,
    server_args,
    start_server,
    stop_server,
    versus_eager,
)

REPO = Path(__file__).resolve().parent.parent
VIT_B = "vit_base_patch16_224"
TASKS = ((0, 1), (2, 3))  # digits per task folder
PROTOBUF_LIMIT_BYTES = 2**31  # one ONNX protobuf (a graph file without external data) must stay below 2 GiB


@dataclass(frozen=True)
class Budget:
    """What the section may spend: the whole section, and each step's subprocess."""

    backbone: str = VIT_B
    total_s: float = 600.0  # every step on the 2-core reference CPU, with room (issue #16's 5 minutes: a report row)
    train_per_class: int = 2  # train images per class (per task: 2 classes)
    test_per_class: int = 1
    run_timeout_s: float = 240.0
    export_timeout_s: float = 180.0
    probe_timeout_s: float = 120.0
    probe_steps: int = 2  # timed training steps per probe, after one warm-up step
    seconds: float = 4.0  # per measured load point
    bare_batch: int = 8
    agreement_images: int = 8  # images for int8/bf16 top-1 agreement with fp32 (one batch)
    timed_calls: int = 1  # timed batch calls per engine after the agreement pass warmed it (≈ 4 s each at ViT-B)
    cost_rounds: int = 3  # paired (bare call, server request) rounds of the server's CPU cost

    @classmethod
    def quick(cls) -> Budget:
        from train.backbones.registry import EMBEDDED_BACKBONE

        return cls(backbone=EMBEDDED_BACKBONE, total_s=600.0, seconds=0.5, probe_steps=1, timed_calls=5)


def log(message: str) -> None:
    print(f"[bench vitb] {message}", flush=True)


# When the section's budget ends (perf_counter seconds): no subprocess runs past it by more than GRACE_S.
_deadline = [float("inf")]
GRACE_S = 20.0


def run_step(argv: list[str], timeout_s: float, log_file: Path, **env: str) -> float:
    """A subprocess to completion within `timeout_s` and the section's deadline (its output in `log_file`); its
    wall seconds."""
    started = time.perf_counter()
    timeout = min(timeout_s, max(GRACE_S, _deadline[0] + GRACE_S - started))
    log(f"{' '.join(argv)}  (timeout {timeout:.0f} s)")
    with open(log_file, "w") as out:
        # its own process group: on a timeout the launcher's ranks go too (killing the launcher alone leaves them
        # running, writing into the next step's folders)
        process = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=child_env(**env),
                                   start_new_session=True)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    if code:
        raise subprocess.CalledProcessError(code, argv, f"see {log_file}")
    return time.perf_counter() - started


# -- data and training --------------------------------------------------------------------------------------------
def write_folders(root: Path, budget: Budget) -> Path:
    """Split-Digits task folders with the budget's few images per class (the benchmark's own split)."""
    from train.data.digits import write_digit_folders

    shutil.rmtree(root, ignore_errors=True)
    for t, digits in enumerate(TASKS):
        folder = write_digit_folders(root / f"task{t + 1}", digits)
        for part, keep in (("train", budget.train_per_class), ("test", budget.test_per_class)):
            for class_folder in (folder / part).iterdir():
                for png in sorted(class_folder.iterdir())[keep:]:
                    png.unlink()
    return root


def train_overrides(budget: Budget, checkpoint: str) -> list[str]:
    """One epoch of everything, batch 2 per rank, two centroids per class (a class has only a few images)."""
    return [f"backbone.model={budget.backbone}", f"backbone.original_model={budget.backbone}",
            f"backbone.checkpoint={checkpoint}", "data.batch_size=2", "optim.epochs=1", "tii_optim.epochs=1",
            "alignment.crct_epochs=1", "alignment.n_centroids=2"]


def train(preset: str, data: Path, run: Path, overrides: list[str], budget: Budget, ranks: int = 2) -> dict:
    """A `ranks`-rank run of `preset` on the task folders (train/main.py through benchmarks/training.py)."""
    shutil.rmtree(run, ignore_errors=True)
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    port = str(29600 + os.getpid() % 300)  # beside another run on this machine (the launcher's default is 29500)
    wall = run_step([deepspeed, "--master_port", port, "--num_gpus", str(ranks), "benchmarks/training.py", preset,
                     "--data-path", str(data), "--output_dir", str(run), *overrides],
                    budget.run_timeout_s, run.parent / f"{run.name}.log", OMP_NUM_THREADS="1")
    results = json.loads((run / "results.json").read_text())
    ranks_json = [json.loads(p.read_text()) for p in sorted(run.glob("bench_rank*.json"))]
    world = results["world_size"]
    return {"preset": preset, "run_dir": str(run), "wall_seconds": wall, "world_size": world,
            "stage2_images_per_second_per_rank": [t["train_images_per_second"] / world for t in results["timings"]],
            "rank_peak_rss_mib": [r["peak_rss_mib"] for r in ranks_json],
            "backbone_checkpoint": results["config"]["backbone"]["checkpoint"]}


def export(run: Path, root: Path, budget: Budget) -> dict:
    """`python -m export` without variants (measured here instead), parity on the few test images."""
    shutil.rmtree(root, ignore_errors=True)
    wall = run_step([sys.executable, "-m", "export", str(run), "--out", str(root), "--variants", "",
                     "--parity-samples", str(len(TASKS) * 2 * budget.test_per_class)],
                    budget.export_timeout_s, root.parent / f"{root.name}.log")
    from export.manifest import bundle_versions, load_manifest

    version = bundle_versions(root)[-1]
    folder = root / str(version)
    manifest = load_manifest(folder)
    files = {p.name: p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    graphs = {name: (folder / g.file).stat().st_size for name, g in manifest.graphs.items()}
    return {"root": str(root), "version": version, "seconds": wall, "files_bytes": files,
            "bundle_bytes": sum(files.values()), "graph_bytes": graphs, "largest_graph_bytes": max(graphs.values()),
            "protobuf_limit_bytes": PROTOBUF_LIMIT_BYTES, "random_init": manifest.backbone.random_init,
            "shared_weights": manifest.shared_weights is not None,
            "parity": manifest.parity.model_dump(), "export_images_per_second": manifest.measurement.images_per_second,
            "export_batch": manifest.measurement.batch_size}


# -- inference: FLOPs, bare onnxruntime, the servers ----------------------------------------------------------------
def backbone_and_flops(run: Path) -> dict:
    """The backbone's fp32 size and the counted FLOPs per image of each step (torch's FLOP counter, batch 1)."""
    import torch

    from benchmarks.training import two_step_flops
    from export.graphs import ClassifierGraph, RouterGraph
    from train import load_trained

    trained = load_trained(run)
    backbone = trained.method.backbone
    size = trained.backbone.spec.img_size
    router = RouterGraph(trained.method, trained.seen).eval()
    classifier = ClassifierGraph(trained.method, trained.seen).eval()
    with torch.no_grad():
        flops = two_step_flops(router, classifier, torch.randn(1, 3, size, size))
    params = sum(p.numel() for p in backbone.parameters())
    return {"img_size": size, "backbone_parameters": params, "backbone_fp32_mib": params * 4 / 2**20,
            "flops_per_image": flops}


def run_bare(folder: Path, work: Path, name: str, budget: Budget, *args: str) -> dict:
    """`python -m benchmarks.bare` on a version folder at the budget's batch (a torch-free process of its own,
    bounded like an export); its figures, also left in `work/<name>.json`."""
    out = work / f"{name}.json"
    out.unlink(missing_ok=True)
    run_step([sys.executable, "-m", "benchmarks.bare", "--bundle", str(folder), "--batch", str(budget.bare_batch),
              *args, "--json", str(out)], budget.export_timeout_s, work / f"{name}.log")
    return json.loads(out.read_text())


def bare(root: Path, version: int, work: Path, budget: Budget) -> dict:
    """Bare two-step onnxruntime at batch 1 and the budget's batch (benchmarks/bare.py)."""
    return run_bare(root / str(version), work, "bare", budget, "--seconds", str(budget.seconds))


def serve_figures(root: Path, version: int, run: Path, work: Path, budget: Budget) -> dict:
    """One server: start-up to its serving line; its CPU seconds per image against bare onnxruntime's at bare's
    batch, in paired rounds (benchmarks/bare.py --server: the server executes the batch bare runs); its peak RSS;
    then it against the PyTorch-eager gRPC servers at concurrency 1 and 8 (benchmarks/serving.py's versus_eager,
    one image per request)."""
    from export.manifest import load_manifest

    manifest = load_manifest(root / str(version))
    shape = [3, manifest.preprocessing.img_size, manifest.preprocessing.img_size]
    plan = Plan(seconds=budget.seconds, max_requests=2000, versus_rounds=1)
    started = time.perf_counter()
    process, target, _ = start_server(root, version, *server_args(plan))
    start_seconds = time.perf_counter() - started
    try:
        cost = run_bare(root / str(version), work, "cost", budget, "--rounds", str(budget.cost_rounds),
                        "--server", target, "--server-pid", str(process.pid))
        rss = peak_rss_mib(process.pid)
        log(f"server: serving after {start_seconds:.1f} s, peak RSS {rss:.0f} MiB, CPU per image "
            f"{cost['ratio']:.3f}× bare's at batch {budget.bare_batch} (median of {budget.cost_rounds} rounds)")
        versus = versus_eager(root, version, run, shape, plan, log, ours=target)
    finally:
        stop_server(process)
    return {"start_seconds": start_seconds, "peak_rss_mib": rss, "cost": cost, "versus_eager": versus}


def server_memory(folder: Path, work: Path) -> dict:
    """benchmarks/vitb_memory.py on this bundle: the server with one shared backbone copy vs self-contained graphs
    (the suite reports it as "vitb_memory", the figure the RSS target names)."""
    from benchmarks.vitb_memory import server_memory as measure

    return measure(folder, work)


# -- int8 and bf16 against fp32 on the same images ------------------------------------------------------------------
def agreement_images(backbone: str, count: int) -> np.ndarray:
    """Split-Digits test images as `backbone` sees them (enlarged to its size by the training transforms)."""
    from train.backbones.registry import backbone_spec
    from train.data.digits import digits_arrays
    from train.data.transforms import grayscale_to_input

    _, x, _, _ = digits_arrays()
    return grayscale_to_input(x[:count], backbone_spec(backbone)).numpy()


def top1(runner, images: np.ndarray, batch: int) -> np.ndarray:
    from export.manifest import PROBABILITIES

    return np.concatenate([runner(images[i:i + batch])[PROBABILITIES].argmax(1) for i in range(0, len(images), batch)])


def int8_figures(root: Path, version: int, work: Path, budget: Budget, images: np.ndarray) -> dict:
    """Dynamic int8 (export/variants.py's converter) vs the fp32 graphs: build time, size, speed, agreement."""
    from export.manifest import load_manifest
    from export.runtime import TwoStep
    from export.variants import quantize_int8

    folder = root / str(version)
    manifest = load_manifest(folder)
    fp32 = TwoStep.of_bundle(folder, manifest)
    target = work / "int8"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    started = time.perf_counter()
    for g in manifest.graphs.values():  # a shared weights file is ONNX external data: the quantiser reads it
        quantize_int8(folder / g.file, target / g.file, None)
    build = time.perf_counter() - started
    int8 = TwoStep.open(target, manifest.graphs, manifest.routing)
    reference, predicted = top1(fp32, images, budget.bare_batch), top1(int8, images, budget.bare_batch)  # warm
    x = images[:budget.bare_batch]
    rates = {name: calls_rate(lambda r=runner: r(x), len(x), budget.timed_calls)  # bracketed: noise shows
             for name, runner in (("fp32", fp32), ("int8", int8), ("fp32_again", fp32))}
    return {"build_seconds": build, "bytes": sum(p.stat().st_size for p in target.iterdir()),
            "agreement": float((reference == predicted).mean()), "images": len(images), "batch": len(x),
            "timed_calls": budget.timed_calls,
            "images_per_second": rates["int8"], "fp32_images_per_second": [rates["fp32"], rates["fp32_again"]],
            "speedup": rates["int8"] / ((rates["fp32"] + rates["fp32_again"]) / 2)}


def calls_rate(call, images_per_call: int, calls: int) -> float:
    """Images per second of `calls` calls of a warmed engine (a ViT-B batch takes seconds: no warm-up call here)."""
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return calls * images_per_call / (time.perf_counter() - started)


def bf16_figures(run: Path, images: np.ndarray, budget: Budget) -> dict:
    """bf16 on this CPU: onnxruntime's CPU provider has no bf16 MatMul (its own words recorded), so bf16 is torch's
    eager two-step under CPU autocast (oneDNN's AVX-512 BF16 kernels where present) vs the same in fp32."""
    import torch

    from benchmarks.eager_server import EagerTwoStep

    model = EagerTwoStep(run, None)
    torch.set_num_threads(os.cpu_count() or 1)

    def predict(pixels: np.ndarray, bf16: bool) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(pixels)[0].argmax(1)

    batch = budget.bare_batch
    fp32 = np.concatenate([predict(images[i:i + batch], False) for i in range(0, len(images), batch)])
    bf16 = np.concatenate([predict(images[i:i + batch], True) for i in range(0, len(images), batch)])
    x = images[:batch]
    rates = {name: calls_rate(lambda b=b: predict(x, b), len(x), budget.timed_calls)  # warmed by the pass above
             for name, b in (("fp32", False), ("bf16", True), ("fp32_again", False))}
    return {"engine": "torch eager, CPU autocast bfloat16", "onnxruntime": onnxruntime_bf16(),
            "agreement": float((fp32 == bf16).mean()), "images": len(images), "batch": len(x),
            "timed_calls": budget.timed_calls,
            "images_per_second": rates["bf16"], "fp32_images_per_second": [rates["fp32"], rates["fp32_again"]],
            "speedup": rates["bf16"] / ((rates["fp32"] + rates["fp32_again"]) / 2)}


def onnxruntime_bf16() -> str:
    """Whether onnxruntime's CPU provider runs a bfloat16 MatMul: "runs", or its error in its own words."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "bf16",
                              [helper.make_tensor_value_info(x, TensorProto.BFLOAT16, [4, 4]) for x in ("a", "b")],
                              [helper.make_tensor_value_info("c", TensorProto.BFLOAT16, [4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as error:  # the runtime's own words are the figure
        return f"{type(error).__name__}: {str(error)[:200]}"
    return "runs"


# -- training probes --------------------------------------------------------------------------------------------------
PROBES = {"fp32_zero0": ("fp32", 0), "fp32_zero2": ("fp32", 2), "bf16_zero0": ("bf16", 0)}
FLOPS_PROBE = "fp32_zero0"  # the step's FLOPs are counted once (they do not depend on precision or ZeRO stage)


def training_probes(work: Path, budget: Budget, ranks: int = 2) -> dict:
    """benchmarks/vitb_training.py under the DeepSpeed launcher, once per precision × ZeRO stage; a probe that
    fails or runs out of the section's time is recorded as such, the others are kept."""
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    out = {}
    for name, (precision, stage) in PROBES.items():
        if time.perf_counter() > _deadline[0]:
            out[name] = {"precision": precision, "zero_stage": stage, "skipped": "the section's budget was spent"}
            continue
        path = work / f"probe_{name}"
        shutil.rmtree(path, ignore_errors=True)
        port = str(29600 + (os.getpid() + 7) % 300)
        try:
            run_step([deepspeed, "--master_port", port, "--num_gpus", str(ranks), "benchmarks/vitb_training.py",
                      "--backbone", budget.backbone, "--precision", precision, "--zero", str(stage),
                      "--steps", str(budget.probe_steps), "--out", str(path),
                      *(["--count-flops"] if name == FLOPS_PROBE else [])],
                     budget.probe_timeout_s, work / f"probe_{name}.log", OMP_NUM_THREADS="1")
        except subprocess.SubprocessError as error:
            out[name] = {"precision": precision, "zero_stage": stage,
                         "failed": f"{type(error).__name__}: {str(error)[-200:]}"}
            continue
        ranks_json = [json.loads(p.read_text()) for p in sorted(path.glob("rank*.json"))]
        out[name] = {"precision": precision, "zero_stage": stage, "ranks": ranks_json}
        log(f"probe {name}: {[round(r['images_per_second'], 2) for r in ranks_json]} images/s per rank, "
            f"peak RSS {[round(r['peak_rss_mib']) for r in ranks_json]} MiB")
    return out


# -- the section ------------------------------------------------------------------------------------------------------
class Section:
    """Runs steps in priority order until the budget is spent; a step past it, or one that fails, is recorded."""

    def __init__(self, budget: Budget, save=None):
        self.budget, self.started, self.save = budget, time.perf_counter(), save or (lambda figures: None)
        _deadline[0] = self.started + budget.total_s
        self.figures: dict = {"skipped": {}, "failed": {}}

    def step(self, name: str, fn, *args):
        elapsed = time.perf_counter() - self.started
        if elapsed > self.budget.total_s:
            self.figures["skipped"][name] = f"the section's {self.budget.total_s:.0f} s budget was spent " \
                                            f"({elapsed:.0f} s) before it"
            log(f"skipped {name}: {self.figures['skipped'][name]}")
            return None
        try:
            result = fn(*args)
        except Exception as error:  # a benchmark step that breaks is a figure (named, with its error): go on
            self.figures["failed"][name] = f"{type(error).__name__}: {str(error)[:300]}"
            log(f"FAILED {name}: {self.figures['failed'][name]}")
            return None
        self.figures[name] = result
        self.figures.setdefault("step_seconds", {})[name] = time.perf_counter() - self.started - elapsed
        self.figures["seconds"] = time.perf_counter() - self.started
        self.save(self.figures)  # what is measured survives a later crash or kill
        return result

    def finish(self) -> dict:
        self.figures["seconds"] = time.perf_counter() - self.started
        return self.figures


def section(out: Path, budget: Budget, checkpoint: Path | None, save=None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    weights = str(checkpoint.resolve()) if checkpoint else "random"
    s = Section(budget, save)
    s.figures.update({"backbone": budget.backbone, "backbone_checkpoint": weights, "random_init": checkpoint is None,
                      "budget": budget.__dict__, "data": {"tasks": len(TASKS), "classes_per_task": 2,
                                                          "train_images_per_class": budget.train_per_class,
                                                          "test_images_per_class": budget.test_per_class}})
    if checkpoint is None:
        log(f"WARNING: {budget.backbone} is RANDOMLY INITIALISED (backbone.checkpoint=random): speed and memory only")
    data = write_folders(out / "folders", budget)
    overrides = train_overrides(budget, weights)
    hp = s.step("hideprompt_run", train, "folder_hideprompt", data, out / "run_hideprompt", overrides, budget)
    if hp is None:
        return s.finish()
    run = Path(hp["run_dir"])
    bundle = s.step("hideprompt_export", export, run, out / "bundles_hideprompt", budget)
    s.step("model", backbone_and_flops, run)
    if bundle is not None:
        root, version = Path(bundle["root"]), bundle["version"]
        s.step("bare", bare, root, version, out, budget)
        s.step("serving", serve_figures, root, version, run, out, budget)
        s.step("memory", server_memory, root / str(version), out / "memory")
        images = agreement_images(budget.backbone, budget.agreement_images)
        s.step("int8", int8_figures, root, version, out / "variants", budget, images)
        s.step("bf16", bf16_figures, run, images, budget)
    s.step("training", training_probes, out, budget)
    lora = s.step("hidelora_run", train, "folder_hidelora", data, out / "run_hidelora",
                  [*overrides, f"trained_original_model={run / 'tii'}"], budget)
    if lora is not None:
        s.step("hidelora_export", export, Path(lora["run_dir"]), out / "bundles_hidelora", budget)
    return s.finish()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vitb", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "output" / "bench" / "vitb", help="work folder (git-ignored)")
    p.add_argument("--json", type=Path, required=True, help="where the figures go")
    p.add_argument("--budget-s", type=float, help="the section's wall-time budget (default 600; quick: 600)")
    p.add_argument("--step-timeout-scale", type=float, default=1.0,
                   help="multiply every step's timeout (a machine shared with other load)")
    p.add_argument("--backbone-checkpoint", type=Path, help="a local timm-format ViT-B file instead of random init")
    p.add_argument("--quick", action="store_true", help="the same steps on the embedded backbone, tiny loops")
    args = p.parse_args(argv)
    budget = Budget.quick() if args.quick else Budget()
    timeouts = {k: v * args.step_timeout_scale for k, v in budget.__dict__.items() if k.endswith("_timeout_s")}
    budget = Budget(**{**budget.__dict__, **timeouts, **({"total_s": args.budget_s} if args.budget_s else {})})
    def save(figures: dict) -> None:
        args.json.write_text(json.dumps(figures, indent=1))

    figures = section(args.out, budget, args.backbone_checkpoint, save)
    save(figures)
    log(f"section done in {figures['seconds']:.0f} s → {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
