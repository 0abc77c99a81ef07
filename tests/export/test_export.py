"""Export: trained runs → bundle versions whose graphs match PyTorch, with a manifest serve/ can read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.manifest import (
    LOGITS,
    PIXEL_VALUES,
    PROBABILITIES,
    TASK_ID,
    ManifestError,
    bundle_versions,
    file_sha256,
    load_manifest,
)
from export.variants import SPEED_ONLY
from tests.helpers.runs import FAST, REPO, child_env, run_main

METHODS = ["hideprompt", "hidelora", "dualprompt", "sprompt", "l2p", "continual_lora"]
pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="session")
def runs(tmp_path_factory, random_backbone) -> dict[str, Path]:
    """One quick Split-Digits run per method (routing by task: HiDe-Prompt/-LoRA, DualPrompt, S-Prompt++; by
    prompt set: L2P; none: Continual-LoRA)."""
    root = tmp_path_factory.mktemp("runs")
    for method in METHODS:
        done = run_main([f"digits_{method}", "--output_dir", str(root / method),
                         f"backbone.checkpoint={random_backbone}", *FAST])
        assert done.returncode == 0, done.stderr[-2000:]
    return {m: root / m for m in METHODS}


def export(run: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", str(run), "--out", str(out), *extra], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def exported(runs, tmp_path_factory) -> dict[str, Path]:
    """The bundle version of each run (HiDe-Prompt with every variant and a Triton repository)."""
    root = tmp_path_factory.mktemp("bundles")
    extras = {"hideprompt": ["--triton-repo", str(root / "triton")], "l2p": ["--variants", "ort-optimized"]}
    for method, run in runs.items():
        extra = extras.get(method, ["--variants", ""])
        done = export(run, root / method, *extra)
        assert done.returncode == 0, done.stderr[-2000:]
    return {m: root / m / "5" for m in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_bundle_records_parity_within_tolerance(exported, method):
    manifest = load_manifest(exported[method])
    assert {p.name for p in exported[method].iterdir()} >= {"manifest.json", "classifier.onnx"}
    assert manifest.parity.passed and manifest.parity.class_agreement == 1.0
    assert manifest.parity.max_abs_logit_diff <= 1e-4
    assert manifest.parity.samples == 450  # every test image of the five tasks
    assert manifest.tasks_learned == 5 and manifest.seen_classes == list(range(10))
    if method == "continual_lora":
        assert manifest.routing == "none" and set(manifest.graphs) == {"classifier"}
    else:
        assert set(manifest.graphs) == {"router", "classifier"} and manifest.parity.router_task_agreement == 1.0


@pytest.mark.parametrize("method", ["hideprompt", "hidelora"])
def test_classifier_runs_a_mixed_task_batch_row_by_row_identically(exported, method):
    folder = exported[method]
    session = ort.InferenceSession(str(folder / "classifier.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    tasks = np.arange(5, dtype=np.int64)
    mixed = session.run([LOGITS], {PIXEL_VALUES: x, TASK_ID: tasks})[0]
    alone = np.concatenate([session.run([LOGITS], {PIXEL_VALUES: x[i:i + 1], TASK_ID: tasks[i:i + 1]})[0]
                            for i in range(5)])
    np.testing.assert_allclose(mixed, alone, atol=1e-5)
    same_image = session.run([LOGITS], {PIXEL_VALUES: np.repeat(x[:1], 5, axis=0), TASK_ID: tasks})[0]
    assert np.abs(same_image[1:] - same_image[0]).max() > 1e-3  # the task id really selects the task's slot


def test_router_outputs_tasks_and_probabilities_sum_over_seen_classes(exported):
    folder = exported["hideprompt"]
    x = np.random.default_rng(1).normal(size=(6, 3, 32, 32)).astype(np.float32)
    router = ort.InferenceSession(str(folder / "router.onnx"), providers=["CPUExecutionProvider"])
    task_id, confidence, logits = router.run(None, {PIXEL_VALUES: x})
    manifest = load_manifest(folder)
    assert task_id.dtype == np.int64 and set(task_id) <= set(range(5))
    assert np.array_equal(task_id, np.array(manifest.class_to_task)[logits.argmax(axis=1)])
    assert np.all((confidence > 0) & (confidence <= 1 + 1e-6))
    classifier = ort.InferenceSession(str(folder / "classifier.onnx"), providers=["CPUExecutionProvider"])
    probabilities = classifier.run([PROBABILITIES], {PIXEL_VALUES: x, TASK_ID: task_id})[0]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_manifest_validates_in_a_process_without_torch(exported):
    code = ("import sys; from export.manifest import load_manifest; m = load_manifest(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(m.method, m.version)")
    done = subprocess.run([sys.executable, "-c", code, str(exported["l2p"])], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["l2p", "5"]


def test_variants_are_measured_and_published_with_hashes(exported):
    manifest = load_manifest(exported["hideprompt"])  # verifies every variant file's SHA-256 too
    published = {v.name for v in manifest.variants}
    assert published | set(manifest.rejected_variants) == {"ort-optimized", "fp16", "int8"}
    assert "fp16" in published  # exact to fp32 rounding here
    for name, reason in manifest.rejected_variants.items():  # int8 may fall short on its numbers, ort-optimized
        expected = "not faster than fp32" if name in SPEED_ONLY else "top-1 agreement with fp32"  # only on speed
        assert reason.startswith(expected), reason
    for variant in manifest.variants:
        assert variant.class_agreement >= 0.99 and variant.measurement.images_per_second > 0
        for graph in variant.graphs.values():
            assert (exported["hideprompt"] / graph.file).is_file()
    l2p = load_manifest(exported["l2p"])  # key matching + gathered prompt tokens optimise too (published if faster)
    assert [v.name for v in l2p.variants] + list(l2p.rejected_variants) == ["ort-optimized"]
    assert all(reason.startswith("not faster than fp32") for reason in l2p.rejected_variants.values())


def test_a_speed_only_variant_that_is_not_faster_is_not_published(exported, tmp_path):
    """ort-optimized exists for speed: against an fp32 rate it cannot beat it is rejected, says why, leaves no files."""
    from export.parity import Comparison
    from export.runtime import TwoStep
    from export.variants import Width, build_variants

    manifest = load_manifest(exported["l2p"])
    folder = tmp_path / "5"
    subprocess.run(["cp", "-r", str(exported["l2p"]), str(folder)], check=True)
    images = np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32)
    fp32 = TwoStep.of_bundle(folder, manifest)(images)[PROBABILITIES].argmax(axis=1)
    reference = Comparison(manifest.parity, accuracy=0.0, predictions=fp32, accuracy_per_task=[])
    unbeatable = manifest.measurement.model_copy(update={"images_per_second": 1e12})
    published, rejected = build_variants(folder, manifest.graphs, manifest.routing, Width(4, 128), images,
                                         np.zeros(16, dtype=np.int64), reference, unbeatable, SPEED_ONLY,
                                         log=lambda _: None)
    assert published == [] and rejected["ort-optimized"].startswith("not faster than fp32")
    assert not (folder / "variants" / "ort-optimized").exists()


def test_a_variant_that_disagrees_is_not_published(exported, tmp_path):
    """Against reference predictions it cannot match, the variant is rejected, says why, and leaves no files."""
    from export.parity import Comparison
    from export.variants import Width, build_variants

    manifest = load_manifest(exported["l2p"])
    folder = tmp_path / "5"
    subprocess.run(["cp", "-r", str(exported["l2p"]), str(folder)], check=True)
    images = np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32)
    wrong = Comparison(manifest.parity, accuracy=100.0, predictions=np.full(16, -1), accuracy_per_task=[])
    published, rejected = build_variants(folder, manifest.graphs, manifest.routing, Width(4, 128), images,
                                         np.zeros(16, dtype=np.int64), wrong, manifest.measurement, ("int8",),
                                         log=lambda _: None)
    assert published == [] and "agreement with fp32 0.0000" in rejected["int8"]
    assert not (folder / "variants" / "int8").exists()


def test_tampered_graph_is_refused(exported, tmp_path):
    copy = tmp_path / "5"
    subprocess.run(["cp", "-r", str(exported["l2p"]), str(copy)], check=True)
    with open(copy / "router.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="SHA-256"):
        load_manifest(copy)


def test_existing_version_is_refused_and_left_untouched(runs, exported):
    root = exported["l2p"].parent
    before = file_sha256(exported["l2p"] / "manifest.json")
    done = export(runs["l2p"], root, "--variants", "")
    assert done.returncode == 2 and "already exists" in done.stderr
    assert file_sha256(exported["l2p"] / "manifest.json") == before
    assert bundle_versions(root) == [5] and [p.name for p in root.iterdir()] == ["5"]  # no partial folder left


def test_earlier_task_becomes_its_own_version(runs, exported):
    root = exported["hidelora"].parent
    done = export(runs["hidelora"], root, "--task", "2", "--variants", "")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = load_manifest(root / "2")
    assert bundle_versions(root) == [2, 5]
    assert manifest.tasks_learned == 2 and manifest.seen_classes == [0, 1, 2, 3]
    assert manifest.parity.samples == 181 and manifest.parity.passed  # the test images of digits 0-3 only


def test_run_without_a_completed_task_is_explained(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    done = export(tmp_path / "run", tmp_path / "out")
    assert done.returncode == 2 and "no completed task" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_other_backbone_weights_are_refused(runs, tmp_path):
    import torch
    from safetensors.torch import save_file

    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
    from train.backbones.vit import create_vit

    torch.manual_seed(123)
    other = tmp_path / "other.safetensors"
    save_file(create_vit(backbone_spec(EMBEDDED_BACKBONE)).state_dict(), str(other))
    done = export(runs["hideprompt"], tmp_path / "out", "--backbone-checkpoint", str(other), "--variants", "")
    assert done.returncode == 2 and "not the ones" in done.stderr and "--backbone-checkpoint" in done.stderr
    assert not (tmp_path / "out" / "5").exists()


def test_triton_repository_matches_the_graphs(exported):
    """config.pbtxt parsed by Triton's own ModelConfig schema (tritonclient, in a subprocess: its protos clash
    with ours), compared with the graphs' inputs and outputs."""
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    repo = exported["hideprompt"].parent.parent / "triton"
    code = """
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
out = {}
for name in ("router", "classifier", "pipeline"):
    config = text_format.Parse(open(f"{sys.argv[1]}/{name}/config.pbtxt").read(), model_config_pb2.ModelConfig())
    out[name] = json_format.MessageToDict(config)
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code, str(repo)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    configs = json.loads(done.stdout)
    manifest = load_manifest(exported["hideprompt"])
    for name, graph in manifest.graphs.items():
        config = configs[name]
        assert (repo / name / "5" / "model.onnx").is_file() and config["platform"] == "onnxruntime_onnx"
        assert "dynamicBatching" in config and int(config["maxBatchSize"]) >= 8
        for declared, tensors in ((config["input"], graph.inputs), (config["output"], graph.outputs)):
            assert [d["name"] for d in declared] == [t.name for t in tensors]
            for d, t in zip(declared, tensors):
                assert d["dataType"] == f"TYPE_{t.datatype}"
                assert [int(v) for v in d["dims"]] == (t.shape[1:] or [1])
    steps = configs["pipeline"]["ensembleScheduling"]["step"]
    available = {t["name"] for t in configs["pipeline"]["input"]}
    for step in steps:  # every step reads only what the pipeline input or an earlier step provides
        assert set(step["inputMap"].values()) <= available
        available |= set(step["outputMap"].values())
    assert {t["name"] for t in configs["pipeline"]["output"]} <= available


@pytest.mark.parametrize("method", METHODS)
def test_served_accuracy_matches_the_training_run(runs, exported, method):
    """After the last task every class is seen, so the served top-1 accuracy over the test images is the
    run's last column of the accuracy matrix, pooled over tasks by their number of test images."""
    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
    from train.data.digits import load_split_digits

    manifest = load_manifest(exported[method])
    results = json.loads((runs[method] / "results.json").read_text())
    labels = load_split_digits(backbone_spec(EMBEDDED_BACKBONE))[1].tensors[1].numpy()
    sizes = np.bincount(np.array(manifest.class_to_task)[labels], minlength=5)
    correct = np.array([row[-1] for row in results["accuracy_matrix"]]) / 100 * sizes
    assert manifest.measurement.accuracy == pytest.approx(100 * correct.sum() / sizes.sum(), abs=1e-6)


def _perturb_classifier(folder: Path) -> None:
    """Add noise to the classifier graph's largest weight, as a broken exporter would."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "classifier.onnx"))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(values + np.float32(0.5) * np.sign(values), weight.name))
    onnx.save(model, str(folder / "classifier.onnx"))


def _with_broken_classifier(monkeypatch) -> None:
    import export.bundle

    original = export.bundle.write_graphs

    def write_then_break(run, examples, folder):
        graphs = original(run, examples, folder)
        _perturb_classifier(folder)
        return graphs

    monkeypatch.setattr(export.bundle, "write_graphs", write_then_break)


def test_failed_parity_names_the_graph_and_writes_nothing(runs, tmp_path, monkeypatch):
    from export.bundle import Refused, export_bundle

    _with_broken_classifier(monkeypatch)
    with pytest.raises(Refused, match="classifier.onnx logits differ") as refusal:
        export_bundle(runs["hideprompt"], tmp_path / "out", variants=(), log=lambda _: None)
    assert "router.onnx" not in str(refusal.value) and "nothing was written" in str(refusal.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_promote_refuses_a_candidate_that_fails_parity(runs, tmp_path, monkeypatch):
    from export.promote import promote
    from serve.decisions import read_decisions

    _with_broken_classifier(monkeypatch)
    decision = promote(runs["hidelora"], tmp_path / "root", log=lambda _: None)
    assert not decision.accepted and "parity with PyTorch failed" in decision.reason
    assert bundle_versions(tmp_path / "root") == []
    decisions, malformed = read_decisions(tmp_path / "root")
    assert [d["accepted"] for d in decisions] == [False] and malformed == 0


def test_a_crashing_variant_converter_is_an_error_not_a_rejection(runs, tmp_path, monkeypatch):
    import export.variants
    from export.bundle import export_bundle
    from export.variants import VariantError

    def crash(source, target, width):
        raise RuntimeError("quantizer bug")

    monkeypatch.setitem(export.variants.VARIANTS, "int8", crash)
    with pytest.raises(VariantError, match="variant 'int8' crashed.*quantizer bug"):
        export_bundle(runs["l2p"], tmp_path / "out", variants=("int8",), log=lambda _: None)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
