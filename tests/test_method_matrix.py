"""Every method against every invariant on a tiny random ViT (peft-style matrix), in process, no DeepSpeed."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch

from train.data.splits import split_classes
from train.methods import build_method
from train.presets import preset
from train.stats import ClassStatistics

# method key → preset whose config it runs with
METHODS = {
    "hide_tii": "digits_hideprompt_tii",
    "hideprompt": "digits_hideprompt",
    "hidelora": "digits_hidelora",
    "l2p": "digits_l2p",
    "dualprompt": "digits_dualprompt",
    "sprompt": "digits_sprompt",
    "continual_lora": "digits_continual_lora",
}
SHARED_ACROSS_TASKS = {"hide_tii", "l2p", "continual_lora"}  # no per-task slots: earlier tasks' parts move
SPLIT = split_classes(10, 5)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                            embed_dim=64, depth=6, num_heads=4)
    return vit.requires_grad_(False).eval()


def build(key: str, backbone, **prompt_changes):
    config = preset(METHODS[key])
    if prompt_changes:
        config = dataclasses.replace(config, prompt=dataclasses.replace(config.prompt, **prompt_changes))
    torch.manual_seed(1)
    return build_method(key, config, backbone, SPLIT)


def task_batch(task: int, n: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed + task)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    y = torch.tensor(SPLIT.task_classes[task])[torch.arange(n) % 2]
    return x, y


def train(method, task: int, steps: int = 3) -> None:
    method.begin_task(task, ClassStatistics("variance"))
    method.train()
    optimizer = torch.optim.Adam(method.param_groups(1e-2))
    x, y = task_batch(task)
    for _ in range(steps):
        loss = method.training_loss(method(x, task), y, task)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    method.end_task(task)
    method.eval()


def snapshot(method) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


@pytest.mark.parametrize("key", METHODS)
def test_only_the_methods_parameters_change_and_the_backbone_stays_bit_identical(key, backbone):
    method = build(key, backbone)
    before = snapshot(method)
    train(method, 0)
    after = method.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert changed, "training changed nothing"
    assert changed <= trainable, changed - trainable
    assert not any(k.startswith("backbone.") for k in changed)


@pytest.mark.parametrize("key", sorted(set(METHODS) - SHARED_ACROSS_TASKS))
def test_earlier_tasks_slots_and_head_rows_do_not_move_while_a_later_task_trains(key, backbone):
    method = build(key, backbone)
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
def test_save_and_load_give_identical_logits(key, backbone):
    method = build(key, backbone)
    train(method, 0)
    train(method, 1)
    restored = build(key, backbone)
    restored.load_state_dict(method.learned_state(), strict=False)
    if hasattr(method, "tii") and "tii." + next(iter(method.tii.state_dict())) not in method.learned_state():
        restored.tii.load_state_dict(method.tii.state_dict())  # HiDe stage 2: the TII net comes from stage 1
    restored.eval()
    x, _ = task_batch(1)
    torch.testing.assert_close(restored.predict(x, 1).logits, method.predict(x, 1).logits, rtol=0, atol=0)


@pytest.mark.parametrize("key", METHODS)
def test_a_batch_mixing_tasks_equals_its_samples_one_by_one(key, backbone):
    method = build(key, backbone)
    train(method, 0)
    train(method, 1)
    x = torch.cat([task_batch(0, 3)[0], task_batch(1, 3)[0]])
    together = method.predict(x, 1)
    for i in range(len(x)):
        alone = method.predict(x[i : i + 1], 1)
        torch.testing.assert_close(alone.logits[0], together.logits[i], rtol=1e-4, atol=1e-5)
        assert torch.equal(alone.task_ids.reshape(-1), together.task_ids.reshape(len(x), -1)[i])


@pytest.mark.parametrize("key", METHODS)
def test_bf16_forward_is_finite(key, backbone):
    trained = build(key, backbone)
    train(trained, 0)
    method = copy.deepcopy(trained).to(torch.bfloat16)  # a copy: the backbone fixture stays fp32
    x, _ = task_batch(0)
    out = method(x.bfloat16(), 0)
    assert torch.isfinite(out.logits.float()).all() and torch.isfinite(out.features.float()).all()
    assert torch.isfinite(method.predict(x.bfloat16(), 0).logits.float()[:, list(SPLIT.task_classes[0])]).all()


def test_a_stage1_network_of_another_shape_is_refused_with_the_fix(backbone):
    from train.errors import UserError
    from train.methods.heads import TaskIdentityHead

    method = build("hideprompt", backbone)  # mlp_structure (2,)
    without_mlp = TaskIdentityHead(64, (), 10).state_dict()
    with pytest.raises(UserError, match="mlp_structure"):
        method.begin_task(0, ClassStatistics("variance"), without_mlp)
    head_only = {k: v for k, v in without_mlp.items() if k.startswith("head.")}  # a Continual-LoRA run's head
    with pytest.raises(UserError, match="mlp_structure"):
        method.begin_task(0, ClassStatistics("variance"), head_only)  # a random MLP would garble routing
    config = preset("digits_hidelora")
    config = dataclasses.replace(config, alignment=dataclasses.replace(config.alignment, mlp_structure=()))
    lora = build_method("hidelora", config, backbone, SPLIT)
    lora.begin_task(0, ClassStatistics("variance"), head_only)
    assert torch.equal(lora.tii.head.weight, head_only["head.weight"])
