"""Server memory of a bundle with one shared backbone copy vs the same bundle with self-contained graphs.

    python -m benchmarks.vitb_memory --bundle ROOT --version N [--json memory.json]   # any bundle
    python -m benchmarks.vitb_memory --synthetic-vitb OUT [--json memory.json]         # no training: see below

`server_memory(folder)` is what other benchmarks call: it serves the version as deployed (`python -m serve`),
sends a handful of requests (batch 1 and `batch`), and reads the server's resident set (VmRSS now, VmHWM peak) —
once for the bundle as exported (one shared weights file) and once for a self-contained copy (each graph with its
own weights, the bundle format before the shared file). The ratio to one fp32 backbone (the shared file's size)
is the figure the target names (≤ 1.3). `python -m benchmarks.suite` keeps the embedded bundle's figures under
"memory"; a ViT-B section puts `server_memory(<ViT-B version folder>, work)` under "vitb_memory" (the report marks
the target on that one).

`--synthetic-vitb` writes a two-graph bundle over a random-init `vit_base_patch16_224` (timm): the router runs the
frozen backbone, the classifier the same weights with a learned per-task token offset. Only memory and speed are
meaningful; its answers are not.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.serving import start_server, stop_server
from export.manifest import load_manifest

TARGET_RATIO = 1.3  # server RSS / one fp32 backbone


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak) of a process, MiB (Linux)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}


def self_contained_copy(folder: Path, target: Path) -> Path:
    """The version with every graph holding its own weights (no shared file): the format before it."""
    import onnx

    from export.manifest import file_sha256

    manifest = load_manifest(folder)
    target.mkdir(parents=True)
    graphs = {}
    for name, graph in manifest.graphs.items():
        onnx.save(onnx.load(str(folder / graph.file)), str(target / graph.file))  # external data loaded inline
        graphs[name] = graph.model_copy(update={"sha256": file_sha256(target / graph.file)})
    manifest.model_copy(update={"graphs": graphs, "shared_weights": None, "variants": []}).write(target)
    return target


def serve_and_measure(root: Path, version: int, shape: list[int], batch: int, requests: int) -> dict:
    """Start the server, send `requests` one-image requests and one of `batch` images, read its memory."""
    from serve.client import Client, wait_ready

    process, target, _ = start_server(root, version, "--max-batch-size", str(batch))
    try:
        client = Client.connect(target)
        wait_ready(client, 300)
        loaded = rss_mib(process.pid)  # loaded and warmed (batch 1 and 2)
        rng = np.random.default_rng(0)
        for _ in range(requests):
            client.classify(pixels=rng.standard_normal((1, *shape)).astype(np.float32), top_k=1)
        client.classify(pixels=rng.standard_normal((batch, *shape)).astype(np.float32), top_k=1)
        served = rss_mib(process.pid)
    finally:
        stop_server(process)
    return {"after_warm_mib": loaded["VmRSS"], "after_requests_mib": served["VmRSS"], "peak_mib": served["VmHWM"]}


def server_memory(folder: Path, work: Path, batch: int = 8, requests: int = 2) -> dict:
    """The server's memory on the version `folder` (shared weights as exported) and on a self-contained copy."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    size = manifest.preprocessing.img_size
    shape = [3, size, size]
    if manifest.shared_weights is None:
        return {"shared_weights": None, "note": "this bundle has no shared weights file (exported before it)"}
    copy_root = Path(work) / "self_contained"
    shutil.rmtree(copy_root, ignore_errors=True)
    self_contained_copy(folder, copy_root / folder.name)
    backbone_mib = manifest.shared_weights.bytes / 2**20
    out = {"bundle": str(folder), "backbone": manifest.backbone.timm_arch, "batch": batch, "requests": requests,
           "one_backbone_mib": backbone_mib,
           "shared": serve_and_measure(folder.parent, manifest.version, shape, batch, requests),
           "self_contained": serve_and_measure(copy_root, manifest.version, shape, batch, requests)}
    shutil.rmtree(copy_root, ignore_errors=True)
    for kind in ("shared", "self_contained"):
        figures = out[kind]
        figures["ratio_after_warm"] = figures["after_warm_mib"] / backbone_mib
        figures["ratio_after_requests"] = figures["after_requests_mib"] / backbone_mib
    out["target_ratio"] = TARGET_RATIO
    out["met"] = out["shared"]["ratio_after_requests"] <= TARGET_RATIO
    return out


# -- a ViT-B/16 bundle without training ---------------------------------------------------------------------------
def _vitb_modules(tasks: int, classes: int):
    """(router, classifier) over ONE random-init vit_base_patch16_224: the classifier adds a learned per-task
    offset to every token (a stand-in for HiDe's prompts) and has its own head."""
    import timm
    import torch
    from torch import nn

    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()

    class Router(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit, self.head = vit, nn.Linear(vit.num_features, classes)

        def forward(self, pixel_values):
            logits = self.head(self.vit(pixel_values))
            confidence, task = logits.softmax(1).unflatten(1, (tasks, -1)).sum(2).max(1)
            return task, confidence, logits

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit, self.head = vit, nn.Linear(vit.num_features, classes)
            self.prompts = nn.Parameter(torch.randn(tasks, vit.num_features) * 0.02)

        def forward(self, pixel_values, task_id):
            tokens = self.vit._pos_embed(self.vit.patch_embed(pixel_values)) + self.prompts[task_id][:, None, :]
            logits = self.head(self.vit.norm(self.vit.blocks(tokens))[:, 0])
            return logits, logits.softmax(1)

    return Router().eval(), Classifier().eval()


def write_synthetic_vitb(root: Path, version: int = 1, tasks: int = 2, classes_per_task: int = 5) -> Path:
    """A task-routed bundle over random-init vit_base_patch16_224, exported as export/ exports (TorchScript
    exporter, then the shared weights file); parity is checked against the torch modules on two images."""
    from datetime import UTC, datetime

    import torch

    from export.bundle import EXPORTER, graph_spec
    from export.graphs import export_onnx
    from export.manifest import (
        LOGITS,
        PIXEL_VALUES,
        PROBABILITIES,
        ROUTER_LOGITS,
        TASK_CONFIDENCE,
        TASK_ID,
        Manifest,
    )
    from export.runtime import TwoStep
    from export.shared_weights import share_weights, shared_weights_spec

    classes = tasks * classes_per_task
    router, classifier = _vitb_modules(tasks, classes)
    folder = Path(root) / str(version)
    folder.mkdir(parents=True)
    x = torch.randn(2, 3, 224, 224)
    export_onnx(router, (x,), [PIXEL_VALUES], [TASK_ID, TASK_CONFIDENCE, ROUTER_LOGITS], folder / "router.onnx")
    export_onnx(classifier, (x, torch.tensor([0, 1])), [PIXEL_VALUES, TASK_ID], [LOGITS, PROBABILITIES],
                folder / "classifier.onnx")
    shared = shared_weights_spec(share_weights([folder / "router.onnx", folder / "classifier.onnx"]))
    graphs = {name: graph_spec(folder / f"{name}.onnx") for name in ("router", "classifier")}
    with torch.no_grad():
        task, _, router_logits = router(x)
        logits = classifier(x, task)[0]
    out = TwoStep.open(folder, graphs, "task", shared.file)(x.numpy())
    diff = float(np.abs(out[LOGITS] - logits.numpy()).max())
    router_diff = float(np.abs(out[ROUTER_LOGITS] - router_logits.numpy()).max())
    manifest = Manifest.model_validate({
        "version": version, "created_at": datetime.now(UTC).isoformat(), "method": "synthetic_vitb", "routing": "task",
        "backbone": {"name": "vit_base_patch16_224 (random init)", "timm_arch": "vit_base_patch16_224",
                     "sha256": "0" * 64},
        "preprocessing": {"img_size": 224, "resize_size": 248, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                          "interpolation": "bicubic", "crop_pct": 0.9},
        "class_names": [f"class_{c}" for c in range(classes)],
        "class_to_task": [c // classes_per_task for c in range(classes)],
        "tasks_learned": tasks, "num_tasks": tasks, "seen_classes": list(range(classes)),
        "graphs": {n: g.model_copy(update={"exporter": EXPORTER}) for n, g in graphs.items()},
        "shared_weights": shared,
        "source": {"run_dir": "synthetic", "preset": "synthetic_vitb", "task": tasks - 1,
                   "checkpoint_sha256": "0" * 64},
        "parity": {"dataset": "random pixels", "samples": 2, "tolerance": 1e-4,
                   "router_task_agreement": float((out[TASK_ID] == task.numpy()).mean()),
                   "class_agreement": float((out[PROBABILITIES].argmax(1) == logits.argmax(1).numpy()).mean()),
                   "max_abs_logit_diff": diff, "router_max_abs_logit_diff": router_diff,
                   "passed": max(diff, router_diff) <= 1e-4},
        "measurement": {"accuracy": 0.0, "images_per_second": 0.0, "batch_size": 1, "machine": "synthetic"},
    })
    manifest.write(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vitb_memory", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, help="bundle root")
    p.add_argument("--version", type=int)
    p.add_argument("--synthetic-vitb", type=Path, help="write a random-init ViT-B/16 bundle under this root first")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.synthetic_vitb is not None:
        folder = write_synthetic_vitb(args.synthetic_vitb)
    elif args.bundle is not None and args.version is not None:
        folder = args.bundle / str(args.version)
    else:
        p.error("give --bundle ROOT --version N, or --synthetic-vitb OUT")
    figures = server_memory(folder, folder.parent / ".memory-work", args.batch)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
