"""Loaders for the reference datasets, from the folders users download them into.

Each returns train/test image datasets with the reference's transforms at the backbone's input size
(`image_transform`), their labels, and the class count. A missing file raises `DataLayoutError`, which
the registry turns into one message naming the expected layout.
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset

from ..backbones.spec import BackboneSpec
from ..paths import cache_root
from .formats import read_cars_annotations, read_cars_class_names, read_cifar_batches, read_idx, read_svhn_mat
from .images import ArrayImages, FileImages, class_folders
from .transforms import image_transform

IMAGENET_R_TRAIN_FRACTION, IMAGENET_R_SPLIT_SEED = 0.8, 0


class DataLayoutError(FileNotFoundError):
    """A file or folder the loader needs is missing."""


@dataclass(frozen=True)
class Part:
    """One split of a dataset: images in memory or on disk, their labels, and the class names when the files
    say them (empty: the labels are the names)."""

    images: np.ndarray | list[Path]
    labels: np.ndarray
    names: tuple[str, ...] = ()


DIGITS = tuple(str(d) for d in range(10))
CLASS_NAMES: dict[str, tuple[str, ...]] = {  # datasets whose names no file carries
    "digits": DIGITS, "mnist": DIGITS, "svhn": DIGITS, "not_mnist": tuple("ABCDEFGHIJ"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
}


def named(parts: tuple[Part, Part], names: tuple[str, ...]) -> tuple[Part, Part]:
    return tuple(replace(p, names=tuple(names)) for p in parts)


def _pickled_names(path: Path, key: str) -> tuple[str, ...]:
    """Class names from a CIFAR meta pickle (`meta`: fine_label_names, `batches.meta`: label_names), if there."""
    if not path.is_file():
        return ()
    with path.open("rb") as f:
        return tuple(str(n) for n in pickle.load(f, encoding="latin1").get(key, ()))


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataLayoutError(str(path))
    return path


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise DataLayoutError(str(candidates[0]))


# -- the formats, one function per member dataset -------------------------------------------------
def cifar100(root: Path) -> tuple[Part, Part]:
    folder = _need(root / "cifar-100-python")
    parts = tuple(Part(*read_cifar_batches([_need(folder / s)], "fine_labels")) for s in ("train", "test"))
    return named(parts, _pickled_names(folder / "meta", "fine_label_names"))


def cifar10(root: Path) -> tuple[Part, Part]:
    folder = _need(root / "cifar-10-batches-py")
    train = [_need(folder / f"data_batch_{i}") for i in range(1, 6)]
    parts = Part(*read_cifar_batches(train, "labels")), Part(*read_cifar_batches([_need(folder / "test_batch")],
                                                                                  "labels"))
    return named(parts, _pickled_names(folder / "batches.meta", "label_names") or CLASS_NAMES["cifar10"])


def _idx_pair(folder: Path, prefix: str) -> Part:
    def file(kind: str) -> Path:
        name = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        return _first_existing(folder / name, folder / f"{name}.gz")

    return Part(read_idx(file("images")), read_idx(file("labels")).astype(np.int64))


def mnist_like(root: Path, name: str) -> tuple[Part, Part]:
    """MNIST or FashionMNIST in torchvision's layout `<root>/<name>/raw/*-idx?-ubyte[.gz]`."""
    folder = _need(root / name / "raw")
    return _idx_pair(folder, "train"), _idx_pair(folder, "t10k")


def mnist(root: Path) -> tuple[Part, Part]:
    return named(mnist_like(root, "MNIST"), CLASS_NAMES["mnist"])


def fashion_mnist(root: Path) -> tuple[Part, Part]:
    return named(mnist_like(root, "FashionMNIST"), CLASS_NAMES["fashion_mnist"])


def svhn(root: Path) -> tuple[Part, Part]:
    """`train_32x32.mat`/`test_32x32.mat` directly under the data path (torchvision) or in `SVHN/`."""
    files = (_first_existing(root / f"{s}_32x32.mat", root / "SVHN" / f"{s}_32x32.mat") for s in ("train", "test"))
    return named(tuple(Part(*read_svhn_mat(f)) for f in files), CLASS_NAMES["svhn"])


def _folder_part(classes: list[tuple[str, list[Path]]]) -> Part:
    paths = [p for _, files in classes for p in files]
    labels = np.asarray([c for c, (_, files) in enumerate(classes) for _ in files], dtype=np.int64)
    return Part(paths, labels, tuple(name for name, _ in classes))  # the folder names (wnids, letters, models)


def not_mnist(root: Path) -> tuple[Part, Part]:
    """`<root>/notMNIST/{Train,Test}/<A..J>/*.png` (the reference's extracted notMNIST.zip)."""
    folder = _need(root / "notMNIST")
    return tuple(_folder_part(class_folders(_need(folder / s))) for s in ("Train", "Test"))


def imagenet_r(root: Path) -> tuple[Part, Part]:
    """`<root>/imagenet-r/<wnid>/*`: a fixed 80/20 split per class (seed 0), never moving the user's files.

    A folder already split by the reference (`imagenet-r/train`, `imagenet-r/test`) is used as it is.
    """
    folder = _need(root / "imagenet-r")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return _folder_part(class_folders(folder / "train")), _folder_part(class_folders(folder / "test"))
    classes = class_folders(folder)
    if not classes:
        raise DataLayoutError(str(folder / "<wnid>"))
    rng = random.Random(IMAGENET_R_SPLIT_SEED)
    train, test = [], []
    for name, files in classes:
        shuffled = files[:]
        rng.shuffle(shuffled)
        cut = int(round(IMAGENET_R_TRAIN_FRACTION * len(shuffled)))
        train.append((name, sorted(shuffled[:cut])))
        test.append((name, sorted(shuffled[cut:])))
    _record_split(folder, train, test)
    return _folder_part(train), _folder_part(test)


def _record_split(folder: Path, train, test) -> None:
    """Keep the file lists of the split beside the other caches, for inspection and reuse elsewhere."""
    names = {split: {n: [f.name for f in fs] for n, fs in part} for split, part in (("train", train), ("test", test))}
    record = {"root": str(folder), "seed": IMAGENET_R_SPLIT_SEED, "train_fraction": IMAGENET_R_TRAIN_FRACTION, **names}
    target = cache_root() / "splits" / "imagenet-r-seed0.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record))


def cars196(root: Path) -> tuple[Part, Part]:
    """Stanford Cars under `<root>/stanford_cars/`: the official devkit layout, or one folder per class.

    Devkit (as torchvision's StanfordCars): `cars_train/`, `cars_test/`, `devkit/cars_train_annos.mat`,
    `devkit/cars_meta.mat`, `cars_test_annos_withlabels.mat`; labels are the annotations' 1-based `class` - 1.
    Folders: `{train,test}/<class name>/*.jpg`, classes in sorted name order.
    """
    folder = _need(root / "stanford_cars")
    if (folder / "devkit").is_dir():
        return cars196_devkit(folder)
    return tuple(_folder_part(class_folders(_need(folder / s))) for s in ("train", "test"))


def cars196_devkit(folder: Path) -> tuple[Part, Part]:
    _need(folder / "devkit" / "cars_meta.mat")
    train = read_cars_annotations(_need(folder / "devkit" / "cars_train_annos.mat"))
    test = read_cars_annotations(_need(folder / "cars_test_annos_withlabels.mat"))
    parts = tuple(Part([_need(folder / images) / name for name in names], labels)
                  for images, (names, labels) in (("cars_train", train), ("cars_test", test)))
    for path in parts[0].images[:1] + parts[1].images[:1]:
        _need(path)
    return named(parts, read_cars_class_names(folder / "devkit" / "cars_meta.mat"))


def cub200(root: Path) -> tuple[Part, Part]:
    """CUB-200-2011 with its official `train_test_split.txt`."""
    folder = _need(root / "CUB_200_2011")
    names = _cub_names(folder / "classes.txt")
    images = dict(line.split() for line in _need(folder / "images.txt").read_text().splitlines() if line.strip())
    labels = dict(line.split() for line in _need(folder / "image_class_labels.txt").read_text().splitlines()
                  if line.strip())
    split = dict(line.split() for line in _need(folder / "train_test_split.txt").read_text().splitlines()
                 if line.strip())
    parts = []
    for flag in ("1", "0"):
        ids = sorted((i for i in images if split[i] == flag), key=int)
        parts.append(Part([folder / "images" / images[i] for i in ids],
                          np.asarray([int(labels[i]) - 1 for i in ids], dtype=np.int64)))
    for path in parts[0].images[:1] + parts[1].images[:1]:
        _need(path)
    return named(tuple(parts), names)


def _cub_names(path: Path) -> tuple[str, ...]:
    """`classes.txt` lines `<id> <NNN.Name>` → the names without the number prefix, in id order (if there)."""
    if not path.is_file():
        return ()
    rows = sorted((int(i), n) for i, n in (line.split(maxsplit=1) for line in path.read_text().splitlines()
                                            if line.strip()))
    return tuple(n.strip().split(".", 1)[-1] for _, n in rows)


# -- datasets the registry exposes -----------------------------------------------------------------------
def _dataset(part: Part, transform):
    if isinstance(part.images, np.ndarray):
        return ArrayImages(part.images, part.labels, transform)
    return FileImages(part.images, part.labels.tolist(), transform)


def build_split(parts: tuple[Part, Part], spec: BackboneSpec, cifar_style: bool, reference_norm: bool,
                offset: int = 0):
    """(train, train with test transform, test) datasets and their labels, labels shifted by `offset`."""
    train_tf = image_transform(spec, train=True, cifar_style=cifar_style, reference_normalization=reference_norm)
    test_tf = image_transform(spec, train=False, cifar_style=cifar_style, reference_normalization=reference_norm)
    train, test = (Part(p.images, p.labels + offset) for p in parts)
    return (_dataset(train, train_tf), _dataset(train, test_tf), _dataset(test, test_tf),
            torch.as_tensor(train.labels), torch.as_tensor(test.labels))


FIVE_DATASETS = ("svhn", "mnist", "cifar10", "not_mnist", "fashion_mnist")  # the reference order
Reader = Callable[[Path], tuple[Part, Part]]
MEMBER_READERS: dict[str, Reader] = {"svhn": svhn, "mnist": mnist, "cifar10": cifar10, "not_mnist": not_mnist,
                                     "fashion_mnist": fashion_mnist}


def five_datasets(root: Path, spec: BackboneSpec, reference_norm: bool, transform_leak: bool,
                  readers: Mapping[str, Reader] = MEMBER_READERS):
    """SVHN, MNIST, CIFAR-10, notMNIST, Fashion-MNIST as tasks 0..4, labels offset by 10 per dataset.

    Each member gets its own transform; `transform_leak` reproduces the reference, where the CIFAR
    transform, once built for CIFAR-10, is also used by notMNIST and Fashion-MNIST.
    """
    members = []
    for index, name in enumerate(FIVE_DATASETS):
        cifar_style = name == "cifar10" or (transform_leak and index > FIVE_DATASETS.index("cifar10"))
        members.append(build_split(readers[name](root), spec, cifar_style, reference_norm, offset=10 * index))
    train, train_eval, test, train_y, test_y = zip(*members, strict=True)
    return (ConcatDataset(train), ConcatDataset(train_eval), ConcatDataset(test), torch.cat(train_y),
            torch.cat(test_y))


def five_datasets_names() -> tuple[str, ...]:
    """The 50 classes of 5-datasets, each named after its member ("svhn:3", "cifar10:cat")."""
    return tuple(f"{member}:{name}" for member in FIVE_DATASETS for name in CLASS_NAMES[member])


READERS: dict[str, Reader] = {**MEMBER_READERS, "cifar100": cifar100, "imagenet_r": imagenet_r, "cub200": cub200,
                              "cars196": cars196}
