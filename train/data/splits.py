"""Class-incremental task splits: which classes each task holds, and masks over the logits."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from ..errors import UserError


@dataclass(frozen=True)
class TaskSplit:
    num_classes: int
    task_classes: tuple[tuple[int, ...], ...]

    @property
    def num_tasks(self) -> int:
        return len(self.task_classes)

    def class_to_task(self) -> torch.Tensor:
        """`(C,)` task index of every class (-1 for a class in no task)."""
        table = torch.full((self.num_classes,), -1, dtype=torch.long)
        for task, classes in enumerate(self.task_classes):
            table[list(classes)] = task
        return table

    def task_mask(self, task: int) -> torch.Tensor:
        """`(C,)` True for the classes of `task`."""
        mask = torch.zeros(self.num_classes, dtype=torch.bool)
        mask[list(self.task_classes[task])] = True
        return mask

    def seen_mask(self, task: int) -> torch.Tensor:
        """`(C,)` True for the classes of tasks `0..task`."""
        return torch.stack([self.task_mask(t) for t in range(task + 1)]).any(dim=0)

    def seen_classes(self, task: int) -> list[int]:
        return [c for t in range(task + 1) for c in self.task_classes[t]]


def split_classes(num_classes: int, num_tasks: int, shuffle: bool = False, seed: int = 0) -> TaskSplit:
    """`ceil(C/T)` consecutive classes per task in native label order, or a seeded shuffled order."""
    order = list(range(num_classes))
    if shuffle:
        random.Random(seed).shuffle(order)
    per_task = math.ceil(num_classes / num_tasks)
    if per_task * (num_tasks - 1) >= num_classes:
        raise UserError(f"{num_classes} classes cannot fill {num_tasks} tasks of {per_task} classes "
                        "(the last would be empty): choose fewer tasks")
    tasks = tuple(tuple(order[t * per_task : (t + 1) * per_task]) for t in range(num_tasks))
    return TaskSplit(num_classes, tasks)


def indices_of_classes(targets: torch.Tensor, classes: tuple[int, ...]) -> list[int]:
    """Positions of the samples whose label is in `classes`, in dataset order (one vectorised pass)."""
    return torch.isin(targets, torch.tensor(classes)).nonzero().flatten().tolist()
