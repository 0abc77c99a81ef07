"""Turning images into model input, with the backbone spec's size and normalisation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms as T

from ..backbones.spec import BackboneSpec

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def normalize(images: torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (images - mean) / std


def grayscale_to_input(images: np.ndarray, spec: BackboneSpec) -> torch.Tensor:
    """`(N, H, W)` images in [0, 1] → `(N, 3, S, S)` normalised model input at the backbone's size."""
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1)
    x = F.interpolate(x, size=(spec.img_size, spec.img_size), mode=spec.interpolation, align_corners=False)
    return normalize(x.clamp(0, 1).expand(-1, 3, -1, -1), spec).contiguous()


def _interpolation(name: str) -> T.InterpolationMode:
    return T.InterpolationMode(name)


def image_transform(spec: BackboneSpec, train: bool, cifar_style: bool = False,
                    reference_normalization: bool = False):
    """The reference's augmentation at the backbone's input size, normalised with the backbone's mean/std.

    Train: RandomResizedCrop (scale (0.05, 1), bilinear; CIFAR: (0.08, 1), bicubic, + ColorJitter 63/255)
    → horizontal flip. Test: resize to size/crop_pct (bicubic) → center crop. With
    `reference_normalization` the reference's choice replaces the backbone's: none for non-CIFAR data,
    CIFAR-100 statistics for CIFAR data.
    """
    size = spec.img_size
    if train and cifar_style:
        steps = [T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
                 T.ColorJitter(brightness=63 / 255)]
    elif train:
        steps = [T.RandomResizedCrop(size, scale=(0.05, 1.0)), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(int(round(size / spec.crop_pct)), interpolation=_interpolation(spec.interpolation)),
                 T.CenterCrop(size)]
    steps.append(T.ToTensor())
    if reference_normalization:
        if cifar_style:
            steps.append(T.Normalize(CIFAR100_MEAN, CIFAR100_STD))
    else:
        steps.append(T.Normalize(spec.mean, spec.std))
    return T.Compose(steps)
