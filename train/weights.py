"""Where a backbone's pretrained weights come from, and loading them into a frozen stock timm ViT."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from .backbones.converters import apply_mocov3_reference_norm, check_fits, convert_checkpoint
from .backbones.registry import AUGREG_BACKBONE, EMBEDDED_BACKBONE, backbone_spec
from .backbones.spec import BackboneSpec
from .backbones.vit import create_vit, freeze, weights_hash
from .config import BackboneConfig
from .errors import UserError
from .hub import hub_state_dict, is_hub_name
from .pretrain import PretrainConfig, cached_weights, ensure_pretrained

if TYPE_CHECKING:
    from .distributed import DistContext

AUGREG_FILE = "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz"
# The reference's checkpoint locations (relative to the working directory) and where to get each file.
DEFAULT_CHECKPOINTS = {
    "vit_base_patch16_224": ("checkpoints/ViT-B_16.npz",
                             "Google's imagenet21k/ViT-B_16.npz (vision_transformer release); the LoRA scripts use "
                             f"{AUGREG_BACKBONE} instead"),
    AUGREG_BACKBONE: (f"checkpoints/{AUGREG_FILE}", f"https://storage.googleapis.com/vit_models/augreg/{AUGREG_FILE} "
                      "(timm's vit_base_patch16_224.augreg_in21k_ft_in1k)"),
    "vit_base_patch16_224_21k_ibot": ("checkpoints/checkpoint.pth", "iBOT's vitb_16_pt22k/checkpoint.pth"),
    "vit_base_patch16_224_ibot": ("checkpoints/ibot_vitbase16_pretrain.pth",
                                  "iBOT's vitb_16/checkpoint_teacher.pth, renamed"),
    "vit_base_patch16_224_dino": ("checkpoints/dino_vitbase16_pretrain.pth", "DINO's dino_vitbase16_pretrain.pth"),
    "vit_base_patch16_224_mocov3": ("checkpoints/mocov3-vit-base-300ep.pth",
                                    "MoCo v3's vit-b-300ep.pth.tar (raw or converted; both layouts load)"),
}


# `backbone.checkpoint=random`: timm's own initialisation under a fixed seed (the same weights in every process,
# so export restores them), never pretrained. For speed and memory figures only (benchmarks/vitb.py).
RANDOM_INIT = "random"
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class LoadedBackbone:
    vit: VisionTransformer
    spec: BackboneSpec
    weights_sha256: str
    random_init: bool = False  # timm's seeded random initialisation, not pretrained weights

    def identity(self) -> dict[str, str]:
        return {"name": self.spec.name, "sha256": self.weights_sha256}


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(vit: VisionTransformer, spec: BackboneSpec, checkpoint: Path) -> None:
    """Load pretrained weights from a local file (.npz in Google's format, .pth/.pth.tar, .safetensors)."""
    if not checkpoint.is_file():
        source = DEFAULT_CHECKPOINTS.get(spec.name, ("", "the project's pretraining (python -m train.pretrain)"))[1]
        raise UserError(
            f"pretrained weights for backbone '{spec.name}' not found at '{checkpoint}'. Expected: {source}, "
            "as a timm ViT state dict (.npz, .pth, .pth.tar or .safetensors; teacher/state_dict/model wrappers and "
            "backbone./module.base_encoder. prefixes are handled). Put it there or pass --backbone_checkpoint PATH."
        )
    if checkpoint.suffix == ".npz":
        if not spec.final_norm:
            raise UserError(f"'{checkpoint}': the MoCo v3 final-norm handling applies to .pth checkpoints, not .npz")
        vit.load_pretrained(str(checkpoint))
        return
    try:  # iBOT teacher / state_dict / MoCo v3 / DINO / DeiT layouts alike
        state = convert_checkpoint(load_state_file(checkpoint))
    except ValueError as error:
        raise UserError(f"'{checkpoint}': {error}") from None
    load_state(vit, spec, state, str(checkpoint))


def load_state(vit: VisionTransformer, spec: BackboneSpec, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a timm-keyed backbone state dict; without a final norm (MoCo v3 reference build) its norm is dropped."""
    if not spec.final_norm:
        state = apply_mocov3_reference_norm(state)
    problems = check_fits(vit, state)
    if problems:
        raise UserError(f"'{origin}' does not fit backbone '{spec.name}': {'; '.join(problems[:5])}"
                        + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    vit.load_state_dict(state, strict=False)  # only head.* / fc_norm.* are left out (check_fits)


def load_hub_weights(vit: VisionTransformer, spec: BackboneSpec, name: str) -> None:
    """Weights of a timm hub name, refused when they were trained with another normalisation than the spec's."""
    state, pretrained_cfg = hub_state_dict(name)
    for key in ("mean", "std"):
        theirs = tuple(pretrained_cfg.get(key, getattr(spec, key)))
        if not np.allclose(theirs, getattr(spec, key)):
            raise UserError(f"'{name}' was trained with {key} {theirs}, backbone '{spec.name}' normalises with "
                            f"{getattr(spec, key)}: pass the --model whose normalisation matches.")
    load_state(vit, spec, state, name)


def resolve_spec(config: BackboneConfig) -> BackboneSpec:
    """The spec of the configured backbone, without its final norm in the reference's MoCo v3 mode."""
    spec = backbone_spec(config.model)
    return spec.without_final_norm() if config.mocov3_reference_norm else spec


def load_backbone(config: BackboneConfig, ctx: DistContext | None) -> LoadedBackbone:
    """The frozen pretrained backbone; the embedded one is pretrained and cached on first use.

    `ctx` is the training run's process group, in which the ranks pretrain the embedded backbone together when
    no rank has it cached yet; None (loading a trained run) needs no process group and finds it cached.
    """
    spec = resolve_spec(config)
    if config.checkpoint == RANDOM_INIT:
        vit = freeze(random_vit(spec))
        return LoadedBackbone(vit, spec, weights_hash(vit), random_init=True)
    vit = create_vit(spec)
    if is_hub_name(config.checkpoint):
        load_hub_weights(vit, spec, config.checkpoint)
    else:
        load_weights(vit, spec, _checkpoint_path(config, spec, ctx))
    vit = freeze(vit)
    return LoadedBackbone(vit, spec, weights_hash(vit))


def random_vit(spec: BackboneSpec) -> VisionTransformer:
    """timm's initialisation of `spec` under RANDOM_INIT_SEED (the global RNG untouched), with a loud warning."""
    print(f"WARNING: backbone '{spec.name}' is RANDOMLY INITIALISED (backbone.checkpoint={RANDOM_INIT}, seed "
          f"{RANDOM_INIT_SEED}), NOT PRETRAINED: accuracy means nothing; use it for speed and memory figures only.",
          file=sys.stderr, flush=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return create_vit(spec)


def _checkpoint_path(config: BackboneConfig, spec: BackboneSpec, ctx: DistContext | None) -> Path:
    if config.checkpoint:
        return Path(config.checkpoint)
    if spec.name == EMBEDDED_BACKBONE:
        pretrained = PretrainConfig(backbone=spec.name)
        return cached_weights(pretrained) if ctx is None else ensure_pretrained(pretrained, ctx)
    return Path(DEFAULT_CHECKPOINTS[spec.name][0])
