"""Split-Digits: scikit-learn's handwritten digits (shipped inside the package), the embedded benchmark."""

from __future__ import annotations

import numpy as np
import torch
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
