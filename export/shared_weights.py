"""One weights file for the tensors both graphs hold (the frozen backbone), written once at export.

The router and the classifier run the same backbone weights: exported separately, each graph carries its own
copy (the TorchScript exporter also names them differently, e.g. `onnx::MatMul_123` for a folded transpose).
`share_weights` finds the tensors that are byte-identical in every graph, gives each one canonical name in all
of them, and moves them to one safetensors file beside the graphs, referenced as ONNX external data (so any ONNX
tool still opens each graph alone). The runner (export/runtime.py) reads that file once and hands the same
memory to both sessions. Needs onnx (export time only); reading is in `export.weights_file`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .manifest import SharedWeights, file_sha256
from .weights_file import ALIGN, ONNX_DATA_TYPES, SAFETENSORS_DTYPES, WEIGHTS_FILE, read_weights

MIN_BYTES = 1024  # smaller tensors (shapes, scalars) stay inside their graph
_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


def _digest(tensor: onnx.TensorProto) -> str:
    array = numpy_helper.to_array(tensor)
    return hashlib.sha256(f"{array.dtype.str}{array.shape}".encode() + array.tobytes()).hexdigest()


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """A graph and every subgraph of its nodes (If / Loop bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _graphs(sub)


def _rename(model: onnx.ModelProto, names: dict[str, str]) -> None:
    for graph in _graphs(model.graph):
        for tensor in graph.initializer:
            tensor.name = names.get(tensor.name, tensor.name)
        for node in graph.node:
            node.input[:] = [names.get(n, n) for n in node.input]
        for value in list(graph.input) + list(graph.value_info):
            value.name = names.get(value.name, value.name)


def _candidates(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """digest → initializer of the model's main graph big enough to be worth sharing (first of equal ones)."""
    found: dict[str, onnx.TensorProto] = {}
    for tensor in model.graph.initializer:
        if tensor.data_type in ONNX_DATA_TYPES and numpy_helper.to_array(tensor).nbytes >= MIN_BYTES:
            found.setdefault(_digest(tensor), tensor)
    return found


def share_weights(paths: list[Path]) -> Path | None:
    """Move the tensors every graph of `paths` holds (same bytes, dtype and shape) to one file beside them; the
    graphs are rewritten in place to reference it. Returns the file, or None when they share nothing (one graph,
    or nothing equal)."""
    if len(paths) < 2:
        return None
    models = [onnx.load(str(p)) for p in paths]
    per_model = [_candidates(m) for m in models]
    common = sorted(set.intersection(*(set(c) for c in per_model)))
    if not common:
        return None
    canonical = {digest: f"shared.{i:04d}.{per_model[0][digest].name}" for i, digest in enumerate(common)}
    for model in models:
        # every initializer with a shared content, also a duplicate inside one graph, takes the canonical name
        equal = {t.name: canonical[d] for t in model.graph.initializer
                 if t.data_type in ONNX_DATA_TYPES and (d := _digest(t)) in canonical}
        _rename(model, equal)
        _dedupe(model)
    target = paths[0].parent / WEIGHTS_FILE
    offsets = _write(target, [(canonical[d], numpy_helper.to_array(per_model[0][d])) for d in common])
    for model, path in zip(models, paths):
        for tensor in model.graph.initializer:
            if tensor.name in offsets:
                _point_to(tensor, offsets[tensor.name])
        onnx.save(model, str(path))
    return target


def _dedupe(model: onnx.ModelProto) -> None:
    """Drop the second and later initializers of one name (two equal tensors renamed to the same one)."""
    seen, keep = set(), []
    for tensor in model.graph.initializer:
        if tensor.name not in seen:
            seen.add(tensor.name)
            keep.append(tensor)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _write(target: Path, tensors: list[tuple[str, np.ndarray]]) -> dict[str, tuple[int, int]]:
    """A safetensors file (8-byte header length, JSON header, data); each tensor's (file offset, length)."""
    header, position = {}, 0
    for name, array in tensors:
        position = -(-position // ALIGN) * ALIGN
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [position, position + array.nbytes]}
        position += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    start = -(-(8 + len(text)) // ALIGN) * ALIGN  # data starts aligned: every tensor is, in the file too
    text += b" " * (start - 8 - len(text))
    with open(target, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for name, array in tensors:
            begin = header[name]["data_offsets"][0]
            f.seek(start + begin)
            f.write(np.ascontiguousarray(array).tobytes())
    return {name: (start + header[name]["data_offsets"][0], array.nbytes) for name, array in tensors}


def _point_to(tensor: onnx.TensorProto, place: tuple[int, int]) -> None:
    """Make `tensor` ONNX external data at (offset, length) of the weights file."""
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    for key, value in (("location", WEIGHTS_FILE), ("offset", str(place[0])), ("length", str(place[1]))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def shared_weights_spec(path: Path | None) -> SharedWeights | None:
    """The manifest entry of the file `share_weights` wrote (None when the graphs share nothing)."""
    if path is None:
        return None
    return SharedWeights(file=path.name, sha256=file_sha256(path), bytes=path.stat().st_size,
                         tensors=len(read_weights(path)))
