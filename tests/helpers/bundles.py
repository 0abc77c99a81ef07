"""Synthetic-but-real bundles for the server tests: tiny torch modules that obey the export contract,
exported to ONNX (TorchScript exporter, opset 17, dynamic batch axis) with a manifest that validates
with `export.manifest`. Fast (no training), and every routing of the contract is covered. Servers that serve
them: tests/helpers/servers.py."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from export.manifest import (
    LOGITS,
    PIXEL_VALUES,
    PROBABILITIES,
    PROMPT_IDS,
    ROUTER_LOGITS,
    TASK_CONFIDENCE,
    TASK_ID,
    Manifest,
    file_sha256,
)

IMG = 8  # input side: tiny graphs, real shapes
NUM_TASKS = 3
CLASSES_PER_TASK = 2
NUM_CLASSES = NUM_TASKS * CLASSES_PER_TASK
POOL, TOP_K = 5, 2  # L2P-like prompt pool
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
NEG = float("-inf")  # unseen classes, as the exporter masks them


def class_to_task() -> list[int]:
    return [c // CLASSES_PER_TASK for c in range(NUM_CLASSES)]


class _Features(nn.Module):
    """Pooled 4×4 patches → 16-d features: depends on where the pixels are, so inputs matter."""

    def __init__(self, seen: int) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 16, 16)
        nn.init.normal_(self.proj.weight, std=2.0)  # saturating features: varied classes and tasks per input
        mask = torch.full((NUM_CLASSES,), NEG)
        mask[:seen] = 0.0
        self.register_buffer("mask", mask)
        onehot = torch.zeros(NUM_CLASSES, NUM_TASKS)
        onehot[torch.arange(NUM_CLASSES), torch.tensor(class_to_task())] = 1.0
        self.register_buffer("class_task", onehot)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)))

    def task_of(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task_probs = probs @ self.class_task
        confidence, task = task_probs.max(dim=1)
        return task, confidence


class Router(_Features):
    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, pixel_values):
        logits = self.head(self.features(pixel_values)) + self.mask
        task, confidence = self.task_of(logits.softmax(dim=1))
        return task, confidence, logits


class TaskClassifier(_Features):
    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.prompts = nn.Parameter(torch.randn(NUM_TASKS, 16))
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, pixel_values, task_id):
        logits = self.head(self.features(pixel_values) + self.prompts[task_id]) + self.mask
        return logits, logits.softmax(dim=1)


class PromptRouter(_Features):
    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.keys = nn.Parameter(torch.randn(POOL, 16))

    def forward(self, pixel_values):
        similarity = self.features(pixel_values) @ self.keys.t()
        top, ids = similarity.topk(TOP_K, dim=1)
        return ids, torch.sigmoid(top[:, 0])


class PromptClassifier(_Features):
    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.prompts = nn.Parameter(torch.randn(POOL, 16))
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, pixel_values, prompt_ids):
        logits = self.head(self.features(pixel_values) + self.prompts[prompt_ids].mean(dim=1)) + self.mask
        return logits, logits.softmax(dim=1)


class SingleGraph(_Features):
    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, pixel_values):
        logits = self.head(self.features(pixel_values)) + self.mask
        probs = logits.softmax(dim=1)
        task, confidence = self.task_of(probs)
        return logits, probs, task, confidence


def _spec(name: str, datatype: str, shape: list[int]) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape}


PIX = _spec(PIXEL_VALUES, "FP32", [-1, 3, IMG, IMG])
C_OUT = [_spec(LOGITS, "FP32", [-1, NUM_CLASSES]), _spec(PROBABILITIES, "FP32", [-1, NUM_CLASSES])]
TASK_OUT = [_spec(TASK_ID, "INT64", [-1]), _spec(TASK_CONFIDENCE, "FP32", [-1])]
GRAPHS = {  # routing → {graph: (module class, example extra inputs, input specs, output specs)}
    "task": {
        "router": (Router, [], [PIX], [TASK_OUT[0], TASK_OUT[1], _spec(ROUTER_LOGITS, "FP32", [-1, NUM_CLASSES])]),
        "classifier": (TaskClassifier, [torch.tensor([0, 1])], [PIX, _spec(TASK_ID, "INT64", [-1])], C_OUT),
    },
    "prompt_set": {
        "router": (PromptRouter, [], [PIX], [_spec(PROMPT_IDS, "INT64", [-1, TOP_K]), TASK_OUT[1]]),
        "classifier": (PromptClassifier, [torch.tensor([[0, 1], [2, 3]])],
                       [PIX, _spec(PROMPT_IDS, "INT64", [-1, TOP_K])], C_OUT),
    },
    "none": {"classifier": (SingleGraph, [], [PIX], C_OUT + TASK_OUT)},
}


def _export(module: nn.Module, extra: list[torch.Tensor], inputs: list[dict], outputs: list[dict], path: Path) -> None:
    names_in, names_out = [t["name"] for t in inputs], [t["name"] for t in outputs]
    example = (torch.rand(2, 3, IMG, IMG), *extra)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module.eval(), example, str(path), dynamo=False, opset_version=17, input_names=names_in,
                          output_names=names_out, dynamic_axes={n: {0: "batch"} for n in names_in + names_out})


def write_bundle(root: Path, version: int, routing: str = "task", tasks_learned: int = 2, seed: int = 0) -> Path:
    """Export a bundle version `<root>/<version>/` (graphs + manifest) and return its folder."""
    folder = Path(root) / str(version)
    folder.mkdir(parents=True, exist_ok=False)
    torch.manual_seed(seed)
    seen = tasks_learned * CLASSES_PER_TASK
    graphs = {}
    for name, (cls, extra, inputs, outputs) in GRAPHS[routing].items():
        file = folder / f"{name}.onnx"
        with torch.no_grad():
            _export(cls(seen), extra, inputs, outputs, file)
        graphs[name] = {"file": file.name, "sha256": file_sha256(file), "inputs": inputs, "outputs": outputs,
                        "opset": 17, "exporter": f"torch.onnx (dynamo=False) {torch.__version__}"}
    manifest = Manifest.model_validate({
        "version": version, "created_at": datetime.now(UTC).isoformat(), "method": f"synthetic_{routing}",
        "routing": routing,
        "backbone": {"name": "synthetic", "timm_arch": "none", "sha256": "0" * 64},
        "preprocessing": {"img_size": IMG, "resize_size": IMG, "mean": MEAN, "std": STD,
                          "interpolation": "bilinear", "crop_pct": 1.0},
        "class_names": [f"class_{c}" for c in range(NUM_CLASSES)], "class_to_task": class_to_task(),
        "tasks_learned": tasks_learned, "num_tasks": NUM_TASKS, "seen_classes": list(range(seen)),
        "graphs": graphs,
        "source": {"run_dir": "synthetic", "preset": "synthetic", "task": tasks_learned - 1,
                   "checkpoint_sha256": "0" * 64},
        "parity": {"dataset": "synthetic", "samples": 1, "tolerance": 1e-4, "router_task_agreement": None,
                   "class_agreement": 1.0, "max_abs_logit_diff": 0.0, "router_max_abs_logit_diff": None,
                   "passed": True},
        "measurement": {"accuracy": 0.0, "images_per_second": 0.0, "batch_size": 1, "machine": "synthetic"},
    })
    manifest.write(folder)
    return folder
