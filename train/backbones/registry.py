"""Named backbones: the reference ViT-B/16 family and the project's embedded glyph ViT."""

from __future__ import annotations

from .spec import HALF, IMAGENET_MEAN, IMAGENET_STD, BackboneSpec

EMBEDDED_BACKBONE = "vit_glyph_patch8_32"

_VIT_B = "vit_base_patch16_224"
# Google's augreg IN-21k pre-training + IN-1k fine-tune (timm's vit_base_patch16_224.augreg_in21k_ft_in1k): what
# `vit_base_patch16_224` means in the reference's LoRA code (Continual-LoRA, HiDe-LoRA).
AUGREG_BACKBONE = "vit_base_patch16_224_augreg_in21k_ft_in1k"
MOCOV3_BACKBONE = "vit_base_patch16_224_mocov3"
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(_VIT_B, _VIT_B, 224, HALF, HALF),  # Sup-21K (Google npz)
        BackboneSpec(AUGREG_BACKBONE, _VIT_B, 224, HALF, HALF),
        BackboneSpec("vit_base_patch16_224_21k_ibot", _VIT_B, 224, IMAGENET_MEAN, IMAGENET_STD),
        BackboneSpec("vit_base_patch16_224_ibot", _VIT_B, 224, IMAGENET_MEAN, IMAGENET_STD),
        BackboneSpec("vit_base_patch16_224_dino", _VIT_B, 224, IMAGENET_MEAN, IMAGENET_STD),
        BackboneSpec(MOCOV3_BACKBONE, _VIT_B, 224, IMAGENET_MEAN, IMAGENET_STD),
        BackboneSpec(
            EMBEDDED_BACKBONE,
            "vit_tiny_patch16_224",
            32,
            HALF,
            HALF,
            interpolation="bilinear",
            crop_pct=1.0,
            arch_kwargs=(
                ("img_size", 32), ("patch_size", 8), ("embed_dim", 128), ("depth", 6), ("num_heads", 4),
                ("mlp_ratio", 3.0),
            ),
        ),
    )
}


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"unknown backbone '{name}'. Known backbones: {known}.")
    return BACKBONES[name]
