"""Image datasets over decoded arrays or image files, with a torchvision transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class ArrayImages(Dataset):
    """Images held in memory as uint8 `(N, H, W)` or `(N, H, W, C)` (CIFAR, MNIST, SVHN)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, torch.as_tensor(labels, dtype=torch.long), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index]).convert("RGB")
        return self.transform(image), self.labels[index]


class FileImages(Dataset):
    """Images read from files on access (ImageNet-R, CUB, notMNIST)."""

    def __init__(self, paths: list[Path], labels: list[int], transform):
        self.paths, self.labels, self.transform = paths, torch.as_tensor(labels, dtype=torch.long), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), self.labels[index]


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """ImageFolder layout: sorted class folders, each with its sorted image files."""
    return [(d.name, sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            for d in sorted(p for p in root.iterdir() if p.is_dir())]
