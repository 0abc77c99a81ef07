"""A Triton model repository from a bundle version: `router`, `classifier`, and the `pipeline` ensemble.

`<repo>/<model>/config.pbtxt` + `<repo>/<model>/<version>/model.onnx`; the ensemble chains the graphs
without Python because the router graph itself outputs the classifier's condition (task id or L2P's
prompt set). Tensors of shape [N] travel as dims [1] reshaped to [] (Triton's rule for batch-only
tensors).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from train.errors import UserError

from .manifest import GraphSpec, Manifest, TensorSpec, load_manifest

MAX_BATCH_SIZE = 64
MAX_QUEUE_DELAY_US = 2000
TRITON_TYPES = {"FP32": "TYPE_FP32", "FP16": "TYPE_FP16", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32",
                "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8"}


def tensor_config(tensor: TensorSpec) -> str:
    dims = tensor.shape[1:]  # max_batch_size > 0: dims exclude the batch axis
    shape = f"dims: [ {', '.join(map(str, dims))} ]" if dims else "dims: [ 1 ] reshape: { shape: [ ] }"
    return f'  {{ name: "{tensor.name}" data_type: {TRITON_TYPES[tensor.datatype]} {shape} }}'


def io_config(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
    def block(kind: str, tensors: list[TensorSpec]) -> str:
        return f"{kind} [\n" + ",\n".join(map(tensor_config, tensors)) + "\n]\n"

    return block("input", inputs) + block("output", outputs)


def onnx_model_config(name: str, graph: GraphSpec) -> str:
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {MAX_BATCH_SIZE}\n'
            + io_config(graph.inputs, graph.outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}\n"
            + "instance_group [ { count: 1 kind: KIND_AUTO } ]\n")


def ensemble_step(model: str, graph: GraphSpec) -> str:
    maps = [f'input_map {{ key: "{t.name}" value: "{t.name}" }}' for t in graph.inputs]
    maps += [f'output_map {{ key: "{t.name}" value: "{t.name}" }}' for t in graph.outputs]
    return f'    {{ model_name: "{model}" model_version: -1\n      ' + "\n      ".join(maps) + " }"


def ensemble_config(manifest: Manifest) -> str:
    """The two-step pipeline: every router output and every classifier output, fed by `pixel_values`."""
    steps = [name for name in ("router", "classifier") if name in manifest.graphs]
    outputs = {t.name: t for name in steps for t in manifest.graphs[name].outputs}
    first_inputs = manifest.graphs[steps[0]].inputs[:1]  # pixel_values
    return ('name: "pipeline"\nplatform: "ensemble"\n'
            f"max_batch_size: {MAX_BATCH_SIZE}\n" + io_config(first_inputs, list(outputs.values()))
            + "ensemble_scheduling {\n  step [\n"
            + ",\n".join(ensemble_step(name, manifest.graphs[name]) for name in steps) + "\n  ]\n}\n")


def write_triton_repo(bundle_version: str | Path, repo: str | Path) -> Path:
    """Add the bundle version to the repository (configs rewritten, earlier versions kept)."""
    bundle_version, repo = Path(bundle_version), Path(repo)
    manifest = load_manifest(bundle_version)
    version = str(manifest.version)
    for name in [*manifest.graphs, "pipeline"]:
        if (repo / name / version).exists():
            raise UserError(f"Triton repository '{repo}' already holds version {version} of '{name}'.")
    for name, graph in manifest.graphs.items():
        (repo / name / version).mkdir(parents=True)
        shutil.copyfile(bundle_version / graph.file, repo / name / version / "model.onnx")
        (repo / name / "config.pbtxt").write_text(onnx_model_config(name, graph))
    (repo / "pipeline" / version).mkdir(parents=True)  # Triton wants a version folder, empty for an ensemble
    (repo / "pipeline" / "config.pbtxt").write_text(ensemble_config(manifest))
    return repo
