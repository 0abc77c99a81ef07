"""Dataset registry: reference names → loaders producing (train, test) datasets and their labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..backbones.spec import BackboneSpec
from ..config import DataConfig
from ..errors import UserError
from .digits import load_split_digits
from .reference import DataLayoutError, build_split, cars196, cifar100, cub200, five_datasets, imagenet_r


@dataclass(frozen=True)
class ContinualData:
    train: Dataset  # training images with the training transform
    train_eval: Dataset  # the same images with the test transform: class statistics use these
    test: Dataset
    train_targets: torch.Tensor
    test_targets: torch.Tensor
    num_classes: int


@dataclass(frozen=True)
class DatasetEntry:
    num_classes: int
    default_tasks: int
    layout: str  # what the user must put under --data-path
    source: str  # where to get it
    load: Callable[[Path, BackboneSpec, DataConfig], ContinualData]


def _digits(_: Path, spec: BackboneSpec, __: DataConfig) -> ContinualData:
    train, test = load_split_digits(spec)
    return ContinualData(train, train, test, train.tensors[1], test.tensors[1], 10)  # no augmentation


def _single(reader, num_classes: int, cifar_style: bool = False):
    def load(root: Path, spec: BackboneSpec, data: DataConfig) -> ContinualData:
        return ContinualData(*build_split(reader(root), spec, cifar_style, data.reference_normalization),
                             num_classes)

    return load


def _five(root: Path, spec: BackboneSpec, data: DataConfig) -> ContinualData:
    return ContinualData(*five_datasets(root, spec, data.reference_normalization, data.five_datasets_transform_leak),
                         50)


DATASETS: dict[str, DatasetEntry] = {
    "Split-Digits": DatasetEntry(10, 5, "nothing: scikit-learn ships the digits", "scikit-learn", _digits),
    "Split-CIFAR100": DatasetEntry(
        100, 10, "<data-path>/cifar-100-python/{train,test} (the python version)",
        "https://www.cs.toronto.edu/~kriz/cifar.html (or torchvision CIFAR100(download=True))",
        _single(cifar100, 100, cifar_style=True)),
    "Split-Imagenet-R": DatasetEntry(
        200, 10, "<data-path>/imagenet-r/<wnid>/*.jpg (200 class folders, as extracted from imagenet-r.tar)",
        "https://github.com/hendrycks/imagenet-r", _single(imagenet_r, 200)),
    "5-datasets": DatasetEntry(
        50, 5, "<data-path>/{train_32x32.mat,test_32x32.mat} (SVHN), MNIST/raw/*-ubyte, cifar-10-batches-py/, "
        "notMNIST/{Train,Test}/<A..J>/*.png, FashionMNIST/raw/*-ubyte",
        "torchvision's SVHN, MNIST, CIFAR10, FashionMNIST (download=True) and notMNIST_small", _five),
    "Split-CUB200": DatasetEntry(
        200, 10, "<data-path>/CUB_200_2011/{images/,images.txt,image_class_labels.txt,train_test_split.txt}",
        "https://www.vision.caltech.edu/datasets/cub_200_2011/", _single(cub200, 200)),
    "Cars196": DatasetEntry(
        196, 10, "<data-path>/stanford_cars/{train,test}/<class name>/*.jpg (one folder per class)",
        "the Stanford Cars dataset (e.g. its per-class-folder redistribution)", _single(cars196, 196)),
}


def dataset_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'. Datasets: {', '.join(DATASETS)}.")
    return DATASETS[name]


def layout_error(name: str, data_path: str, missing: str = "") -> UserError:
    entry = dataset_entry(name)
    where = Path(data_path)
    state = f"is missing {missing}" if missing and where.exists() else "does not exist"
    if not missing and where.exists():
        state = "does not hold it"
    return UserError(f"dataset '{name}' cannot be loaded: data path '{where}' {state}. Expected layout: "
                     f"{entry.layout}. Get it from {entry.source}.")


def check_loadable(name: str, data_path: str) -> DatasetEntry:
    """The registry entry of `name`; fails early when the data path does not exist."""
    entry = dataset_entry(name)
    if entry.load is not _digits and not Path(data_path).is_dir():
        raise layout_error(name, data_path)
    return entry


def load_dataset(data: DataConfig, spec: BackboneSpec) -> ContinualData:
    """The train and test sets of `data.dataset`, or one message naming the expected layout."""
    entry = check_loadable(data.dataset, data.data_path)
    try:
        return entry.load(Path(data.data_path), spec, data)
    except DataLayoutError as missing:
        raise layout_error(data.dataset, data.data_path, str(missing)) from None
