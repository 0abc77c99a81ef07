"""The one tiny random ViT every in-process model test builds on (fast on a CPU, real timm code)."""

from __future__ import annotations

import timm
import torch

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=4)


def tiny_vit(seed: int = 0, depth: int = 6, num_classes: int = 0, **kwargs) -> torch.nn.Module:
    """A random timm ViT on 32×32 images (4×4 patches of 8 pixels, 64-d, 4 heads), in eval mode."""
    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, depth=depth,
                            **TINY_VIT, **kwargs)
    return vit.eval()
