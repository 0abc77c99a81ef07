"""The few-shot study's data: upstream continual classes of one or more datasets in one label space, and the
held-out classes of the few-shot dataset in its own (native) labels.

Fixes what the reference's `cub_cars_few_shot_lora` breaks: every member is loaded through the dataset
registry (Cars through its devkit or class folders, no `.data` attribute needed), and the second dataset's
continual classes are offset behind the first's (the reference's ImageFolder ignored its target transform,
so Cars and CUB classes collided).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch.utils.data import ConcatDataset, Dataset

from ..backbones.spec import BackboneSpec
from ..config import FewShotConfig, RunConfig
from ..data.registry import ContinualData, dataset_entry, load_dataset
from ..data.splits import TaskSplit
from ..errors import UserError

ALIASES = {"Split-Cars196": "Cars196"}  # the reference's name for Stanford Cars


def registry_name(name: str) -> str:
    return ALIASES.get(name, name)


@dataclass(frozen=True)
class UpstreamLayout:
    """Where each dataset's continual classes sit in the upstream label space, and the upstream tasks."""

    continual: tuple[int, ...]
    tasks: tuple[int, ...]

    @classmethod
    def of(cls, fewshot: FewShotConfig) -> UpstreamLayout:
        return cls(fewshot.continual_classes_per_dataset, fewshot.tasks_per_dataset)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Upstream label of each dataset's class 0: the continual classes of the datasets before it."""
        return tuple(sum(self.continual[:i]) for i in range(len(self.continual)))

    @property
    def num_classes(self) -> int:
        return sum(self.continual)

    def split(self) -> TaskSplit:
        """Dataset i's continual classes in `tasks_i` tasks of `ceil(continual_i / tasks_i)` classes, in order."""
        tasks: list[tuple[int, ...]] = []
        for offset, classes, count in zip(self.offsets, self.continual, self.tasks):
            per_task = math.ceil(classes / count)
            if per_task * (count - 1) >= classes:
                raise UserError(f"{classes} continual classes cannot fill {count} tasks: choose fewer tasks")
            tasks += [tuple(range(offset + t * per_task, offset + min(classes, (t + 1) * per_task)))
                      for t in range(count)]
        return TaskSplit(self.num_classes, tuple(tasks))

    def class_to_dataset(self) -> torch.Tensor:
        """`(C,)` dataset index (= shared LoRA slot) of every upstream class."""
        return torch.repeat_interleave(torch.arange(len(self.continual)), torch.tensor(self.continual))

    def task_to_dataset(self) -> tuple[int, ...]:
        return tuple(i for i, count in enumerate(self.tasks) for _ in range(count))


class Relabeled(Dataset):
    """Some samples of a dataset, with new labels."""

    def __init__(self, dataset: Dataset, indices: torch.Tensor, labels: torch.Tensor):
        self.dataset, self.indices, self.labels = dataset, indices.tolist(), labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]][0], self.labels[index]


def load_member(run: RunConfig, name: str, spec: BackboneSpec, needed_classes: int) -> ContinualData:
    """One upstream dataset on its own, native labels; it must have the classes the study assigns it."""
    data = load_dataset(replace(run.data, dataset=registry_name(name)), spec)
    if data.num_classes < needed_classes:
        raise UserError(f"'{name}' has {data.num_classes} classes, fewer than the {needed_classes} continual + "
                        "few-shot classes it is given (--continual_classes_per_dataset, "
                        "--few_shot_classes_per_dataset)")
    return data


def check_members(fewshot: FewShotConfig) -> None:
    """Known dataset names with enough classes, before anything is loaded."""
    for name, continual, few in zip(fewshot.datasets, fewshot.continual_classes_per_dataset,
                                    fewshot.few_shot_classes_per_dataset):
        entry = dataset_entry(registry_name(name))
        if entry.num_classes < continual + few:
            raise UserError(f"'{name}' has {entry.num_classes} classes, fewer than {continual} continual + {few} "
                            "few-shot classes (--continual_classes_per_dataset, --few_shot_classes_per_dataset)")


def _continual_part(dataset: Dataset, targets: torch.Tensor, classes: int, offset: int) -> Relabeled:
    keep = (targets < classes).nonzero().flatten()
    return Relabeled(dataset, keep, targets[keep] + offset)


def upstream_data(members: list[ContinualData], layout: UpstreamLayout) -> ContinualData:
    """The continual classes of every member in one label space (dataset i's class c → offset_i + c)."""
    parts = {"train": [], "train_eval": [], "test": []}
    for data, classes, offset in zip(members, layout.continual, layout.offsets):
        for split, targets in (("train", data.train_targets), ("train_eval", data.train_targets),
                               ("test", data.test_targets)):
            parts[split].append(_continual_part(getattr(data, split), targets, classes, offset))
    train_targets = torch.cat([p.labels for p in parts["train"]])
    test_targets = torch.cat([p.labels for p in parts["test"]])
    return ContinualData(ConcatDataset(parts["train"]), ConcatDataset(parts["train_eval"]),
                         ConcatDataset(parts["test"]), train_targets, test_targets, layout.num_classes)
