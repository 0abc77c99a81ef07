"""Stock timm ViTs as frozen feature extractors, with their identity (name + weight hash)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import timm
import torch
from timm.models.vision_transformer import Attention, VisionTransformer

from .spec import BackboneSpec


def create_vit(spec: BackboneSpec, num_classes: int = 0) -> VisionTransformer:
    """The architecture of `spec`, randomly initialised, without downloading anything."""
    return timm.create_model(spec.timm_arch, pretrained=False, num_classes=num_classes, **dict(spec.arch_kwargs))


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def weights_hash(module: torch.nn.Module) -> str:
    """SHA-256 over the state dict (names, shapes, bytes): the backbone's identity in checkpoints."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cls_features(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Uninstructed `pre_logits` (the selected token after the final norm)."""
    return vit.forward_head(vit.forward_features(x), pre_logits=True)


AttentionFn = Callable[[Attention, torch.Tensor], torch.Tensor]  # (the block's attention, its normed input) → output


def features_with_attention(vit: VisionTransformer, x: torch.Tensor, attention: dict[int, AttentionFn]) -> torch.Tensor:
    """Instructed `pre_logits`: timm's forward, except that block `i` in `attention` attends with `attention[i]`
    (prefix prompts, LoRA) instead of its own `attn`; every other block runs unchanged."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    for index, block in enumerate(vit.blocks):
        attend = attention.get(index)
        if attend is None:
            x = block(x)
            continue
        x = x + block.drop_path1(block.ls1(attend(block.attn, block.norm1(x))))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return vit.forward_head(vit.norm(x), pre_logits=True)
