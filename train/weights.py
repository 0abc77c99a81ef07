"""Where a backbone's pretrained weights come from, and loading them into a frozen stock timm ViT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer

from .backbones.converters import check_fits, convert_checkpoint
from .backbones.registry import EMBEDDED_BACKBONE, backbone_spec
from .backbones.spec import BackboneSpec
from .backbones.vit import create_vit, freeze, weights_hash
from .config import BackboneConfig
from .distributed import DistContext
from .errors import UserError
from .pretrain import PretrainConfig, ensure_pretrained

# The reference's checkpoint locations (relative to the working directory) and where to get each file.
DEFAULT_CHECKPOINTS = {
    "vit_base_patch16_224": ("checkpoints/ViT-B_16.npz",
                             "Google's imagenet21k/ViT-B_16.npz (vision_transformer release); the LoRA scripts use "
                             "the augreg B_16-i21k-300ep-...-res_224.npz instead"),
    "vit_base_patch16_224_21k_ibot": ("checkpoints/checkpoint.pth", "iBOT's vitb_16_pt22k/checkpoint.pth"),
    "vit_base_patch16_224_ibot": ("checkpoints/ibot_vitbase16_pretrain.pth",
                                  "iBOT's vitb_16/checkpoint_teacher.pth, renamed"),
    "vit_base_patch16_224_dino": ("checkpoints/dino_vitbase16_pretrain.pth", "DINO's dino_vitbase16_pretrain.pth"),
    "vit_base_patch16_224_mocov3": ("checkpoints/mocov3-vit-base-300ep.pth",
                                    "MoCo v3's vit-b-300ep.pth.tar (raw or converted; both layouts load)"),
}


@dataclass(frozen=True)
class LoadedBackbone:
    vit: VisionTransformer
    spec: BackboneSpec
    weights_sha256: str

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
        vit.load_pretrained(str(checkpoint))
        return
    try:  # iBOT teacher / state_dict / MoCo v3 / DINO / DeiT layouts alike
        state = convert_checkpoint(load_state_file(checkpoint))
    except ValueError as error:
        raise UserError(f"'{checkpoint}': {error}") from None
    problems = check_fits(vit, state)
    if problems:
        raise UserError(f"'{checkpoint}' does not fit backbone '{spec.name}': {'; '.join(problems[:5])}"
                        + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    vit.load_state_dict(state, strict=False)  # only head.* / fc_norm.* are left out (check_fits)


def load_backbone(config: BackboneConfig, ctx: DistContext) -> LoadedBackbone:
    """The frozen pretrained backbone; the embedded one is pretrained and cached on first use."""
    spec = backbone_spec(config.model)
    vit = create_vit(spec)
    if config.checkpoint:
        path = Path(config.checkpoint)
    elif spec.name == EMBEDDED_BACKBONE:
        path = ensure_pretrained(PretrainConfig(backbone=spec.name), ctx)
    else:
        path = Path(DEFAULT_CHECKPOINTS[spec.name][0])
    load_weights(vit, spec, path)
    vit = freeze(vit)
    return LoadedBackbone(vit, spec, weights_hash(vit))
