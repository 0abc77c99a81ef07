"""Prefix-tuning prompts injected into the attention of stock timm ViT blocks (no fork of timm).

A prefix prompt prepends `length` learned keys and values to the keys and values of the real tokens
in chosen blocks; queries, sequence length and the cls position are unchanged.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, VisionTransformer
from torch import nn

from ..backbones.vit import features_with_attention


class PrefixPromptPool(nn.Module):
    """One prefix prompt per slot: `prompt[layer, key|value, slot, position, head, head_dim]`."""

    def __init__(self, num_layers: int, pool_size: int, length: int, num_heads: int, head_dim: int):
        super().__init__()
        shape = (num_layers, 2, pool_size, length, num_heads, head_dim)
        self.prompt = nn.Parameter(torch.empty(shape).uniform_(-1.0, 1.0))

    @classmethod
    def for_vit(cls, vit: VisionTransformer, num_layers: int, pool_size: int, length: int) -> PrefixPromptPool:
        """A pool shaped for `vit`'s attention heads."""
        attn = vit.blocks[0].attn
        return cls(num_layers, pool_size, length, attn.num_heads, attn.head_dim)

    def select(self, slots: torch.Tensor) -> torch.Tensor:
        """Per-sample prompts by tensor indexing: `(L, 2, B, length, H, hd)`."""
        return self.prompt[:, :, slots]

    def ensemble(self, slot: int, momentum: float) -> torch.Tensor:
        """`(1-α)·P_t + α·mean_{i<t} P_i` with the old slots detached: `(L, 2, length, H, hd)`."""
        current = self.prompt[:, :, slot]
        if slot == 0 or momentum == 0:
            return current
        return (1 - momentum) * current + momentum * self.prompt[:, :, :slot].detach().mean(dim=2)

    @torch.no_grad()
    def copy_slot(self, source: int, target: int) -> None:
        self.prompt[:, :, target] = self.prompt[:, :, source]

    @torch.no_grad()
    def apply_ensemble(self, slot: int, momentum: float) -> None:
        """Bake the ensemble into slot `slot` after its task, as the reference does."""
        self.prompt[:, :, slot] = self.ensemble(slot, momentum)


def arrange_prefixes(selected: torch.Tensor, official_kv_reshape: bool = False) -> torch.Tensor:
    """`(L, 2, B, length, H, hd)` → `(L, 2, B, H, length, hd)` ready for attention.

    `official_kv_reshape` reproduces the reference's reshape (instead of a permute) of the
    `(key|value, sample)` axes, which hands sample b chunks 2b and 2b+1 of the flattened axis.
    """
    if official_kv_reshape:
        layers, _, batch, *rest = selected.shape
        selected = selected.reshape(layers, batch, 2, *rest).transpose(1, 2)
    return selected.transpose(3, 4)


def prefix_attention(attn: Attention, x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """timm `Attention.forward` with `prefix = (2, B, H, length, hd)` keys/values in front."""
    batch, tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    k = torch.cat([prefix[0].to(k.dtype), k], dim=2)
    v = torch.cat([prefix[1].to(v.dtype), v], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = attn.norm(out.transpose(1, 2).reshape(batch, tokens, -1))
    return attn.proj_drop(attn.proj(out))


def prompted_features(
    vit: VisionTransformer, x: torch.Tensor, prefixes: torch.Tensor, layers: tuple[int, ...]
) -> torch.Tensor:
    """Instructed `pre_logits`: the ViT forward with `prefixes[i]` injected into block `layers[i]`."""
    return features_with_attention(vit, x, {layer: partial(prefix_attention, prefix=prefix)
                                            for layer, prefix in zip(layers, prefixes)})
