"""Dataset registry: reference names → loaders producing (train, test) datasets and their labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Dataset

from ..backbones.spec import BackboneSpec
from ..config import DataConfig
from ..errors import UserError
from .digits import load_split_digits
from .download import DOWNLOADS, downloading
from .folder_scan import FOLDER_DATASET, write_split_record
from .reference import (
    CLASS_NAMES,
    FIVE_DATASETS,
    READERS,
    DataLayoutError,
    Reader,
    build_split,
    five_datasets,
    five_datasets_names,
)


@dataclass(frozen=True)
class ContinualData:
    train: Dataset  # training images with the training transform
    train_eval: Dataset  # the same images with the test transform: class statistics use these
    test: Dataset
    train_targets: torch.Tensor
    test_targets: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] = ()  # empty: str(i) (`names()` gives the full tuple)
    task_classes: tuple[tuple[int, ...], ...] | None = None  # class ids per task; None: the preset's split_classes
    task_names: tuple[str, ...] = ()  # ImageFolder: the task folders' names
    split_record: dict | None = None  # ImageFolder: the train/test file lists, kept as <output_dir>/data_split.json

    def names(self) -> tuple[str, ...]:
        return self.class_names or tuple(str(c) for c in range(self.num_classes))


@dataclass(frozen=True)
class DatasetEntry:
    num_classes: int
    default_tasks: int
    layout: str  # what the user must put under --data-path
    source: str  # where to get it
    load: Callable[[Path, BackboneSpec, DataConfig], ContinualData]
    downloadable: tuple[str, ...] = ()  # members `--download` fetches with torchvision (download.DOWNLOADS)


def _digits(_: Path, spec: BackboneSpec, __: DataConfig) -> ContinualData:
    train, test = load_split_digits(spec)
    return ContinualData(train, train, test, train.tensors[1], test.tensors[1], 10,  # no augmentation
                         class_names=CLASS_NAMES["digits"])


def _reader(name: str, data: DataConfig) -> Reader:
    """The reader of `name`; with `--download`, one that fetches the files first when torchvision can."""
    return downloading(READERS[name], name) if data.download and name in DOWNLOADS else READERS[name]


def _single(name: str, num_classes: int, cifar_style: bool = False):
    def load(root: Path, spec: BackboneSpec, data: DataConfig) -> ContinualData:
        parts = _reader(name, data)(root)
        return ContinualData(*build_split(parts, spec, cifar_style, data.reference_normalization), num_classes,
                             class_names=parts[0].names)

    return load


def _five(root: Path, spec: BackboneSpec, data: DataConfig) -> ContinualData:
    readers = {name: _reader(name, data) for name in FIVE_DATASETS}
    return ContinualData(*five_datasets(root, spec, data.reference_normalization, data.five_datasets_transform_leak,
                                        readers), 50, class_names=five_datasets_names())


def _image_folder(_: Path, __: BackboneSpec, ___: DataConfig) -> ContinualData:
    raise AssertionError("ImageFolder is loaded by load_dataset (it needs the run folder)")


_TV = "torchvision's {} (download=True, or --download here)"
_MNIST_LAYOUT = "<data-path>/{}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz] (torchvision's layout)"
_NOT_MNIST = ("<data-path>/notMNIST/{Train,Test}/<A..J>/*.png (one folder per letter)",
              "notMNIST_small (http://yaroslavvb.blogspot.com/2011/09/notmnist-dataset.html), split into Train/Test")
DATASETS: dict[str, DatasetEntry] = {
    "Split-Digits": DatasetEntry(10, 5, "nothing: scikit-learn ships the digits", "scikit-learn", _digits),
    "Split-CIFAR100": DatasetEntry(
        100, 10, "<data-path>/cifar-100-python/{train,test} (the python version)",
        "https://www.cs.toronto.edu/~kriz/cifar.html (or torchvision CIFAR100(download=True))",
        _single("cifar100", 100, cifar_style=True), ("cifar100",)),
    "Split-Imagenet-R": DatasetEntry(
        200, 10, "<data-path>/imagenet-r/<wnid>/*.jpg (200 class folders, as extracted from imagenet-r.tar)",
        "https://github.com/hendrycks/imagenet-r", _single("imagenet_r", 200)),
    "5-datasets": DatasetEntry(
        50, 5, "<data-path>/{train_32x32.mat,test_32x32.mat} (SVHN), MNIST/raw/*-ubyte, cifar-10-batches-py/, "
        "notMNIST/{Train,Test}/<A..J>/*.png, FashionMNIST/raw/*-ubyte",
        "torchvision's SVHN, MNIST, CIFAR10, FashionMNIST (download=True, or --download here) and notMNIST_small",
        _five, ("svhn", "mnist", "cifar10", "fashion_mnist")),
    "Split-CUB200": DatasetEntry(
        200, 10, "<data-path>/CUB_200_2011/{images/,images.txt,image_class_labels.txt,train_test_split.txt}",
        "https://www.vision.caltech.edu/datasets/cub_200_2011/", _single("cub200", 200)),
    "Cars196": DatasetEntry(
        196, 10, "<data-path>/stanford_cars/ holding the official devkit layout (cars_train/, cars_test/, "
        "devkit/cars_train_annos.mat, devkit/cars_meta.mat, cars_test_annos_withlabels.mat) or one folder per "
        "class ({train,test}/<class name>/*.jpg)",
        "the Stanford Cars dataset (e.g. its per-class-folder redistribution)", _single("cars196", 196)),
    "Split-CIFAR10": DatasetEntry(
        10, 5, "<data-path>/cifar-10-batches-py/{data_batch_1..5,test_batch} (the python version)",
        _TV.format("CIFAR10"), _single("cifar10", 10, cifar_style=True), ("cifar10",)),
    "Split-MNIST": DatasetEntry(10, 5, _MNIST_LAYOUT.format("MNIST"), _TV.format("MNIST"), _single("mnist", 10),
                                ("mnist",)),
    "Split-FashionMNIST": DatasetEntry(
        10, 5, _MNIST_LAYOUT.format("FashionMNIST"), _TV.format("FashionMNIST"), _single("fashion_mnist", 10),
        ("fashion_mnist",)),
    "Split-SVHN": DatasetEntry(10, 5, "<data-path>/{train,test}_32x32.mat (or <data-path>/SVHN/)",
                               _TV.format("SVHN"), _single("svhn", 10), ("svhn",)),
    "Split-NotMNIST": DatasetEntry(10, 5, *_NOT_MNIST, _single("not_mnist", 10)),
    # classes and tasks come from the folders (num_classes 0: not known before they are read)
    FOLDER_DATASET: DatasetEntry(
        0, 0, "<data-path>/<task>/<class>/<image> (tasks in sorted name order; or <task>/{train,test}/<class>/"
        "<image>); JPEG/PNG/BMP/WebP/TIFF", "your own images (see docs/your-own-data.md)", _image_folder),
}


def dataset_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'. Datasets: {', '.join(DATASETS)}.")
    return DATASETS[name]


def layout_error(name: str, data_path: str, missing: str = "", download: bool = False) -> UserError:
    entry = dataset_entry(name)
    where = Path(data_path)
    state = f"is missing {missing}" if missing and where.exists() else "does not exist"
    if not missing and where.exists():
        state = "does not hold it"
    return UserError(f"dataset '{name}' cannot be loaded: data path '{where}' {state}. Expected layout: "
                     f"{entry.layout}. Get it from {entry.source}.{_download_hint(entry, download)}")


def _download_hint(entry: DatasetEntry, download: bool) -> str:
    titles = ", ".join(DOWNLOADS[n].title for n in entry.downloadable)
    if not titles:
        return ""
    if download:
        return f" (--download fetches only {titles}.)"
    return f" Or pass --download to let torchvision fetch {titles} into the data path."


def check_loadable(name: str, data_path: str, download: bool = False) -> DatasetEntry:
    """The registry entry of `name`; fails early when the data path does not exist (and --download cannot
    create it)."""
    entry = dataset_entry(name)
    if entry.load is not _digits and not Path(data_path).is_dir() and not (download and entry.downloadable):
        raise layout_error(name, data_path)
    return entry


def load_dataset(data: DataConfig, spec: BackboneSpec, run_dir: str | Path | None = None) -> ContinualData:
    """The train and test sets of `data.dataset`, or one message naming the expected layout.

    ImageFolder reads the split recorded in `run_dir` back (for the tasks it holds) instead of splitting again.
    """
    if data.dataset == FOLDER_DATASET:
        return _folder(data, spec, run_dir)
    entry = check_loadable(data.dataset, data.data_path, data.download)
    try:
        builtin = entry.load(Path(data.data_path), spec, data)
    except DataLayoutError as missing:
        raise layout_error(data.dataset, data.data_path, str(missing), data.download) from None
    return _with_folder_tasks(builtin, data, spec, run_dir) if data.extra_task_dirs else builtin


def _folder(data: DataConfig, spec: BackboneSpec, run_dir: str | Path | None) -> ContinualData:
    from .folder import folder_data

    folder = folder_data(data, spec, run_dir)
    return ContinualData(folder.train, folder.train_eval, folder.test, folder.train.labels, folder.test.labels,
                         len(folder.class_names), folder.class_names, folder.task_classes, folder.task_names,
                         folder.record)


def _with_folder_tasks(builtin: ContinualData, data: DataConfig, spec: BackboneSpec,
                       run_dir: str | Path | None) -> ContinualData:
    """A built-in dataset + one task per `extra_task_dirs` folder: their classes get ids after the built-in's, and
    `task_classes` lists only these tasks (the built-in's own are split as usual, before them)."""
    from .folder import folder_data

    folder = folder_data(data, spec, run_dir, known=builtin.names())
    return ContinualData(
        ConcatDataset([builtin.train, folder.train]), ConcatDataset([builtin.train_eval, folder.train_eval]),
        ConcatDataset([builtin.test, folder.test]), torch.cat([builtin.train_targets, folder.train.labels]),
        torch.cat([builtin.test_targets, folder.test.labels]), builtin.num_classes + len(folder.class_names),
        builtin.names() + folder.class_names, folder.task_classes, folder.task_names, folder.record)


def builtin_class_names(data: DataConfig, spec: BackboneSpec) -> tuple[str, ...]:
    """The class names of `data.dataset` alone (what folder tasks after it may not reuse)."""
    return load_dataset(replace(data, extra_task_dirs=()), spec).names()


def record_data_split(output_dir: str | Path, data: ContinualData) -> None:
    """Keep an ImageFolder run's split with the run (rank 0, before training); other datasets: nothing to keep."""
    if data.split_record is not None:
        write_split_record(output_dir, data.split_record)
