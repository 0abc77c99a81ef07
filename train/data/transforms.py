"""Turning image arrays into model input, with the backbone spec's size and normalisation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.spec import BackboneSpec


def normalize(images: torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (images - mean) / std


def grayscale_to_input(images: np.ndarray, spec: BackboneSpec) -> torch.Tensor:
    """`(N, H, W)` images in [0, 1] → `(N, 3, S, S)` normalised model input at the backbone's size."""
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1)
    x = F.interpolate(x, size=(spec.img_size, spec.img_size), mode=spec.interpolation, align_corners=False)
    return normalize(x.clamp(0, 1).expand(-1, 3, -1, -1), spec).contiguous()
