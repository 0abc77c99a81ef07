"""The Split-Digits test split exactly as training evaluates it (train/ code), as pixel_values + labels for clients."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_test_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The test split as the embedded backbone's input: pixel_values [N, 3, H, W] (float32) and labels [N]."""
    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
    from train.data.digits import digits_arrays
    from train.data.transforms import grayscale_to_input

    _, x, _, y = digits_arrays()
    return grayscale_to_input(x, backbone_spec(EMBEDDED_BACKBONE)).numpy(), np.asarray(y)


def write_test_npz(path: Path) -> Path:
    """`path` (.npz) with pixel_values [N, 3, H, W] (the embedded backbone's input) and labels [N]."""
    pixel_values, labels = digits_test_inputs()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, labels=labels, pixel_values=pixel_values)
    return path
