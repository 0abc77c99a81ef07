"""A Triton model repository from a bundle version: `router`, `classifier`, and the `pipeline` ensemble.

`<repo>/<model>/config.pbtxt` + `<repo>/<model>/<version>/model.onnx`; the ensemble chains the graphs
without Python because the router graph itself outputs the classifier's condition (task id or L2P's
prompt set). Tensors of shape [N] travel as dims [1] reshaped to [] (Triton's rule for batch-only
tensors). `labels.txt` (one class name per line, in class id order) sits beside the classifier's and the
pipeline's config, and their per-class outputs name it as `label_filename`, so Triton's classification
extension (`class_count`) answers with class names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from train import UserError

from .manifest import LOGITS, PROBABILITIES, GraphSpec, Manifest, TensorSpec, load_manifest

MAX_BATCH_SIZE = 64
MAX_QUEUE_DELAY_US = 2000
LABELS = "labels.txt"
CLASS_OUTPUTS = (LOGITS, PROBABILITIES)  # [N, C] outputs: Triton's classification extension labels them
TRITON_TYPES = {"FP32": "TYPE_FP32", "FP16": "TYPE_FP16", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32",
                "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8"}


def tensor_config(tensor: TensorSpec, labelled: bool = False) -> str:
    dims = tensor.shape[1:]  # max_batch_size > 0: dims exclude the batch axis
    shape = f"dims: [ {', '.join(map(str, dims))} ]" if dims else "dims: [ 1 ] reshape: { shape: [ ] }"
    label = f' label_filename: "{LABELS}"' if labelled and tensor.name in CLASS_OUTPUTS else ""
    return f'  {{ name: "{tensor.name}" data_type: {TRITON_TYPES[tensor.datatype]} {shape}{label} }}'


def io_config(inputs: list[TensorSpec], outputs: list[TensorSpec], labelled: bool = False) -> str:
    def block(kind: str, tensors: list[TensorSpec], labels: bool) -> str:
        return f"{kind} [\n" + ",\n".join(tensor_config(t, labels) for t in tensors) + "\n]\n"

    return block("input", inputs, False) + block("output", outputs, labelled)


def onnx_model_config(name: str, graph: GraphSpec, labelled: bool = False) -> str:
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {MAX_BATCH_SIZE}\n'
            + io_config(graph.inputs, graph.outputs, labelled)
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
            f"max_batch_size: {MAX_BATCH_SIZE}\n" + io_config(first_inputs, list(outputs.values()), labelled=True)
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
        if manifest.shared_weights is not None:  # the graph's external data, found beside it
            shutil.copyfile(bundle_version / manifest.shared_weights.file,
                            repo / name / version / manifest.shared_weights.file)
        (repo / name / "config.pbtxt").write_text(onnx_model_config(name, graph, labelled=name == "classifier"))
    (repo / "pipeline" / version).mkdir(parents=True)  # Triton wants a version folder, empty for an ensemble
    (repo / "pipeline" / "config.pbtxt").write_text(ensemble_config(manifest))
    for name in ("classifier", "pipeline"):
        write_labels(repo / name / LABELS, manifest.class_names)
    return repo


def write_labels(path: Path, names: list[str]) -> None:
    """One name per line in class id order. Class ids only ever grow, so the longest list serves every version:
    an older version's file is kept when it already names more classes."""
    if any("\n" in n or "\r" in n for n in names):
        raise UserError("a class name holds a line break: it cannot be a Triton label (rename the class).")
    if path.is_file() and len(path.read_text().splitlines()) > len(names):
        return
    path.write_text("".join(f"{n}\n" for n in names))
