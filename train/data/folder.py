"""ImageFolder: a user's own classes as continual tasks, read with the backbone's transforms.

The layout, checks, split and its record live in `folder_scan` (torch-free); this module turns the checked
tasks into datasets: class ids in task order, then sorted class-folder order within a task; every image
decoded to upright RGB (`contract.images.to_rgb`) and transformed as the backbone spec says (`image_transform`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from contract.images import to_rgb

from ..backbones.spec import BackboneSpec
from ..config import DataConfig, RunConfig
from ..errors import UserError
from .folder_scan import (
    FOLDER_DATASET,
    SPLIT_FILE,
    FolderTask,
    folder_tasks,
    load_folder_task,
    resolve_folder_tasks,
    split_record,
    summary,
    write_split_record,
)
from .transforms import image_transform

__all__ = ["FOLDER_DATASET", "SPLIT_FILE", "FolderImages", "FolderData", "check_folder_data", "folder_data",
           "load_folder_task", "min_train_images", "resolve_folder_tasks", "write_split_record"]


class FolderImages(Dataset):
    """Image files read on access, converted by `to_rgb` (EXIF orientation, 16-bit, alpha) then transformed."""

    def __init__(self, files: list[tuple[Path, int]], transform):
        self.paths = [path for path, _ in files]
        self.labels = torch.as_tensor([label for _, label in files], dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            return self.transform(to_rgb(image)), self.labels[index]


@dataclass(frozen=True)
class FolderData:
    train: FolderImages
    train_eval: FolderImages
    test: FolderImages
    class_names: tuple[str, ...]
    task_classes: tuple[tuple[int, ...], ...]
    task_names: tuple[str, ...]
    record: dict  # the split, as `<output_dir>/data_split.json` keeps it


def _labelled(tasks: list[FolderTask], part: str, offset: int) -> list[tuple[Path, int]]:
    files = []
    for task in tasks:
        files += [(path, offset + c) for path, c in task.files(part)]
        offset += len(task.classes)
    return files


def folder_data(data: DataConfig, spec: BackboneSpec, run_dir: str | Path | None = None, min_train: int = 1,
                known: tuple[str, ...] = ()) -> FolderData:
    """The run's folder tasks as datasets (the split recorded in `run_dir` read back for the tasks it holds).

    After a built-in dataset whose classes are `known`, class ids continue after them (its classes keep theirs).
    """
    tasks = folder_tasks(data, run_dir, min_train, known)
    train_tf, test_tf = image_transform(spec, train=True), image_transform(spec, train=False)
    offset = len(known)
    train, test = _labelled(tasks, "train", offset), _labelled(tasks, "test", offset)
    ids, task_classes = iter(range(offset, offset + sum(len(t.classes) for t in tasks))), []
    for task in tasks:
        task_classes.append(tuple(next(ids) for _ in task.classes))
    task_names = tuple(t.name for t in tasks)
    if data.merge_tasks:  # the joint upper bound: one task of every class
        task_classes, task_names = [tuple(c for t in task_classes for c in t)], ("+".join(task_names),)
    return FolderData(FolderImages(train, train_tf), FolderImages(train, test_tf), FolderImages(test, test_tf),
                      tuple(c for t in tasks for c in t.classes), tuple(task_classes), task_names,
                      split_record(data, tasks))


def min_train_images(config: RunConfig) -> int:
    """Training images a class needs: a covariance or variance estimate needs two features, k-means one."""
    return 2 if config.alignment.ca_storage_efficient_method in ("covariance", "variance") else 1


def check_folder_data(config: RunConfig, known: tuple[str, ...] = ()) -> list[FolderTask]:
    """Every check of the user's folders (ImageFolder, or `extra_task_dirs` after a built-in dataset whose classes
    are `known`), before any process group or file is written; the summary printed once (rank 0)."""
    run_dir = config.output_dir if config.resume else None
    tasks = folder_tasks(config.data, run_dir, min_train_images(config), known)
    folder_only = config.data.dataset == FOLDER_DATASET
    if folder_only and (1 if config.data.merge_tasks else len(tasks)) != config.data.num_tasks:
        raise UserError(f"the data under '{config.data.data_path}' (+ {len(config.data.extra_task_dirs)} extra "
                        f"folder(s)) holds {len(tasks)} tasks, the run's config says {config.data.num_tasks}: "
                        "ImageFolder runs take their task count from the folders (leave --num_tasks out).")
    if os.environ.get("RANK", "0") == "0":
        print("\n".join(summary(tasks)), file=sys.stderr, flush=True)
    return tasks
