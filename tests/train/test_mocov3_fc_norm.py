"""`--mocov3_reference_norm`: the reference's MoCo v3 build puts a trainable `fc_norm` LayerNorm at (1, 0)
between the features and every classifier (`logits = head(fc_norm(mlp(pre_logits)))`), drops the TII
MLP's final LayerNorm, and trains `fc_norm` in stage 1, stage 2 and classifier alignment. Off by default,
where every method's state is exactly as before."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.methods import METHODS, SPLIT  # the same methods on the same split as the method matrix
from train.backbones.registry import EMBEDDED_BACKBONE, MOCOV3_BACKBONE, backbone_spec
from train.backbones.vit import create_vit
from train.methods import build_method
from train.methods.heads import TaskIdentityHead, class_head
from train.presets import preset
from train.stats import ClassStatistics

FC_NORM_KEYS = {"head.fc_norm.weight", "head.fc_norm.bias"}


@pytest.fixture(scope="module")
def backbone():
    """The embedded architecture built as the switch builds MoCo: without its final norm."""
    torch.manual_seed(0)
    return create_vit(backbone_spec(EMBEDDED_BACKBONE).without_final_norm()).requires_grad_(False).eval()


def config_for(key: str, reference_norm: bool, **prompt_changes):
    """The method's preset on the MoCo v3 backbone, a config the CLI's validation accepts."""
    config = preset(METHODS[key])
    backbone = dataclasses.replace(config.backbone, model=MOCOV3_BACKBONE, original_model=MOCOV3_BACKBONE,
                                   mocov3_reference_norm=reference_norm)
    config = dataclasses.replace(config, backbone=backbone, prompt=dataclasses.replace(config.prompt, **prompt_changes))
    return config.validate()


def build(key: str, backbone, reference_norm: bool = True, **prompt_changes):
    torch.manual_seed(1)
    return build_method(key, config_for(key, reference_norm, **prompt_changes), backbone, SPLIT)


def classifier(method) -> nn.Linear:
    return method.tii.head if method.name == "hide_tii" else method.head


def reference_head(head: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """`head(fc_norm(features))` written out."""
    normed = F.layer_norm(features, features.shape[-1:], head.fc_norm.weight, head.fc_norm.bias, eps=1e-6)
    return F.linear(normed, head.weight, head.bias)


def batch(task: int, n: int = 6):
    generator = torch.Generator().manual_seed(task)
    return torch.randn(n, 3, 32, 32, generator=generator), torch.tensor(SPLIT.task_classes[task])[torch.arange(n) % 2]


def perturb_fc_norms(method) -> None:
    """Away from (1, 0), so the checks below see the fc_norm parameters at work (the backbone is untouched)."""
    with torch.no_grad():
        for name, module in method.named_modules():
            if name.endswith("fc_norm") and not name.startswith("backbone."):
                module.weight.add_(0.1 * torch.randn_like(module.weight))
                module.bias.add_(0.1 * torch.randn_like(module.bias))


@pytest.mark.parametrize("key", METHODS)
def test_every_classifier_has_an_fc_norm_at_one_zero_before_its_linear_layer(key, backbone):
    method = build(key, backbone)
    heads = [classifier(method)] + ([method.tii.head] if key in ("hideprompt", "hidelora") else [])
    for head in heads:
        assert isinstance(head, nn.Linear) and isinstance(head.fc_norm, nn.LayerNorm)
        assert torch.equal(head.fc_norm.weight, torch.ones(backbone.num_features))
        assert torch.equal(head.fc_norm.bias, torch.zeros(backbone.num_features))
        assert head.fc_norm.weight.requires_grad == (head is classifier(method))  # stage 2: the TII net is frozen
    perturb_fc_norms(method)
    for head in heads:
        features = torch.randn(4, backbone.num_features)
        torch.testing.assert_close(head(features), reference_head(head, features), rtol=0, atol=0)


@pytest.mark.parametrize("key", METHODS)
def test_fc_norm_is_trained_and_the_features_stay_before_it(key, backbone):
    method = build(key, backbone)
    perturb_fc_norms(method)
    method.begin_task(0, ClassStatistics("variance"))
    method.train()
    x, y = batch(0)
    out = method(x, 0)
    head = classifier(method)
    mlp = method.tii.mlp if key == "hide_tii" else nn.Identity()
    torch.testing.assert_close(out.logits, reference_head(head, mlp(out.features)), rtol=1e-5, atol=1e-6)
    method.training_loss(out, y, 0).backward()
    assert head.fc_norm.weight.grad.abs().sum() > 0 and head.fc_norm.bias.grad.abs().sum() > 0
    grouped = [p for group in method.param_groups(1e-2) for p in group["params"]]
    assert any(p is head.fc_norm.weight for p in grouped) and any(p is head.fc_norm.bias for p in grouped)


@pytest.mark.parametrize("key", ["hide_tii", "hideprompt", "hidelora"])
def test_classifier_alignment_trains_head_and_fc_norm(key, backbone):
    method = build(key, backbone)
    perturb_fc_norms(method)
    head = classifier(method)
    aligned = method.alignment_parameters()
    assert any(p is head.fc_norm.weight for p in aligned) and any(p is head.fc_norm.bias for p in aligned)
    assert any(p is head.weight for p in aligned)
    features = torch.randn(5, backbone.num_features)
    mlp = method.tii.mlp if key == "hide_tii" else nn.Identity()
    torch.testing.assert_close(method.alignment_logits(features), reference_head(head, mlp(features)))


def test_fc_norm_is_in_the_tenth_lr_group_with_larger_prompt_lr(backbone):
    method = build("hideprompt", backbone, larger_prompt_lr=True)
    prompts, rest = method.param_groups(1.0)
    assert rest["lr"] == pytest.approx(0.1)
    assert any(p is method.head.fc_norm.weight for p in rest["params"])
    assert not any(p is method.head.fc_norm.weight for p in prompts["params"])


@pytest.mark.parametrize("key", sorted(set(METHODS) - {"hide_tii"}))
def test_classify_is_head_of_fc_norm_of_the_routed_features(key, backbone):
    """What `export` traces: the task-conditioned graph ends in `head(fc_norm(features))`."""
    method = build(key, backbone).eval()
    perturb_fc_norms(method)
    x, _ = batch(1)
    with torch.no_grad():
        condition = method.route(x, method.seen_classes[1]).condition if method.routing != "none" else None
        if key in ("hideprompt", "hidelora"):
            features = method.slot_features(x, condition)
        elif key == "continual_lora":
            features = method._features(x)
        elif method.routing == "prompt_set":  # L2P: the top-k prompt set
            features = method.prompted(x, condition)
        else:  # DualPrompt, S-Prompt++: the routed task's k slots
            k = method.config.prompt.top_k
            features = method.prompted(x, condition.unsqueeze(1) * k + torch.arange(k))
        torch.testing.assert_close(method.classify(x, condition), reference_head(method.head, features),
                                   rtol=1e-5, atol=1e-6)


def test_stage1_prediction_is_head_of_fc_norm_of_mlp_of_the_frozen_features(backbone):
    method = build("hide_tii", backbone).eval()
    perturb_fc_norms(method)
    x, _ = batch(1)
    seen = method.seen_classes[1]
    with torch.no_grad():
        features = method._frozen_features(x)
        want = reference_head(method.tii.head, method.tii.mlp(features)).masked_fill(~seen, float("-inf"))
        torch.testing.assert_close(method.predict(x, 1).logits, want)


@pytest.mark.parametrize("hidden", [(2,), (4, 4), ()])
def test_task_identity_head_is_head_of_fc_norm_of_mlp_without_its_final_norm(hidden):
    torch.manual_seed(0)
    tii = TaskIdentityHead(16, hidden, 10, fc_norm=True)
    assert isinstance(tii.mlp.norm, nn.Identity)
    assert not any(k.startswith("mlp.norm.") for k in tii.state_dict())
    assert {"head.fc_norm.weight", "head.fc_norm.bias"} <= set(tii.state_dict())
    perturb_fc_norms(tii)
    x = torch.randn(3, 16)
    residual = x + tii.mlp.net(x) if hidden else x
    torch.testing.assert_close(tii(x), reference_head(tii.head, residual))
    default = TaskIdentityHead(16, hidden, 10)
    assert isinstance(default.mlp.norm, nn.LayerNorm) and type(default.head) is nn.Linear


# --- off by default: exactly the state of before ------------------------------------------------------
# Head and TII keys of each method's state dict with the switch off (the rest are prompts / LoRA / keys).
HEAD_KEYS_OFF = {
    "hide_tii": {"tii.mlp.net.0.weight", "tii.mlp.net.0.bias", "tii.mlp.net.2.weight", "tii.mlp.net.2.bias",
                 "tii.mlp.norm.weight", "tii.mlp.norm.bias", "tii.head.weight", "tii.head.bias"},
    "hideprompt": {"head.weight", "head.bias", "tii.mlp.net.0.weight", "tii.mlp.net.0.bias", "tii.mlp.net.2.weight",
                   "tii.mlp.net.2.bias", "tii.mlp.norm.weight", "tii.mlp.norm.bias", "tii.head.weight",
                   "tii.head.bias"},
    "l2p": {"head.weight", "head.bias"},
    "dualprompt": {"head.weight", "head.bias"},
    "sprompt": {"head.weight", "head.bias"},
    "continual_lora": {"head.weight", "head.bias"},
}


HEAD_KEYS_OFF["hidelora"] = HEAD_KEYS_OFF["hideprompt"]


def head_keys(state: dict) -> set[str]:
    return {k for k in state if k.startswith(("head.", "tii."))}


@pytest.mark.parametrize("key", METHODS)
def test_switch_off_keeps_the_state_dict_and_on_only_adds_fc_norms(key, backbone):
    off, on = build(key, backbone, reference_norm=False), build(key, backbone, reference_norm=True)
    off_state, on_state = off.state_dict(), on.state_dict()
    assert head_keys(off_state) == HEAD_KEYS_OFF[key]
    assert all(type(m) is nn.Linear for n, m in off.named_modules() if n in ("head", "tii.head"))
    assert not any("fc_norm" in k for k in off_state)
    tii_fc_norm = {"tii." + k for k in FC_NORM_KEYS} if hasattr(on, "tii") else set()
    own_fc_norm = set() if key == "hide_tii" else FC_NORM_KEYS
    added = own_fc_norm | tii_fc_norm
    dropped = {"tii.mlp.norm.weight", "tii.mlp.norm.bias"} if hasattr(on, "tii") else set()
    assert set(on_state) == (set(off_state) - dropped) | added
    for name in set(off_state) - dropped:  # the switch draws no extra random numbers: the same init
        assert torch.equal(off_state[name], on_state[name]), name
    learned_fc_norm = {k for k in on.learned_state() if "fc_norm" in k}  # checkpoints carry it
    assert learned_fc_norm == (tii_fc_norm if key == "hide_tii" else own_fc_norm)


def test_class_head_off_is_the_plain_trunc_normal_linear():
    torch.manual_seed(3)
    plain = class_head(8, 4)
    torch.manual_seed(3)
    normed = class_head(8, 4, fc_norm=True)
    assert type(plain) is nn.Linear and set(plain.state_dict()) == {"weight", "bias"}
    assert set(normed.state_dict()) == {"weight", "bias", "fc_norm.weight", "fc_norm.bias"}
    assert torch.equal(plain.weight, normed.weight) and torch.equal(plain.bias, normed.bias)


def stage1_network(method) -> dict[str, torch.Tensor]:
    """What `checkpoint.load_task_identity` hands stage 2: the stage-1 run's `tii.*`, prefix stripped."""
    return {k.removeprefix("tii."): v for k, v in method.learned_state().items() if k.startswith("tii.")}


@pytest.mark.parametrize("key", ["hideprompt", "hidelora"])
def test_stage2_loads_the_stage1_fc_norm_and_refuses_a_stage1_run_of_the_other_build(key, backbone):
    from train.errors import UserError

    stage1 = build("hide_tii", backbone)
    perturb_fc_norms(stage1)
    method = build(key, backbone)
    method.begin_task(0, ClassStatistics("variance"), stage1_network(stage1))
    assert torch.equal(method.tii.head.fc_norm.weight, stage1.tii.head.fc_norm.weight)
    x = torch.randn(3, backbone.num_features)
    torch.testing.assert_close(method.tii(x), stage1.tii(x), rtol=0, atol=0)
    with pytest.raises(UserError, match="mocov3_reference_norm"):
        method.begin_task(0, ClassStatistics("variance"), stage1_network(build("hide_tii", backbone, False)))
    with pytest.raises(UserError, match="mocov3_reference_norm"):
        build(key, backbone, False).begin_task(0, ClassStatistics("variance"), stage1_network(stage1))


def test_a_continual_lora_stage1_head_brings_its_fc_norm(backbone):
    """HiDe-LoRA on CIFAR routes with a Continual-LoRA run's classifier: its fc_norm comes along."""
    stage1 = build("continual_lora", backbone)
    perturb_fc_norms(stage1)
    head_only = {k: v for k, v in stage1.learned_state().items() if k.startswith("head.")}
    config = config_for("hidelora", True)
    config = dataclasses.replace(config, alignment=dataclasses.replace(config.alignment, mlp_structure=()))
    method = build_method("hidelora", config, backbone, SPLIT)
    method.begin_task(0, ClassStatistics("variance"), head_only)
    x = torch.randn(3, backbone.num_features)
    torch.testing.assert_close(method.tii(x), stage1.head(x), rtol=0, atol=0)
