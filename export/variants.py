"""Alternative builds of a bundle's graphs, each measured here and written only if it holds up.

- `ort-optimized`: onnxruntime's transformer optimizer (offline graph fusion, portable across machines);
  the notes say which fused operators it produced (attention fusion is pattern-based).
- `fp16`: float16 weights and compute with float32 inputs/outputs, for GPUs.
- `int8`: dynamic int8 quantisation of the MatMul weights.

A variant is published when its top-1 class agrees with the fp32 graphs on at least
`MIN_AGREEMENT` of the parity images and its accuracy is at most `MAX_ACCURACY_DROP` points lower (and, for
`SPEED_ONLY` variants, when it is faster than fp32 at the bundle's measurement batch); otherwise
it is rejected with the measured reason. One that onnxruntime cannot run on this machine is rejected too, with
the runtime's words. A converter that crashes is an error (`VariantError`), never a silent rejection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx

from train import UserError

from .manifest import PROBABILITIES, GraphSpec, Measurement, Variant, file_sha256
from .parity import BATCH, Comparison
from .runtime import TwoStep, throughput

# Variants whose only purpose is speed: published only when faster than the fp32 graphs measured just before them.
# The transformer optimizer's offline fusion can be slower than onnxruntime's own optimisation of the plain graph at
# session start (benchmarks/ort_levels.py measures both at each graph optimisation level).
SPEED_ONLY = ("ort-optimized",)
MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 1.0  # percentage points


class VariantError(UserError):
    """A variant's converter crashed: a bug here or in onnxruntime's tools, not a verdict on the variant."""


class Width(NamedTuple):
    num_heads: int
    hidden_size: int


def optimize(source: Path, target: Path, width: Width) -> str:
    from onnxruntime.transformers.optimizer import optimize_model

    # From the path: given a loaded ModelProto, the optimizer leaves large constants as dangling external data.
    model = optimize_model(str(source), model_type="vit", num_heads=width.num_heads,
                           hidden_size=width.hidden_size, opt_level=1)
    model.save_model_to_file(str(target))
    ops = Counter(n.op_type for n in model.model.graph.node)
    fused = {op: ops[op] for op in ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization",
                                    "BiasGelu", "FastGelu", "Gelu") if ops[op]}
    return f"{source.name}: fused {fused or 'nothing'}"


def to_fp16(source: Path, target: Path, _: Width) -> str:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return f"{source.name}: float16 weights and compute, float32 I/O"


def quantize_int8(source: Path, target: Path, _: Width) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return f"{source.name}: dynamic int8 MatMul/Gemm"


VARIANTS: dict[str, Callable[[Path, Path, Width], str]] = {
    "ort-optimized": optimize, "fp16": to_fp16, "int8": quantize_int8}


def build_variants(folder: Path, graphs: dict[str, GraphSpec], routing: str, width: Width, images: np.ndarray,
                   labels: np.ndarray, reference: Comparison, measurement: Measurement, names: tuple[str, ...],
                   log: Callable[[str], None]) -> tuple[list[Variant], dict[str, str]]:
    """(published variants, {rejected variant: why}) under `folder/variants/<name>/`."""
    published, rejected = [], {}
    for name in names:
        target = folder / "variants" / name
        target.mkdir(parents=True, exist_ok=True)
        try:
            notes = [VARIANTS[name](folder / g.file, target / g.file, width) for g in graphs.values()]
        except Exception as error:
            raise VariantError(f"building variant '{name}' crashed ({type(error).__name__}: {str(error)[:300]}); "
                               f"export without it (--variants {','.join(n for n in names if n != name)!r}) and "
                               "report the crash") from error
        try:
            runner = TwoStep.open(target, graphs, routing)
            predicted = np.concatenate([runner(x)[PROBABILITIES].argmax(axis=1)
                                        for x in np.array_split(images, max(1, len(images) // BATCH))])
        except Exception as error:  # onnxruntime on this machine cannot run it (e.g. a kernel it lacks)
            rejected[name] = f"onnxruntime cannot run it here: {type(error).__name__}: {str(error)[:300]}"
        else:
            agreement = float((predicted == reference.predictions).mean())
            accuracy = float((predicted == labels).mean() * 100)
            if agreement < MIN_AGREEMENT or accuracy < reference.accuracy - MAX_ACCURACY_DROP:
                rejected[name] = (f"top-1 agreement with fp32 {agreement:.4f} (need ≥ {MIN_AGREEMENT}), accuracy "
                                  f"{accuracy:.2f}% vs {reference.accuracy:.2f}% (max drop {MAX_ACCURACY_DROP} points)")
            else:
                speed = throughput(runner, images, measurement.batch_size)
                if name in SPEED_ONLY and speed <= measurement.images_per_second:
                    rejected[name] = (f"not faster than fp32: {speed:.1f} vs {measurement.images_per_second:.1f} "
                                      f"images/s at batch {measurement.batch_size} (its only purpose is speed)")
                else:
                    published.append(Variant(
                        name=name, class_agreement=agreement, notes="; ".join(notes),
                        graphs={k: g.model_copy(update={"file": f"variants/{name}/{g.file}",
                                                        "sha256": file_sha256(target / g.file)})
                                for k, g in graphs.items()},
                        measurement=measurement.model_copy(
                            update={"accuracy": accuracy, "accuracy_per_task": None, "images_per_second": speed})))
        if name in rejected:
            log(f"variant {name}: not published ({rejected[name]})")
            _remove(target)
        else:
            log(f"variant {name}: agreement {agreement:.4f}, accuracy {accuracy:.2f}%, {speed:.0f} images/s")
    return published, rejected


def _remove(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
