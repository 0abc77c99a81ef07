"""The one two-step runner (export/runtime.py) and the shared weights file (export/shared_weights.py) on tiny
bundles whose router and classifier hold the same features layer, as HiDe's graphs hold the same backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.manifest import PIXEL_VALUES, TASK_ID, Manifest, ManifestError, file_sha256, load_manifest
from export.runtime import TwoStep
from export.shared_weights import share_weights, shared_weights_spec
from export.weights_file import WEIGHTS_FILE, read_weights
from serve.runtime import NO_HINT, BundleRuntime
from tests.helpers.bundles import GRAPHS, IMG, _export, write_bundle

PIXELS = np.random.default_rng(3).standard_normal((5, 3, IMG, IMG)).astype(np.float32)


def _same_backbone_graphs(folder: Path) -> None:
    """Overwrite the version's task-routed graphs with ones whose features layer is the same tensor."""
    manifest = load_manifest(folder, verify_files=False)
    seen = len(manifest.seen_classes)
    torch.manual_seed(1)
    modules = {name: cls(seen) for name, (cls, *_) in GRAPHS["task"].items()}
    modules["classifier"].proj.load_state_dict(modules["router"].proj.state_dict())
    for name, (_, extra, inputs, outputs) in GRAPHS["task"].items():
        with torch.no_grad():
            _export(modules[name], extra, inputs, outputs, folder / f"{name}.onnx")
    _rewrite(folder, manifest)


def _rewrite(folder: Path, manifest: Manifest, **update) -> None:
    graphs = {n: g.model_copy(update={"sha256": file_sha256(folder / g.file)}) for n, g in manifest.graphs.items()}
    manifest.model_copy(update={"graphs": graphs, **update}).write(folder)


def _shared_copy(self_contained: Path, root: Path) -> Path:
    """The same version with its common tensors moved to the shared weights file."""
    folder = root / self_contained.name
    shutil.copytree(self_contained, folder)
    manifest = load_manifest(folder)
    path = share_weights([folder / g.file for g in manifest.graphs.values()])
    assert path == folder / WEIGHTS_FILE
    _rewrite(folder, manifest, shared_weights=shared_weights_spec(path))
    return folder


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shared")
    own = write_bundle(root / "own", 1, "task")
    _same_backbone_graphs(own)
    return {"own": own, "shared": _shared_copy(own, root / "shared")}


def _direct(folder: Path) -> dict[str, np.ndarray]:
    """The previous path: plain sessions on the graph files, router's task id into the classifier."""
    router = ort.InferenceSession(str(folder / "router.onnx"), providers=["CPUExecutionProvider"])
    classifier = ort.InferenceSession(str(folder / "classifier.onnx"), providers=["CPUExecutionProvider"])
    task = router.run(None, {PIXEL_VALUES: PIXELS})[0]
    return dict(zip(["logits", "probabilities"], classifier.run(None, {PIXEL_VALUES: PIXELS, TASK_ID: task})))


def test_the_runner_gives_exactly_what_plain_sessions_give(bundles):
    folder = bundles["own"]
    ours = TwoStep.of_bundle(folder, load_manifest(folder))(PIXELS)
    for name, expected in _direct(folder).items():
        np.testing.assert_array_equal(ours[name], expected)


def test_the_common_tensors_move_to_one_file_both_graphs_reference(bundles):
    folder = bundles["shared"]
    weights = read_weights(folder / WEIGHTS_FILE)
    assert any(a.shape == (16, 48) or a.shape == (48, 16) for a in weights.values())  # the features layer
    for graph in ("router", "classifier"):
        model = onnx.load(str(folder / f"{graph}.onnx"), load_external_data=False)
        external = {t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
        assert external == set(weights)  # every shared tensor, under the same canonical name in both graphs
        own = {t.name for t in model.graph.initializer} - external
        assert "head.weight" in own  # each graph keeps what is its own


def test_a_shared_weights_bundle_answers_as_the_self_contained_one(bundles):
    own = TwoStep.of_bundle(bundles["own"], load_manifest(bundles["own"]))(PIXELS)
    runner = TwoStep.of_bundle(bundles["shared"], load_manifest(bundles["shared"]))
    assert runner.shared  # read once, handed to both sessions
    shared = runner(PIXELS)
    np.testing.assert_array_equal(shared[TASK_ID], own[TASK_ID])
    for name in ("router_logits", "logits", "probabilities"):
        np.testing.assert_allclose(shared[name], own[name], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(shared["probabilities"].argmax(1), own["probabilities"].argmax(1))


def test_the_server_runtime_serves_a_shared_weights_bundle(bundles):
    hints = np.full(len(PIXELS), NO_HINT, np.int64)
    answers = {}
    for kind in ("own", "shared"):
        runtime = BundleRuntime.load(bundles[kind], ("CPUExecutionProvider",))
        answers[kind] = runtime.execute(PIXELS, hints)
        runtime.retire()
        assert runtime.sessions == {}
    np.testing.assert_array_equal(answers["shared"]["class_id"], answers["own"]["class_id"])
    np.testing.assert_allclose(answers["shared"]["logits"], answers["own"]["logits"], rtol=0, atol=1e-6)


def test_each_graph_still_opens_alone_with_any_onnx_tool(bundles):
    """The graphs reference the file as ONNX external data: plain onnxruntime finds it beside them."""
    folder = bundles["shared"]
    logits = _direct(folder)["logits"]
    np.testing.assert_allclose(logits, _direct(bundles["own"])["logits"], rtol=0, atol=1e-6)


def test_a_modified_shared_weights_file_is_refused(bundles, tmp_path):
    folder = tmp_path / "1"
    shutil.copytree(bundles["shared"], folder)
    with open(folder / WEIGHTS_FILE, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")
    with pytest.raises(ManifestError, match=f"'{WEIGHTS_FILE}' does not match its SHA-256"):
        load_manifest(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ManifestError, match="shared weights file .* is missing"):
        load_manifest(folder)


def test_a_shared_weights_file_outside_the_version_folder_is_refused(bundles, tmp_path):
    folder = tmp_path / "1"
    shutil.copytree(bundles["shared"], folder)
    outside = tmp_path / "elsewhere.safetensors"
    (folder / WEIGHTS_FILE).rename(outside)
    (folder / WEIGHTS_FILE).symlink_to(outside)
    with pytest.raises(ManifestError, match="shared weights file .* resolves outside the version folder"):
        load_manifest(folder)
    text = (folder / "manifest.json").read_text().replace(f'"file": "{WEIGHTS_FILE}"', '"file": "../x.safetensors"')
    (folder / "manifest.json").write_text(text)
    with pytest.raises(ManifestError, match="must be a path inside the version folder"):
        load_manifest(folder, verify_files=False)


def test_graphs_that_share_nothing_stay_self_contained(tmp_path):
    """Different features layers (the helper's bundles) or a single graph: no file, graphs untouched."""
    folder = write_bundle(tmp_path, 1, "task")
    before = {p.name: file_sha256(p) for p in folder.glob("*.onnx")}
    assert share_weights([folder / "router.onnx", folder / "classifier.onnx"]) is None
    assert share_weights([folder / "classifier.onnx"]) is None
    assert {p.name: file_sha256(p) for p in folder.glob("*.onnx")} == before
    assert not (folder / WEIGHTS_FILE).exists()
