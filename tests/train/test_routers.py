"""Task routers beyond the reference's MLP: class Gaussians (lda), nearest class mean (ncm), and their ensemble
with the MLP — exact against scikit-learn, incremental per class, through stage 2, growth and ONNX export."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.helpers.methods import SPLIT, build, task_batch
from train.methods.heads import GaussianRouter, TaskIdentityHead


def blobs(classes: int = 4, per_class: int = 60, dim: int = 8, seed: int = 0):
    """Gaussian classes with a shared, correlated covariance (where LDA beats nearest mean)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(dim, dim))
    means = rng.normal(scale=2.0, size=(classes, dim))
    x = np.concatenate([means[c] + rng.normal(size=(per_class, dim)) @ mix for c in range(classes)])
    return x.astype(np.float32), np.repeat(np.arange(classes), per_class)


def fitted(kind: str, x, y, shrinkage: float = 0.5) -> GaussianRouter:
    router = GaussianRouter(x.shape[1], int(y.max()) + 1, kind, shrinkage)
    for label in np.unique(y):
        router.add_class(int(label), torch.from_numpy(x[y == label]))
    return router


@pytest.mark.parametrize("shrinkage", [0.0, 0.5, 1.0])
def test_lda_predicts_as_scikit_learn(shrinkage):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = blobs()
    test, _ = blobs(seed=1)
    reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage, priors=np.full(4, 0.25)).fit(x, y)
    ours = fitted("lda", x, y, shrinkage)(torch.from_numpy(test)).argmax(dim=1).numpy()
    assert (ours == reference.predict(test)).mean() == 1.0


def test_ncm_is_the_nearest_class_mean():
    x, y = blobs()
    test, _ = blobs(seed=2)
    means = np.stack([x[y == c].mean(axis=0) for c in range(4)])
    nearest = np.linalg.norm(test[:, None] - means[None], axis=2).argmin(axis=1)
    assert (fitted("ncm", x, y)(torch.from_numpy(test)).argmax(dim=1).numpy() == nearest).all()


def test_classes_added_task_by_task_equal_all_at_once():
    x, y = blobs()
    one = fitted("lda", x, y)
    two = GaussianRouter(8, 4)
    for task in ((0, 1), (2, 3)):
        for label in task:
            two.add_class(label, torch.from_numpy(x[y == label]))
        two(torch.zeros(1, 8))  # routing in between refreshes the layer
    one.refresh()
    torch.testing.assert_close(two.weight, one.weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two.bias, one.bias, rtol=1e-5, atol=1e-4)


def test_the_reference_router_keeps_its_state_unchanged():
    """`mlp` (the default) adds nothing to the task-identity network: checkpoints stay as they were."""
    keys = set(TaskIdentityHead(8, (2,), 4).state_dict())
    assert not any(k.startswith("gaussian.") for k in keys)
    assert {k for k in TaskIdentityHead(8, (2,), 4, router="lda").state_dict()} - keys == {
        f"gaussian.{name}" for name in ("counts", "sums", "scatter", "weight", "bias")}


def with_router(key: str, vit, router: str):
    method = build(key, vit)
    config = dataclasses.replace(method.config, alignment=dataclasses.replace(method.config.alignment, router=router))
    torch.manual_seed(1)
    from train.methods import build_method

    return build_method(key, config, vit, SPLIT)


@pytest.mark.parametrize("router", ["lda", "ncm", "ensemble"])
def test_stage_two_routes_with_the_stage_one_statistics_and_exports_them(tiny_vit, router, tmp_path):
    from export.graphs import RouterGraph, export_onnx
    from train.backbones.vit import cls_features

    stage1 = with_router("hide_tii", tiny_vit, router)
    for task in (0, 1):
        x, y = task_batch(task, n=16)
        features = cls_features(tiny_vit, x)
        for label in SPLIT.task_classes[task]:
            stage1.observe_class(label, features[y == label])
    stage2 = with_router("hideprompt", tiny_vit, router)
    stage2.load_task_identity({k.removeprefix("tii."): v for k, v in stage1.state_dict().items()
                               if k.startswith("tii.")})
    x, _ = task_batch(0, n=6, seed=9)
    seen = SPLIT.seen_mask(1)
    assert torch.equal(stage1.predict(x, 1).task_ids, stage2.route(x, seen).condition)
    graph = RouterGraph(stage2, seen).eval()
    names = graph.output_names(x)
    export_onnx(graph, (x,), ["pixel_values"], names, tmp_path / "router.onnx")
    served = ort.InferenceSession(str(tmp_path / "router.onnx")).run(None, {"pixel_values": x.numpy()})
    assert np.array_equal(served[0], stage2.route(x, seen).condition.numpy())


def test_stage_two_asks_for_a_stage_one_run_with_statistics(tiny_vit):
    from train.errors import UserError

    stage1 = build("hide_tii", tiny_vit)  # the reference's router: no class statistics kept
    stage2 = with_router("hideprompt", tiny_vit, "lda")
    with pytest.raises(UserError, match="run stage 1 with --router lda"):
        stage2.load_task_identity({k.removeprefix("tii."): v for k, v in stage1.state_dict().items()
                                   if k.startswith("tii.")})


def test_router_statistics_grow_with_new_classes():
    from train.growth import grown_state

    small, large = TaskIdentityHead(8, (2,), 4, router="lda"), TaskIdentityHead(8, (2,), 6, router="lda")
    x, y = blobs()
    for label in range(4):
        small.gaussian.add_class(label, torch.from_numpy(x[y == label]))
    small.gaussian.refresh()
    large.load_state_dict(grown_state(large, small.state_dict(), {(4, 6)}))
    assert torch.equal(large.gaussian.counts[:4], small.gaussian.counts) and (large.gaussian.counts[4:] == 0).all()
    torch.testing.assert_close(large.gaussian.scatter, small.gaussian.scatter)


def test_the_router_study_reproduces_the_trained_routers_accuracy(tmp_path, random_backbone):
    """`benchmarks.routers` re-evaluates a run with every router and answer scope from its checkpoints; for the
    router and answer the run was trained with, that gives exactly the run's own accuracy matrix (the study
    changes nothing else)."""
    import json

    from benchmarks.routers import ANSWERS, ROUTERS, evaluate_routers, table
    from tests.helpers.runs import FAST, results, run_main

    run = tmp_path / "run"
    done = run_main(["digits_hideprompt", "--router", "ensemble", "--answer_scope", "routed_task",
                     "--output_dir", str(run), f"backbone.checkpoint={random_backbone}", *FAST])
    assert done.returncode == 0, done.stderr[-2000:]
    study = evaluate_routers(run, timing_rounds=(1, 3))
    trained, ensemble = results(run), study["routers"]["ensemble"]["routed_task"]
    for key in ("final_average_accuracy", "task_identity_accuracy", "final_forgetting"):
        assert ensemble[key] == pytest.approx(trained[key], abs=1e-9)
    assert all(0 <= r["novelty_auroc"] <= 1 and r["served_latency_ms"] > 0 and set(ANSWERS) <= set(r)
               for r in study["routers"].values())
    assert table([json.loads(json.dumps(study))]).count("\n") == len(ROUTERS) + 1
