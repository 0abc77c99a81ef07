"""A trained run → a bundle version: graphs, parity, measurements, variants, manifest; written atomically."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import onnx
import torch

from train import TrainedRun, UserError, held_out_images, load_trained

from .graphs import EXPORTER, ClassifierGraph, RouterGraph, export_onnx
from .machine import onnxruntime_cpu_machine
from .manifest import (
    PIXEL_VALUES,
    Backbone,
    GraphSpec,
    Manifest,
    Measurement,
    Preprocessing,
    Source,
    TaskInfo,
    TensorSpec,
    file_sha256,
)
from .parity import Comparison, compare, describe_failure
from .runtime import TwoStep, throughput
from .shared_weights import share_weights, shared_weights_spec
from .variants import VARIANTS, Width, build_variants

GRAPH_FILES = {"router": "router.onnx", "classifier": "classifier.onnx"}
BENCH_BATCH = 32
DTYPES = {onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16", onnx.TensorProto.INT64: "INT64",
          onnx.TensorProto.INT32: "INT32", onnx.TensorProto.BOOL: "BOOL", onnx.TensorProto.UINT8: "UINT8"}


class Refused(UserError):
    """The bundle was built but must not be published (parity failed, or a guard rail said no)."""


def export_bundle(run_dir: str | Path, out_root: str | Path, task: int | None = None, version: int | None = None,
                  backbone_checkpoint: str | None = None, variants: tuple[str, ...] = tuple(VARIANTS),
                  parity_samples: int = 2000, log: Callable[[str], None] = print,
                  gate: Callable[[Manifest], None] | None = None) -> Path:
    """Export the run after `task` (default: last completed) as `<out_root>/<version>` (default: tasks learned).

    `gate` sees the finished manifest before publication and raises `Refused` to keep the version out.
    """
    run = load_trained(run_dir, task, backbone_checkpoint)
    version = version or run.task + 1
    final = Path(out_root) / str(version)
    if final.exists():
        raise UserError(f"bundle version '{final}' already exists; versions are never overwritten: pass "
                        "--version N for another number, or export to another --out.")
    images, labels = held_out_images(run, parity_samples)
    with staging(final) as folder:
        files = write_graphs(run, images[:4], folder)
        shared = shared_weights_spec(share_weights(list(files.values())))
        graphs = {name: graph_spec(path) for name, path in files.items()}  # checked as published
        runner = TwoStep.open(folder, graphs, run.method.routing, shared.file if shared else None)
        result = compare(run.method, run.seen, runner, images, labels, run.config.data.dataset)
        if not result.parity.passed:
            raise Refused(describe_failure(result.parity) + "; nothing was written.")
        log(f"parity: {result.parity.samples} images, router agreement {result.parity.router_task_agreement}, "
            f"class agreement {result.parity.class_agreement:.4f}, max |Δlogit| {result.parity.max_abs_logit_diff:.2e}")
        measurement = measure(runner, images.numpy(), result)
        vit = run.backbone.vit
        width = Width(vit.blocks[0].attn.num_heads, vit.num_features)
        built, rejected = build_variants(folder, graphs, run.method.routing, width, images.numpy(), labels.numpy(),
                                         result, measurement, variants, log)
        manifest = build_manifest(run, version, graphs, result.parity, measurement, built, rejected)
        manifest = manifest.model_copy(update={"shared_weights": shared})
        if gate is not None:
            gate(manifest)
        manifest.write(folder)
    log(f"bundle version {version} → {final} (served accuracy {result.accuracy:.2f}%, "
        f"{measurement.images_per_second:.0f} images/s at batch {measurement.batch_size})")
    return final


@contextmanager
def staging(final: Path):
    """A private folder beside `final`, renamed to it only when everything inside is written."""
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def write_graphs(run: TrainedRun, example: torch.Tensor, folder: Path) -> dict[str, Path]:
    """The run's router (when it routes) and classifier as ONNX files in `folder`, by graph name."""
    classifier = ClassifierGraph(run.method, run.seen)
    files = {}
    if run.method.routing != "none":
        router = RouterGraph(run.method, run.seen)
        names = router.output_names(example)
        export_onnx(router, (example,), [PIXEL_VALUES], names, folder / GRAPH_FILES["router"])
        files["router"] = folder / GRAPH_FILES["router"]
        with torch.no_grad():
            example_inputs = (example, router(example)[0])
    else:
        example_inputs = (example,)
    export_onnx(classifier, example_inputs, classifier.input_names(), classifier.output_names(),
                folder / GRAPH_FILES["classifier"])
    files["classifier"] = folder / GRAPH_FILES["classifier"]
    return files


def graph_spec(path: Path) -> GraphSpec:
    """The graph's I/O as onnx records it (after a full checker pass)."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)

    def tensors(values) -> list[TensorSpec]:
        return [TensorSpec(name=v.name, datatype=DTYPES[v.type.tensor_type.elem_type],
                           shape=[d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
                for v in values]

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return GraphSpec(file=path.name, sha256=file_sha256(path), inputs=tensors(model.graph.input),
                     outputs=tensors(model.graph.output), opset=opset, exporter=EXPORTER)


def measure(runner: TwoStep, images, result: Comparison) -> Measurement:
    batch = min(BENCH_BATCH, len(images))  # never more than the held-out images (a ViT-B export checks a few)
    return Measurement(accuracy=result.accuracy, accuracy_per_task=result.accuracy_per_task,
                       images_per_second=throughput(runner, images, batch), batch_size=batch,
                       machine=onnxruntime_cpu_machine())


def task_infos(run: TrainedRun, names: list[str]) -> list[TaskInfo]:
    """Every task of the run with its classes. The data's named tasks are the last ones (all of ImageFolder's,
    the folder tasks after a benchmark's own); the others are "task<k>"."""
    tasks = run.split.task_classes
    recorded = run.task_names
    first = len(tasks) - len(recorded)
    return [TaskInfo(task_id=t, name=recorded[t - first] if 0 <= first <= t else f"task{t + 1}",
                     class_ids=list(classes), class_names=[names[c] for c in classes])
            for t, classes in enumerate(tasks)]


def build_manifest(run: TrainedRun, version: int, graphs, parity, measurement, variants, rejected) -> Manifest:
    spec = run.backbone.spec
    return Manifest(
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        method=run.config.method,
        routing=run.method.routing,
        answer_scope="routed_task" if run.method.answers_within_routed_task else "seen",
        backbone=Backbone(name=spec.name, timm_arch=spec.timm_arch, sha256=run.backbone.weights_sha256,
                          random_init=run.backbone.random_init),
        preprocessing=Preprocessing(img_size=spec.img_size, resize_size=int(round(spec.img_size / spec.crop_pct)),
                                    mean=spec.mean, std=spec.std, interpolation=spec.interpolation,
                                    crop_pct=spec.crop_pct),
        class_names=(names := run.class_names),
        class_to_task=run.class_to_task.tolist(),
        tasks_learned=run.task + 1,
        num_tasks=run.split.num_tasks,
        seen_classes=run.seen_classes,
        tasks=task_infos(run, names),
        graphs=graphs,
        source=Source(run_dir=str(run.run_dir.resolve()), preset=run.config.preset, task=run.task,
                      checkpoint_sha256=run.checkpoint_sha256),
        parity=parity,
        measurement=measurement,
        variants=variants,
        rejected_variants=rejected,
    )

