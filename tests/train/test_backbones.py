"""Backbone registry and weight sources: augreg LoRA weights, MoCo v3 reference final norm, timm hub names."""

from __future__ import annotations

import os
import time

import pytest
import torch

from train.backbones.registry import AUGREG_BACKBONE, EMBEDDED_BACKBONE, MOCOV3_BACKBONE, backbone_spec
from train.backbones.spec import HALF
from train.backbones.vit import cls_features, create_vit
from train.cli import parse_invocation
from train.config import BackboneConfig, RunConfig
from train.errors import UserError
from train.presets import PRESETS, preset
from train.weights import AUGREG_FILE, DEFAULT_CHECKPOINTS, load_backbone, resolve_spec

LORA_PRESETS = [f"{d}_{m}" for d in ("cifar100", "imr") for m in ("continual_lora", "hidelora")]


# --- the augreg IN-21k→1k weights of the reference's LoRA code ---------------------------------------
def test_augreg_backbone_has_its_own_name_file_and_normalisation():
    spec = backbone_spec(AUGREG_BACKBONE)
    assert (spec.timm_arch, spec.img_size, spec.mean, spec.std) == ("vit_base_patch16_224", 224, HALF, HALF)
    path, source = DEFAULT_CHECKPOINTS[AUGREG_BACKBONE]
    assert path == f"checkpoints/{AUGREG_FILE}" and AUGREG_FILE in source
    assert AUGREG_FILE == ("B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01"
                           "-res_224.npz")


@pytest.mark.parametrize("name", LORA_PRESETS)
def test_lora_presets_use_the_augreg_weights_as_the_reference_scripts_do(name):
    config = preset(name)
    assert config.backbone.model == config.backbone.original_model == AUGREG_BACKBONE
    # the reference README's `--model vit_base_patch16_224` means augreg in its LoRA trainer: so here too
    flags = ["--model", "vit_base_patch16_224", "--original_model", "vit_base_patch16_224"]
    assert parse_invocation([name, *flags]).config.backbone.model == AUGREG_BACKBONE
    literal = parse_invocation([name, "backbone.model=vit_base_patch16_224",
                                "backbone.original_model=vit_base_patch16_224"]).config
    assert literal.backbone.model == "vit_base_patch16_224"  # dotted keys take names literally


def test_prompt_presets_keep_the_sup21k_weights():
    assert parse_invocation(["cifar100_hideprompt_5e", "--model", "vit_base_patch16_224", "--original_model",
                             "vit_base_patch16_224"]).config.backbone.model == "vit_base_patch16_224"
    assert preset("cifar100_l2p").backbone.model == "vit_base_patch16_224"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_backbone_is_registered_with_a_weight_source(name):
    model = preset(name).backbone.model
    assert backbone_spec(model) and (model == EMBEDDED_BACKBONE or model in DEFAULT_CHECKPOINTS)


# --- MoCo v3: the reference's final-norm handling behind a switch -------------------------------------
def moco_raw_checkpoint(path, source: torch.nn.Module) -> None:
    """MoCo v3's released `.pth.tar` layout: `state_dict` of `module.base_encoder.` keys, with its final norm."""
    torch.nn.init.normal_(source.norm.weight, 1.0, 0.3)  # a norm that visibly changes features
    torch.nn.init.normal_(source.norm.bias, 0.0, 0.3)
    sd = {f"module.base_encoder.{k}": v for k, v in source.state_dict().items()}
    sd["module.predictor.0.weight"] = torch.randn(8, 8)
    torch.save({"state_dict": sd, "epoch": 300}, path)


@pytest.fixture(scope="module")
def moco_source(tmp_path_factory):
    torch.manual_seed(0)
    source = create_vit(backbone_spec(EMBEDDED_BACKBONE)).eval()
    path = tmp_path_factory.mktemp("moco") / "vit-b-300ep.pth.tar"
    moco_raw_checkpoint(path, source)
    return source, path


def test_mocov3_reference_norm_switch_reaches_config_and_is_off_by_default():
    moco = ["--model", MOCOV3_BACKBONE, "--original_model", MOCOV3_BACKBONE]
    assert preset("cifar100_hideprompt_5e").backbone.mocov3_reference_norm is False
    on = parse_invocation(["cifar100_hideprompt_5e", *moco, "--mocov3_reference_norm", "True"]).config
    assert on.backbone.mocov3_reference_norm is True
    assert RunConfig.from_dict(on.to_dict()) == on
    old = on.to_dict()
    del old["backbone"]["mocov3_reference_norm"]  # a checkpoint written before the switch existed
    assert RunConfig.from_dict(old).backbone.mocov3_reference_norm is False
    with pytest.raises(UserError, match=MOCOV3_BACKBONE):
        parse_invocation(["cifar100_hideprompt_5e", "--mocov3_reference_norm", "True"])


def test_mocov3_reference_spec_builds_timm_without_final_norm():
    spec = resolve_spec(BackboneConfig(model=MOCOV3_BACKBONE, original_model=MOCOV3_BACKBONE,
                                       mocov3_reference_norm=True))
    assert spec.final_norm is False and backbone_spec(MOCOV3_BACKBONE).final_norm is True
    assert ("final_norm", False) in spec.arch_kwargs and spec.without_final_norm() == spec
    assert resolve_spec(BackboneConfig(model=MOCOV3_BACKBONE, original_model=MOCOV3_BACKBONE)).final_norm


@pytest.mark.parametrize("reference", [False, True])
def test_mocov3_checkpoint_features_default_and_reference(moco_source, reference):
    """Default: the checkpoint's final norm is applied. Reference: dropped, features are the raw last-block cls."""
    source, path = moco_source
    loaded = load_backbone(BackboneConfig(model=EMBEDDED_BACKBONE, original_model=EMBEDDED_BACKBONE,
                                          checkpoint=str(path), mocov3_reference_norm=reference), None)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        raw_cls = source.blocks(source._pos_embed(source.patch_embed(x)))[:, 0]
        want = raw_cls if reference else source.norm(raw_cls)
        torch.testing.assert_close(cls_features(loaded.vit, x), want)
    assert isinstance(loaded.vit.norm, torch.nn.Identity) == reference
    assert isinstance(loaded.vit.fc_norm, torch.nn.Identity)
    assert loaded.spec.final_norm is not reference  # the spec (export, serving) records the build
    assert not any(p.requires_grad for p in loaded.vit.parameters())


# --- timm hub names --------------------------------------------------------------------------------------
HUB = "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k"


@pytest.fixture()
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("name", [HUB, "timm:vit_tiny_patch16_224.augreg_in21k"])
def test_hub_name_offline_fails_fast_with_one_message(empty_hub_cache, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(UserError) as error:
        load_backbone(BackboneConfig(checkpoint=name), None)
    assert time.monotonic() - start < 30  # not a minute of retries
    message = str(error.value)
    assert name in message and "offline" in message and "--pretrained_checkpoint" in message
    assert error.value.__cause__ is None


def test_hub_name_without_a_route_goes_offline_itself(empty_hub_cache, monkeypatch):
    """HF_HUB_OFFLINE unset and no route: the fetch is made offline (then restored), not retried for a minute."""
    from huggingface_hub import constants

    from train import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    seen = []
    real_create = __import__("timm").create_model

    def create(*args, **kwargs):
        seen.append((os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE))
        return real_create(*args, **kwargs)

    monkeypatch.setattr("timm.create_model", create)
    with pytest.raises(UserError, match="offline"):
        hub.hub_state_dict(HUB)
    assert seen == [("1", True)]
    assert "HF_HUB_OFFLINE" not in os.environ and constants.HF_HUB_OFFLINE is False


def test_hub_names_are_recognised_and_local_paths_are_not():
    from train.hub import is_hub_name, timm_model_name

    assert is_hub_name(HUB) and is_hub_name("timm:vit_base_patch16_224.augreg_in21k")
    assert not is_hub_name("checkpoints/ViT-B_16.npz") and not is_hub_name("")
    assert timm_model_name("timm:vit_base_patch16_224.dino") == "vit_base_patch16_224.dino"
    assert timm_model_name(HUB) == HUB


def test_hub_weights_with_another_normalisation_are_refused(monkeypatch):
    """The spec's mean/std is what training, export and serving apply: weights trained otherwise are refused."""
    from train import weights

    vit = create_vit(backbone_spec(EMBEDDED_BACKBONE))
    monkeypatch.setattr(weights, "hub_state_dict",
                        lambda name: (vit.state_dict(), {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}))
    with pytest.raises(UserError, match="mean"):
        load_backbone(BackboneConfig(checkpoint="timm:x"), None)
    monkeypatch.setattr(weights, "hub_state_dict", lambda name: (vit.state_dict(), {"mean": HALF, "std": HALF}))
    loaded = load_backbone(BackboneConfig(checkpoint="timm:x"), None)
    assert all(torch.equal(a, b) for a, b in zip(loaded.vit.state_dict().values(), vit.state_dict().values(),
                                                 strict=True))
