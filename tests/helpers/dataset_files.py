"""Tiny datasets written in the genuine on-disk formats of the reference datasets."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


def _images(n: int, size: int = 32, channels: int = 3) -> np.ndarray:
    shape = (n, size, size, channels) if channels > 1 else (n, size, size)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _pickle(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(payload, f, protocol=2)


def write_cifar100(root: Path, per_class: int = 2) -> np.ndarray:
    """`cifar-100-python/{train,test,meta}`; returns the train images `(N, 32, 32, 3)`."""
    folder = root / "cifar-100-python"
    labels = np.repeat(np.arange(100), per_class)
    train = _images(len(labels))
    _pickle(folder / "train", {"data": train.transpose(0, 3, 1, 2).reshape(len(labels), -1),
                               "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()})
    test_labels = np.arange(100)
    _pickle(folder / "test", {"data": _images(100).transpose(0, 3, 1, 2).reshape(100, -1),
                              "fine_labels": test_labels.tolist(), "coarse_labels": (test_labels // 5).tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    return train


def write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {"data": _images(10).transpose(0, 3, 1, 2).reshape(10, -1),
                                             "labels": list(range(10))})
    _pickle(folder / "test_batch", {"data": _images(10).transpose(0, 3, 1, 2).reshape(10, -1),
                                    "labels": list(range(10))})


def _idx(path: Path, array: np.ndarray, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open(str(path) + ".gz", "wb") if gz else path.open("wb")).write(data)


def write_mnist_like(root: Path, name: str, gz: bool = False) -> None:
    folder = root / name / "raw"
    for prefix, n in (("train", 20), ("t10k", 10)):
        _idx(folder / f"{prefix}-images-idx3-ubyte", _images(n, 28, 1), gz)
        _idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)


def write_svhn(root: Path) -> None:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 20), ("test", 10)):
        savemat(str(root / f"{split}_32x32.mat"),
                {"X": _images(n).transpose(1, 2, 3, 0), "y": (np.arange(n) % 10 + 1).reshape(-1, 1)})


def _png_tree(folder: Path, classes: list[str], per_class: int, suffix: str = ".png") -> None:
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_images(1, 12)[0]).save(folder / name / f"img{i}{suffix}")


def write_not_mnist(root: Path) -> None:
    for split in ("Train", "Test"):
        _png_tree(root / "notMNIST" / split, list("ABCDEFGHIJ"), 2)


def write_imagenet_r(root: Path, classes: int = 3, per_class: int = 10) -> None:
    _png_tree(root / "imagenet-r", [f"n{i:08d}" for i in range(classes)], per_class, ".jpg")


def write_cub(root: Path, classes: int = 3, per_class: int = 4) -> None:
    folder = root / "CUB_200_2011"
    names = [f"{c + 1:03d}.Bird_{c}" for c in range(classes)]
    _png_tree(folder / "images", names, per_class, ".jpg")
    rows = [(c, f"{names[c]}/img{i}.jpg", i % 2) for c in range(classes) for i in range(per_class)]
    (folder / "images.txt").write_text("".join(f"{k + 1} {p}\n" for k, (_, p, _) in enumerate(rows)))
    (folder / "image_class_labels.txt").write_text("".join(f"{k + 1} {c + 1}\n" for k, (c, _, _) in enumerate(rows)))
    (folder / "train_test_split.txt").write_text("".join(f"{k + 1} {t}\n" for k, (_, _, t) in enumerate(rows)))


def write_cars(root: Path, classes: int = 3, per_class: int = 2) -> None:
    for split in ("train", "test"):
        _png_tree(root / "stanford_cars" / split, [f"Car Model {c}" for c in range(classes)], per_class, ".jpg")


CARS_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def _cars_annotations(path: Path, rows: list[tuple[int, str]]) -> None:
    """A devkit annotation file: 1×N MATLAB struct array `annotations` with the official fields."""
    from scipy.io import savemat

    records = np.zeros((1, len(rows)), dtype=[(f, "O") for f in CARS_FIELDS])
    for i, (label, fname) in enumerate(rows):
        records[0, i] = (np.uint16(1), np.uint16(2), np.uint16(30), np.uint16(20), np.uint8(label), fname)
    savemat(str(path), {"annotations": records})


def write_cars_devkit(root: Path, classes: int = 3, per_class: int = 2) -> dict[str, list[tuple[int, str]]]:
    """Stanford Cars' official layout under `stanford_cars/`; returns the (1-based class, fname) rows per split."""
    from scipy.io import savemat

    folder = root / "stanford_cars"
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(str(folder / "devkit" / "cars_meta.mat"),
            {"class_names": np.array([[f"Car Model {c}" for c in range(classes)]], dtype=object)})
    rows = {}
    for split, annos_file in (("train", folder / "devkit" / "cars_train_annos.mat"),
                               ("test", folder / "cars_test_annos_withlabels.mat")):
        # files numbered in an order that is not the class order, as in the real devkit
        rows[split] = [((k * 2) % classes + 1, f"{k + 1:05d}.jpg") for k in range(classes * per_class)]
        (folder / f"cars_{split}").mkdir(exist_ok=True)
        for _, fname in rows[split]:
            Image.fromarray(_images(1, 12)[0]).save(folder / f"cars_{split}" / fname)
        _cars_annotations(annos_file, rows[split])
    return rows
