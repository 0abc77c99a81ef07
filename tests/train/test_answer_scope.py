"""`--answer_scope routed_task`: HiDe answers among the routed task's classes only — in `predict` (what training
evaluates) and in the exported classifier graph (what the server answers), identically."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.helpers.methods import SPLIT, build, task_batch, train


def answering(method_key: str, vit, scope: str):
    method = build(method_key, vit)
    config = dataclasses.replace(method.config,
                                 alignment=dataclasses.replace(method.config.alignment, answer_scope=scope))
    torch.manual_seed(1)
    from train.methods import build_method

    method = build_method(method_key, config, vit, SPLIT)
    for task in (0, 1):
        train(method, task)
    return method


@pytest.mark.parametrize("method_key", ["hideprompt", "hidelora"])
def test_the_answer_stays_within_the_routed_task(tiny_vit, method_key):
    within, everywhere = answering(method_key, tiny_vit, "routed_task"), answering(method_key, tiny_vit, "seen")
    x = torch.cat([task_batch(0, n=6, seed=3)[0], task_batch(1, n=6, seed=3)[0]])
    restricted, reference = within.predict(x, 1), everywhere.predict(x, 1)
    assert torch.equal(restricted.task_ids, reference.task_ids)  # the same routing; only the answer differs
    class_task = within.class_to_task
    inside = class_task[None, :] == restricted.task_ids[:, None]
    assert torch.isinf(restricted.logits[~inside]).all() and torch.equal(restricted.logits[inside],
                                                                         reference.logits[inside])
    assert torch.equal(class_task[restricted.logits.argmax(dim=1)], restricted.task_ids)


def test_the_exported_classifier_answers_within_the_task_it_is_given(tiny_vit, tmp_path):
    from export.graphs import ClassifierGraph, export_onnx

    method = answering("hideprompt", tiny_vit, "routed_task").eval()
    seen = SPLIT.seen_mask(1)
    graph = ClassifierGraph(method, seen).eval()
    x = task_batch(0, n=4, seed=5)[0]
    task = torch.tensor([0, 1, 1, 0])
    export_onnx(graph, (x, task), graph.input_names(), graph.output_names(), tmp_path / "classifier.onnx")
    logits, probabilities = ort.InferenceSession(str(tmp_path / "classifier.onnx")).run(
        None, {"pixel_values": x.numpy(), "task_id": task.numpy()})
    assert np.isfinite(logits).all()  # the raw logits are served as they are; the answer is what is restricted
    outside = method.class_to_task.numpy()[None, :] != task.numpy()[:, None]
    assert (probabilities[outside] == 0).all() and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    expected = method.answer_logits(method.classify(x, task), task).softmax(dim=1)
    np.testing.assert_allclose(probabilities, expected.detach().numpy(), atol=1e-5)
