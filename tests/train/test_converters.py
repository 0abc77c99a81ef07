"""Reference checkpoint layouts (iBOT, DINO, MoCo v3, DeiT) convert to timm keys and load exactly."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.vit import tiny_vit
from train.backbones.converters import (
    apply_mocov3_reference_norm,
    check_fits,
    convert_checkpoint,
    to_timm_keys,
    unwrap_checkpoint,
)

DEPTH = 2  # two blocks are enough to check every key of a layout


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    return tiny_vit(0, DEPTH)


def ssl_head(prefix: str) -> dict[str, torch.Tensor]:
    """iBOT / DINO projection-head keys that must be dropped."""
    return {
        f"{prefix}head.mlp.0.weight": torch.randn(8, 64),
        f"{prefix}head.mlp.0.bias": torch.randn(8),
        f"{prefix}head.last_layer.weight_g": torch.randn(16, 1),
        f"{prefix}head.last_layer.weight_v": torch.randn(16, 8),
        f"{prefix}head.last_layer2.weight_g": torch.randn(16, 1),
    }


def layouts(sd: dict[str, torch.Tensor]) -> dict[str, dict]:
    ibot = {"backbone." + k: v for k, v in sd.items()} | ssl_head("") | {"masked_embed": torch.zeros(64)}
    moco_raw = (
        {"module.base_encoder." + k: v for k, v in sd.items()}
        | {
            "module.base_encoder.head.0.weight": torch.randn(32, 64),
            "module.base_encoder.head.1.running_mean": torch.randn(32),
            "module.predictor.0.weight": torch.randn(32, 32),
            "module.momentum_encoder.blocks.0.attn.qkv.weight": torch.randn(192, 64),
            "module.momentum_encoder.norm.weight": torch.randn(64),
            "module.momentum_encoder.cls_token": torch.randn(1, 1, 64),
        }
    )
    return {
        "ibot21k": {"teacher": ibot, "student": {"backbone.cls_token": torch.zeros(1, 1, 64)}, "epoch": 100},
        "ibot1k": {"state_dict": ibot},
        "dino": dict(sd) | ssl_head(""),
        "mocov3_raw": {"state_dict": moco_raw, "epoch": 300, "arch": "vit_base", "optimizer": {"state": {}}},
        "mocov3_converted": {"model": dict(sd)},
        "deit": {"model": dict(sd) | {"head.weight": torch.randn(10, 64), "head.bias": torch.randn(10)}},
    }


@pytest.mark.parametrize("layout", ["ibot21k", "ibot1k", "dino", "mocov3_raw", "mocov3_converted", "deit"])
def test_layout_loads_strict_and_reproduces_features(source, layout):
    raw = layouts(source.state_dict())[layout]
    sd = convert_checkpoint(raw)
    assert set(sd) == set(source.state_dict())
    target = tiny_vit(1, DEPTH)
    assert check_fits(target, sd) == []
    target.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target.forward_features(x), source.forward_features(x))


def test_unwrap_plain_dict_returns_it(source):
    sd = source.state_dict()
    assert unwrap_checkpoint(sd) == sd
    with pytest.raises(ValueError, match="not a state dict"):
        unwrap_checkpoint({"epoch": 3, "args": None})


def test_only_leading_prefix_is_stripped():
    t = torch.zeros(1)
    sd = to_timm_keys({"module.encoder.blocks.0.x": t, "backbone.blocks.1.x": t, "encoder.norm.weight": t})
    assert set(sd) == {"blocks.1.x", "norm.weight"}  # 'encoder.blocks.0.x' after stripping 'module.' is not timm
    with pytest.raises(ValueError, match="two tensors"):
        to_timm_keys({"blocks.0.x": t, "module.blocks.0.x": t})


def test_check_fits_reports_missing_and_mismatched(source):
    sd = convert_checkpoint({"teacher": {"backbone." + k: v for k, v in source.state_dict().items()}})
    del sd["blocks.1.mlp.fc2.weight"]
    sd["pos_embed"] = torch.zeros(1, 5, 64)
    sd["mask_token"] = torch.zeros(64)
    problems = check_fits(tiny_vit(1, DEPTH), sd)
    assert "blocks.1.mlp.fc2.weight: missing" in problems
    assert "pos_embed: expected (1, 17, 64) got (1, 5, 64)" in problems
    assert "mask_token: unexpected" in problems
    assert len(problems) == 3
    assert check_fits(tiny_vit(1, DEPTH, num_classes=10), convert_checkpoint(source.state_dict())) == []  # head ignored


def test_mocov3_reference_norm(source):
    sd = convert_checkpoint({"model": source.state_dict()})
    ref = apply_mocov3_reference_norm(sd)
    assert set(sd) - set(ref) == {"norm.weight", "norm.bias"} and set(ref) < set(sd)
    assert "norm.weight" in sd  # pure: the input is untouched

    target = tiny_vit(1, DEPTH, fc_norm=True)  # the reference's MoCo build: final norm is Identity, fc_norm fresh
    assert check_fits(target, ref) == [] and check_fits(target, sd) == ["norm.weight: unexpected",
                                                                         "norm.bias: unexpected"]
    missing, unexpected = target.load_state_dict(ref, strict=False)
    assert sorted(missing) == ["fc_norm.bias", "fc_norm.weight"] and unexpected == []
    assert torch.equal(target.fc_norm.weight, torch.ones(64)) and torch.equal(target.fc_norm.bias, torch.zeros(64))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # features are the raw last-block tokens, without the checkpoint's final norm
        assert torch.equal(source.norm(target.forward_features(x)), source.forward_features(x))
