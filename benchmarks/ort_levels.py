"""Why "ort-optimized" is or is not faster: the bundle's fp32 graphs and the transformer optimizer's offline build
of them (export/variants.py's converter) side by side at each onnxruntime graph optimisation level.

onnxruntime optimises a plain graph itself when the session starts (the server's sessions use its default level,
ORT_ENABLE_ALL, export/runtime.py's session options). The offline build is what the optimizer's Python fusions
make of the graph first; this measures, at each level, two-step images/s of both (alternated, `rounds` times,
median kept) and names the operators the offline build fused, so the report can say where the difference is.
"""

from __future__ import annotations

import shutil
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

LEVELS = ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


def width_of(backbone: str):
    """Heads and width of a registered backbone, as export passes them; (0, 0) (the optimizer reads them from the
    graph) for a backbone the registry does not know."""
    from export.variants import Width
    from train.backbones.registry import BACKBONES, backbone_spec
    from train.backbones.vit import create_vit

    if backbone not in BACKBONES:
        return Width(0, 0)
    vit = create_vit(backbone_spec(backbone))
    return Width(vit.blocks[0].attn.num_heads, vit.num_features)


def runner_at(folder: Path, files: dict[str, str], routing: str, level: str):
    from export.runtime import CPU, TwoStep, session_options

    sessions = {}
    for name, file in files.items():
        options = session_options()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        sessions[name] = ort.InferenceSession(str(folder / file), options, providers=[CPU])
    return TwoStep(sessions, routing)


def changed_operators(plain: Path, optimized: Path) -> dict[str, list[int]]:
    """{operator: [count in the plain graph, count in the offline build]} for the operators whose count changed."""
    import onnx

    before, after = (Counter(n.op_type for n in onnx.load(str(p), load_external_data=False).graph.node)
                     for p in (plain, optimized))
    return {op: [before[op], after[op]] for op in sorted(set(before) | set(after)) if before[op] != after[op]}


def level_figures(folder: Path, work: Path, batch: int, seconds: float, rounds: int = 2) -> dict:
    from benchmarks.serving import timed_rate
    from export.manifest import load_manifest
    from export.variants import optimize

    manifest = load_manifest(folder)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = {name: g.file for name, g in manifest.graphs.items()}
    notes = [optimize(folder / file, work / file, width_of(manifest.backbone.name)) for file in files.values()]
    size = manifest.preprocessing.img_size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    out: dict = {"batch": batch, "rounds": rounds, "fused": notes, "server_level": "ORT_ENABLE_ALL",
                 "operators_changed": {name: changed_operators(folder / file, work / file)
                                       for name, file in files.items()}, "by_level": {}}
    for level in LEVELS:
        pair = {"fp32": runner_at(folder, files, manifest.routing, level),
                "ort-optimized": runner_at(work, files, manifest.routing, level)}
        rates: dict[str, list[float]] = {name: [] for name in pair}
        for _ in range(rounds):
            for name, runner in pair.items():
                rates[name].append(timed_rate(lambda r=runner: r(x), batch, seconds, max_rounds=200))
        kept = {name: statistics.median(r) for name, r in rates.items()}
        out["by_level"][level] = {**kept, "all_rounds": rates, "ratio": kept["ort-optimized"] / kept["fp32"]}
    return out
