"""Every method against every invariant on a tiny random ViT (peft-style matrix), in process, no DeepSpeed."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from tests.helpers.methods import METHODS, SPLIT, build, task_batch, train
from train.methods import build_method
from train.presets import preset
from train.stats import ClassStatistics

SHARED_ACROSS_TASKS = {"hide_tii", "l2p", "continual_lora"}  # no per-task slots: earlier tasks' parts move


def snapshot(method) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


@pytest.mark.parametrize("key", METHODS)
def test_only_the_methods_parameters_change_and_the_backbone_stays_bit_identical(key, tiny_vit):
    method = build(key, tiny_vit)
    before = snapshot(method)
    train(method, 0)
    after = method.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert changed, "training changed nothing"
    assert changed <= trainable, changed - trainable
    assert not any(k.startswith("backbone.") for k in changed)


@pytest.mark.parametrize("key", sorted(set(METHODS) - SHARED_ACROSS_TASKS))
def test_earlier_tasks_slots_and_head_rows_do_not_move_while_a_later_task_trains(key, tiny_vit):
    method = build(key, tiny_vit)
    train(method, 0)
    before = snapshot(method)
    train(method, 1)
    after = method.state_dict()
    old_rows = list(SPLIT.task_classes[0])
    assert torch.equal(before["head.weight"][old_rows], after["head.weight"][old_rows])
    slot0 = {
        "hideprompt": lambda s: s["prompts.prompt"][:, :, 0],
        "hidelora": lambda s: torch.cat([s["lora.a"][:, 0].flatten(), s["lora.b"][:, 0].flatten()]),
        "dualprompt": lambda s: torch.cat([s["e_prompts.prompt"][:, :, 0].flatten(), s["keys"][0]]),
        "sprompt": lambda s: torch.cat([s["e_prompts.prompt"][:, :, 0].flatten(), s["keys"][0]]),
    }[key]
    assert torch.equal(slot0(before), slot0(after))


@pytest.mark.parametrize("key", METHODS)
def test_save_and_load_give_identical_logits(key, tiny_vit):
    method = build(key, tiny_vit)
    train(method, 0)
    train(method, 1)
    restored = build(key, tiny_vit)
    restored.load_state_dict(method.learned_state(), strict=False)
    if hasattr(method, "tii") and "tii." + next(iter(method.tii.state_dict())) not in method.learned_state():
        restored.tii.load_state_dict(method.tii.state_dict())  # HiDe stage 2: the TII net comes from stage 1
    restored.eval()
    x, _ = task_batch(1)
    torch.testing.assert_close(restored.predict(x, 1).logits, method.predict(x, 1).logits, rtol=0, atol=0)


@pytest.mark.parametrize("key", METHODS)
def test_a_batch_mixing_tasks_equals_its_samples_one_by_one(key, tiny_vit):
    method = build(key, tiny_vit)
    train(method, 0)
    train(method, 1)
    x = torch.cat([task_batch(0, 3)[0], task_batch(1, 3)[0]])
    together = method.predict(x, 1)
    for i in range(len(x)):
        alone = method.predict(x[i : i + 1], 1)
        torch.testing.assert_close(alone.logits[0], together.logits[i], rtol=1e-4, atol=1e-5)
        assert torch.equal(alone.task_ids.reshape(-1), together.task_ids.reshape(len(x), -1)[i])


@pytest.mark.parametrize("key", METHODS)
def test_bf16_forward_is_finite(key, tiny_vit):
    trained = build(key, tiny_vit)
    train(trained, 0)
    method = copy.deepcopy(trained).to(torch.bfloat16)  # a copy: the tiny_vit fixture stays fp32
    x, _ = task_batch(0)
    out = method(x.bfloat16(), 0)
    assert torch.isfinite(out.logits.float()).all() and torch.isfinite(out.features.float()).all()
    assert torch.isfinite(method.predict(x.bfloat16(), 0).logits.float()[:, list(SPLIT.task_classes[0])]).all()


def test_a_stage1_network_of_another_shape_is_refused_with_the_fix(tiny_vit):
    from train.errors import UserError
    from train.methods.heads import TaskIdentityHead

    method = build("hideprompt", tiny_vit)  # mlp_structure (2,)
    without_mlp = TaskIdentityHead(64, (), 10).state_dict()
    with pytest.raises(UserError, match="mlp_structure"):
        method.begin_task(0, ClassStatistics("variance"), without_mlp)
    head_only = {k: v for k, v in without_mlp.items() if k.startswith("head.")}  # a Continual-LoRA run's head
    with pytest.raises(UserError, match="mlp_structure"):
        method.begin_task(0, ClassStatistics("variance"), head_only)  # a random MLP would garble routing
    config = preset("digits_hidelora")
    config = dataclasses.replace(config, alignment=dataclasses.replace(config.alignment, mlp_structure=()))
    lora = build_method("hidelora", config, tiny_vit, SPLIT)
    lora.begin_task(0, ClassStatistics("variance"), head_only)
    assert torch.equal(lora.tii.head.weight, head_only["head.weight"])
