"""Split-Digits: scikit-learn's handwritten digits (shipped inside the package), the embedded benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from ..backbones.spec import BackboneSpec
from .transforms import grayscale_to_input

SPLIT_SEED = 0  # the benchmark's train/test split is fixed, whatever the run's seed
TEST_FRACTION = 0.25


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed stratified split `(x_train, x_test, y_train, y_test)`; images `(N, 8, 8)` in [0, 1]."""
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    return tuple(
        train_test_split(
            images, digits.target, test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
        )
    )


def load_split_digits(spec: BackboneSpec) -> tuple[TensorDataset, TensorDataset]:
    """Train and test sets as model-ready tensors (the data is tiny: no per-step transforms)."""
    x_train, x_test, y_train, y_test = digits_arrays()
    return (
        TensorDataset(grayscale_to_input(x_train, spec), torch.as_tensor(y_train)),
        TensorDataset(grayscale_to_input(x_test, spec), torch.as_tensor(y_test)),
    )


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digit_folders(folder: Path, digits: tuple[int, ...], size: int = 32) -> Path:
    """Split-Digits' images of `digits` as PNG files in an ImageFolder task folder: `folder/{train,test}/<name>/
    <index>.png` (names "zero".."nine"), the benchmark's own split, each 8×8 image enlarged to `size` pixels as
    `grayscale_to_input` enlarges it."""
    from PIL import Image

    x_train, x_test, y_train, y_test = digits_arrays()
    for part, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        for digit in digits:
            target = folder / part / DIGIT_NAMES[digit]
            target.mkdir(parents=True, exist_ok=True)
            chosen = torch.as_tensor(images[labels == digit]).unsqueeze(1)
            large = F.interpolate(chosen, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
            for index, pixels in enumerate((large[:, 0] * 255).round().to(torch.uint8).numpy()):
                Image.fromarray(pixels).save(target / f"{index:04d}.png")
    return folder
