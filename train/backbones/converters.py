"""Pretrained checkpoint layouts of the reference (iBOT, DINO, MoCo v3, DeiT) -> timm ViT backbone state dicts.

Pure functions: no file IO. The caller loads the file, converts it, checks it fits, then loads it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

# Wrapper keys, in order of preference: iBOT-21K `checkpoint.pth` ('teacher'), iBOT-1K renamed teacher and raw
# MoCo v3 `.pth.tar` ('state_dict'), converted MoCo v3 and DeiT ('model').
WRAPPER_KEYS = ("teacher", "state_dict", "model")
# Leading prefixes of the wrapped encoders; the first match is stripped (so 'module.base_encoder.' before 'module.').
PREFIXES = ("backbone.", "module.base_encoder.", "module.", "encoder.")
# What a timm VisionTransformer backbone (without head / fc_norm) can hold.
TIMM_VIT_PARAMS = ("cls_token", "pos_embed", "reg_token")
TIMM_VIT_MODULES = ("patch_embed.", "blocks.", "norm.", "norm_pre.")
# Keys never taken from a checkpoint: the classifier side is re-created by the caller.
HEAD_PREFIXES = ("head.", "fc_norm.")
FINAL_NORM_KEYS = ("norm.weight", "norm.bias")


def _is_plain(raw: Mapping) -> bool:
    return len(raw) > 0 and all(isinstance(v, torch.Tensor) for v in raw.values())


def unwrap_checkpoint(raw: dict) -> dict[str, torch.Tensor]:
    """The state dict inside `raw`: `raw` itself when its values are tensors, else under a WRAPPER_KEYS key."""
    if _is_plain(raw):
        return dict(raw)
    for key in WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, Mapping) and _is_plain(inner):
            return dict(inner)
    raise ValueError(
        f"not a state dict nor one wrapped under {list(WRAPPER_KEYS)}; top-level keys: {sorted(map(str, raw))[:8]}"
    )


def _strip_prefix(key: str) -> str:
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _is_backbone_key(key: str) -> bool:
    return key in TIMM_VIT_PARAMS or key.startswith(TIMM_VIT_MODULES)


def to_timm_keys(sd: dict) -> dict[str, torch.Tensor]:
    """Strip the encoder prefix and keep only timm ViT backbone keys (heads, predictors, momentum encoders go)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        name = _strip_prefix(key)
        if not _is_backbone_key(name):
            continue
        if name in out:
            raise ValueError(f"checkpoint has two tensors for '{name}' (second one: '{key}')")
        out[name] = value
    return out


def convert_checkpoint(raw: dict) -> dict[str, torch.Tensor]:
    """Any of the reference's checkpoint layouts -> a timm ViT backbone state dict."""
    return to_timm_keys(unwrap_checkpoint(raw))


def check_fits(vit: nn.Module, sd: Mapping[str, torch.Tensor]) -> list[str]:
    """Problems loading `sd` into `vit`'s backbone (head / fc_norm excluded): missing keys, shape mismatches,
    and keys the backbone does not have. Empty when `vit.load_state_dict(sd, strict=False)` loads it all."""
    expected = {k: v for k, v in vit.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    problems = [f"{name}: missing" for name in expected if name not in sd]
    problems += [
        f"{name}: expected {tuple(want.shape)} got {tuple(sd[name].shape)}"
        for name, want in expected.items()
        if name in sd and tuple(sd[name].shape) != tuple(want.shape)
    ]
    problems += [f"{name}: unexpected" for name in sd if name not in expected]
    return problems


def apply_mocov3_reference_norm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's MoCo v3 quirk: drop the checkpoint's final `norm.weight/bias`.

    The model must then be built with `fc_norm=True` (final `norm` = Identity, a fresh trainable
    `fc_norm` LayerNorm at (1, 0) after token selection); the caller builds it and leaves `fc_norm` trainable.
    """
    return {k: v for k, v in sd.items() if k not in FINAL_NORM_KEYS}
