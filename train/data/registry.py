"""Dataset registry: reference names → loaders producing (train, test) datasets and their labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..backbones.spec import BackboneSpec
from ..errors import UserError
from .digits import load_split_digits


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
    load: Callable[[str, BackboneSpec], ContinualData] | None = None


def _digits(_: str, spec: BackboneSpec) -> ContinualData:
    train, test = load_split_digits(spec)
    return ContinualData(train, train, test, train.tensors[1], test.tensors[1], 10)  # no augmentation


DATASETS: dict[str, DatasetEntry] = {
    "Split-Digits": DatasetEntry(10, 5, "nothing: scikit-learn ships the digits", _digits),
    "Split-CIFAR100": DatasetEntry(100, 10, "<data-path>/cifar-100-python/{train,test,meta} (torchvision format)"),
    "Split-Imagenet-R": DatasetEntry(200, 10, "<data-path>/imagenet-r/<wnid>/*.jpg"),
    "5-datasets": DatasetEntry(50, 5, "SVHN, MNIST, CIFAR-10, notMNIST, Fashion-MNIST under <data-path>"),
    "Split-CUB200": DatasetEntry(200, 10, "<data-path>/CUB_200_2011/{images,train_test_split.txt,...}"),
}


def dataset_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'. Datasets: {', '.join(DATASETS)}.")
    return DATASETS[name]


def check_loadable(name: str, data_path: str) -> DatasetEntry:
    """The registry entry of `name`, or one message naming the expected layout."""
    entry = dataset_entry(name)
    if entry.load is None:
        where = Path(data_path)
        state = "does not exist" if not where.exists() else "has no loader in this version yet"
        raise UserError(
            f"dataset '{name}' cannot be loaded: data path '{where}' {state}. Expected layout: {entry.layout}. "
            "Loaders for the reference datasets arrive with the real-datasets work (issue #4); "
            "the embedded benchmark 'Split-Digits' (preset digits_hideprompt) runs offline."
        )
    return entry


def load_dataset(name: str, data_path: str, spec: BackboneSpec) -> ContinualData:
    return check_loadable(name, data_path).load(data_path, spec)
