"""How serving cost grows with the tasks learned, and what class statistics cost per class.

    python -m benchmarks.growth --out DIR --json growth.json [--tasks 5 20 100] [--quick]

For each task count, a HiDe-Prompt method on the embedded backbone with that many prompt slots and two classes
per task is built without training (random prompt values and router: size and speed do not depend on them) and
its two graphs are exported (export/graphs.py, as `python -m export` writes them): their bytes, the two-step
latency at batch 1 (median of bounded calls, export/runtime.py's TwoStep) and the peak RSS of a torch-free process
that opens both sessions and runs one call (what a server holds for the model, without its gRPC side).
Class statistics: bytes each statistics mode stores per class (train/stats.py, the tensors it keeps) at the
feature width of ViT-B (768) and of the embedded backbone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TASK_COUNTS = (5, 20, 100)
CLASSES_PER_TASK = 2
STATS_WIDTHS = (768, 128)  # ViT-B/16, the embedded glyph ViT
STATS_SAMPLES_PER_DIM = 2  # features per class per dimension: enough for a full-rank covariance


def grown_method(tasks: int, preset: str = "digits_hideprompt"):
    """The preset's method with `tasks` prompt slots, all of them learned (random values), and its class split."""
    from train.backbones.registry import backbone_spec
    from train.backbones.vit import create_vit, freeze
    from train.data.splits import split_classes
    from train.methods import build_method
    from train.presets import preset as load_preset

    config = load_preset(preset)
    config = replace(config, data=replace(config.data, num_tasks=tasks), **_slots(config, tasks))
    torch.manual_seed(0)
    vit = freeze(create_vit(backbone_spec(config.backbone.model)))
    split = split_classes(tasks * CLASSES_PER_TASK, tasks, False, config.seed)
    return build_method(config.method, config, vit, split).eval(), split, backbone_spec(config.backbone.model)


def _slots(config, tasks: int) -> dict:
    """The config change that gives the method `tasks` prompt slots (one per task)."""
    if hasattr(config, "adapter"):
        return {"adapter": replace(config.adapter, slots=tasks)}
    return {"prompt": replace(config.prompt, size=tasks)}


def export_grown(tasks: int, folder: Path) -> dict[str, Path]:
    from export.graphs import ClassifierGraph, RouterGraph, export_onnx
    from export.manifest import PIXEL_VALUES

    method, split, spec = grown_method(tasks)
    seen = split.seen_mask(tasks - 1)
    router, classifier = RouterGraph(method, seen).eval(), ClassifierGraph(method, seen).eval()
    x = torch.randn(2, 3, spec.img_size, spec.img_size)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"router": folder / "router.onnx", "classifier": folder / "classifier.onnx"}
    export_onnx(router, (x,), [PIXEL_VALUES], router.output_names(x), paths["router"])
    with torch.no_grad():
        condition = router(x)[0]
    export_onnx(classifier, (x, condition), classifier.input_names(), classifier.output_names(), paths["classifier"])
    return paths


def hold_and_time(folder: Path, img_size: int, calls: int) -> dict:
    """benchmarks.hold_two_step in a fresh torch-free process: its peak RSS is the sessions' and the runtime's."""
    from benchmarks.serving import child_env

    done = subprocess.run([sys.executable, "-m", "benchmarks.hold_two_step", str(folder), str(img_size), str(calls)],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def task_growth(out: Path, task_counts: tuple[int, ...], calls: int) -> dict:
    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec

    size = backbone_spec(EMBEDDED_BACKBONE).img_size
    figures = {}
    for tasks in task_counts:
        started = time.perf_counter()
        paths = export_grown(tasks, out / f"tasks{tasks}")
        held = hold_and_time(out / f"tasks{tasks}", size, calls)
        figures[str(tasks)] = {"graph_bytes": {k: p.stat().st_size for k, p in paths.items()},
                               "bundle_bytes": sum(p.stat().st_size for p in paths.values()), **held,
                               "seconds": time.perf_counter() - started}
        print(f"[bench growth] {tasks} tasks: {figures[str(tasks)]}", flush=True)
    return {"backbone": EMBEDDED_BACKBONE, "classes_per_task": CLASSES_PER_TASK, "by_tasks": figures}


def statistics_bytes(width: int, n_centroids: int = 10) -> dict[str, int]:
    """Bytes each statistics mode keeps for one class of `width`-d features (the stored tensors' sizes)."""
    from train.stats import ClassStatistics

    features = torch.randn(STATS_SAMPLES_PER_DIM * width, width, generator=torch.Generator().manual_seed(0))
    out = {}
    for mode in ("multi-centroid", "covariance", "variance"):
        stats = ClassStatistics(mode, n_centroids)
        stats.add_class(0, features, seed=0)
        out[mode] = sum(t.numel() * t.element_size() for t in (stats.means[0], stats.spreads[0]))
    return out


def growth_figures(out: Path, task_counts: tuple[int, ...] = TASK_COUNTS, calls: int = 50) -> dict:
    from train.presets import preset as load_preset

    n_centroids = load_preset("digits_hideprompt").alignment.n_centroids
    return {"tasks": task_growth(out, task_counts, calls),
            "statistics": {"n_centroids": n_centroids, "samples_per_dimension": STATS_SAMPLES_PER_DIM,
                           "bytes_per_class": {str(w): statistics_bytes(w, n_centroids) for w in STATS_WIDTHS}}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.growth", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "output" / "bench" / "growth")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--tasks", type=int, nargs="+", default=list(TASK_COUNTS))
    p.add_argument("--quick", action="store_true", help="5 latency calls per point")
    args = p.parse_args(argv)
    figures = growth_figures(args.out, tuple(args.tasks), calls=5 if args.quick else 50)
    args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
