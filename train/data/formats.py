"""Readers for the on-disk formats of the reference datasets (no checksums: fixtures must load too).

torchvision verifies the MD5 of every CIFAR file, so small test fixtures in the genuine format would be
rejected; these readers parse the formats themselves and are what the loaders use for real data too.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def read_cifar_batches(files: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR python pickles (Python 2 pickles, latin1): images `(N, 32, 32, 3)` uint8 and labels."""
    images, labels = [], []
    for file in files:
        with file.open("rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch[label_key])
    return np.concatenate(images), np.asarray(labels, dtype=np.int64)


def read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (optionally gzipped): magic (0, 0, dtype 0x08, ndim), big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN `*_32x32.mat`: `X (32, 32, 3, N)`, `y (N, 1)` with digit 0 stored as 10."""
    from scipy.io import loadmat

    mat = loadmat(str(path))
    labels = mat["y"].astype(np.int64).flatten() % 10
    return np.ascontiguousarray(mat["X"].transpose(3, 0, 1, 2)), labels


def read_cars_annotations(path: Path) -> tuple[list[str], np.ndarray]:
    """Stanford Cars devkit annotations: struct array `annotations` (bbox_x1.., `class` 1-based, `fname`)."""
    from scipy.io import loadmat

    records = np.atleast_1d(loadmat(str(path), squeeze_me=True)["annotations"])
    names = [str(r["fname"]) for r in records]
    return names, np.asarray([int(r["class"]) - 1 for r in records], dtype=np.int64)


def read_cars_class_names(path: Path) -> tuple[str, ...]:
    """Stanford Cars devkit `cars_meta.mat`: `class_names`, in label order."""
    from scipy.io import loadmat

    return tuple(str(n) for n in np.atleast_1d(loadmat(str(path), squeeze_me=True)["class_names"]))
