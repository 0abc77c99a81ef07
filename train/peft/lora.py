"""Task-indexed LoRA on the key and value projections of stock timm ViT blocks (HiDe-LoRA layout).

`qkv(x) + [0 | x·A_k·B_k | x·A_v·B_v] · (alpha / r)`, with a pool of slots selected per sample by
tensor indexing. The low-rank product is applied as `(x·A)·B`: no per-sample `D×D` matrix is built.
"""

from __future__ import annotations

import copy
import math
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, VisionTransformer
from torch import nn

from ..backbones.vit import features_with_attention


class LoraPool(nn.Module):
    """`A[kv][slot, layer]: (D, r)`, `B[kv][slot, layer]: (r, D)` for kv in (key, value)."""

    def __init__(self, pool_size: int, num_layers: int, dim: int, rank: int, alpha: float = 1.0,
                 official_a_init: bool = False):
        super().__init__()
        self.scaling = alpha / rank
        self.a = nn.Parameter(torch.empty(2, pool_size, num_layers, dim, rank))
        self.b = nn.Parameter(torch.zeros(2, pool_size, num_layers, rank, dim))
        # Standard LoRA: kaiming-uniform(a=√5) over fan_in = D, i.e. U(±1/√D). The reference computes the
        # fan-in over the rank (U(±1/√r)), a much larger start.
        bound = 1 / math.sqrt(rank if official_a_init else dim)
        nn.init.uniform_(self.a, -bound, bound)

    def select(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample factors `(2, L, B, D, r)` and `(2, L, B, r, D)`."""
        return self.a[:, slots].transpose(1, 2), self.b[:, slots].transpose(1, 2)

    def slot(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One slot's factors for the whole batch, `(2, L, D, r)` and `(2, L, r, D)` (training: no gather)."""
        return self.a[:, slot], self.b[:, slot]

    @torch.no_grad()
    def copy_slot(self, source: int, target: int) -> None:
        self.a[:, target] = self.a[:, source]
        self.b[:, target] = self.b[:, source]

    @torch.no_grad()
    def apply_momentum(self, slot: int, momentum: float) -> None:
        """`A_t ← (1-m)·A_t + m·mean_{i<t} A_i`, the same for B (factors averaged separately, as the
        reference does, not their product)."""
        for factor in (self.a, self.b):
            factor[:, slot] = (1 - momentum) * factor[:, slot] + momentum * factor[:, :slot].mean(dim=1)


def lora_attention(attn: Attention, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float):
    """timm `Attention.forward` with low-rank deltas on keys and values.

    `a: (2, [B,] D, r)`, `b: (2, [B,] r, D)` for (key, value) of this block: per sample, or one for all.
    """
    batch, tokens, dim = x.shape
    qkv = attn.qkv(x)
    delta_k = (x @ a[0].to(x.dtype)) @ b[0].to(x.dtype) * scaling
    delta_v = (x @ a[1].to(x.dtype)) @ b[1].to(x.dtype) * scaling
    qkv = qkv + torch.cat([torch.zeros_like(delta_k), delta_k, delta_v], dim=-1)
    q, k, v = qkv.reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = attn.norm(out.transpose(1, 2).reshape(batch, tokens, dim))
    return attn.proj_drop(attn.proj(out))


def lora_features(vit: VisionTransformer, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  scaling: float) -> torch.Tensor:
    """Instructed `pre_logits` with LoRA in blocks `0..L-1`; `a: (2, L, [B,] D, r)`, `b: (2, L, [B,] r, D)`."""
    return features_with_attention(vit, x, {index: partial(lora_attention, a=a[:, index], b=b[:, index],
                                                           scaling=scaling) for index in range(a.shape[1])})


@torch.no_grad()
def merge_lora(vit: VisionTransformer, a: torch.Tensor, b: torch.Tensor, scaling: float) -> VisionTransformer:
    """A copy of `vit` with one slot's deltas merged into its frozen `qkv` weights: `W_k += s·(A_k·B_k)ᵀ`, the
    same for `W_v`, in blocks `0..L-1` (`a: (2, L, D, r)`, `b: (2, L, r, D)`). Its plain forward then equals
    `lora_features(vit, x, a, b, scaling)`; `vit` itself is left as it was."""
    merged = copy.deepcopy(vit)
    dim = vit.embed_dim
    for layer in range(a.shape[1]):
        weight = merged.blocks[layer].attn.qkv.weight  # (3D, D): rows of q, then k, then v
        for kv in (0, 1):
            delta = (a[kv, layer].to(weight) @ b[kv, layer].to(weight)) * scaling  # (D, D): x·ΔW
            weight[(kv + 1) * dim : (kv + 2) * dim] += delta.T
    return merged
