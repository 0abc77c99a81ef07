"""Prompt tuning: learned tokens prepended to the token sequence of a stock timm ViT (L2P's prompts)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer


def prompt_tuned_features(vit: VisionTransformer, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`pre_logits` with `tokens (B, n, D)` in front of the cls token (after the position embedding, so
    they carry none); the feature is the cls token, now at index n."""
    x = vit._pos_embed(vit.patch_embed(x))
    x = torch.cat([tokens.to(x.dtype), x], dim=1)
    x = vit.norm(vit.blocks(vit.norm_pre(x)))
    return vit.head_drop(vit.fc_norm(x[:, tokens.shape[1]]))
