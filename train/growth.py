"""A run that grows: tasks with new classes are appended to its split, and what was learned for the smaller
split is carried into the model built for the larger one.

The model is always built for the split known now. A checkpoint written for a smaller split is fitted to
it by `grown_state`: every tensor keeps its old entries, and the entries along a class- or task-sized axis
that grew keep the values the freshly built model gave them (new head rows, new prompt/LoRA/key slots), so
the grown model is the old one plus what a fresh model would have for the new classes and tasks.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import RunConfig
from .data.registry import ContinualData, dataset_entry
from .data.splits import TaskSplit, split_classes
from .errors import UserError


def run_split(data: ContinualData, config: RunConfig) -> TaskSplit:
    """The run's tasks: classes in no task the data lists are the dataset's own, split as every built-in
    benchmark is (`split_classes`, first), then the listed tasks (folder tasks), in order."""
    listed = tuple(data.task_classes or ())
    own = data.num_classes - sum(len(classes) for classes in listed)
    first = split_classes(own, config.data.num_tasks - len(listed), config.data.shuffle,
                          config.seed).task_classes if own else ()
    return TaskSplit(data.num_classes, first + listed)


def recorded_split(state: dict) -> TaskSplit:
    """The split a checkpoint's state.json was written for (before growth existed: the built-in split of its
    config)."""
    if "task_classes" in state:
        tasks = tuple(tuple(c) for c in state["task_classes"])
        return TaskSplit(1 + max(c for classes in tasks for c in classes), tasks)
    config = RunConfig.from_dict(state["config"])
    return split_classes(dataset_entry(config.data.dataset).num_classes, config.data.num_tasks, config.data.shuffle,
                         config.seed)


def check_grows(old: TaskSplit, new: TaskSplit, where: str) -> None:
    """The new split keeps every task of the old one, with the same class ids (growth only appends tasks)."""
    for task, classes in enumerate(old.task_classes):
        now = new.task_classes[task] if task < new.num_tasks else ()
        if now != classes:
            raise UserError(f"'{where}' was trained on other tasks than this data gives: task {task + 1} had classes "
                            f"{list(classes)}, now {list(now)}. Resume it with the data, --num_tasks, --shuffle and "
                            "--seed it was trained with; new classes can only come as new tasks after its own.")


def growth_sizes(old: TaskSplit, new: TaskSplit, old_config: RunConfig, new_config: RunConfig) -> set[tuple[int, int]]:
    """The axis sizes that may grow, as (old, new) pairs: the class count, and the task slots (the pool)."""
    pairs = {(old.num_classes, new.num_classes), (old_config.adapter.slots, new_config.adapter.slots)}
    return {(a, b) for a, b in pairs if a < b}


def grown_state(module: nn.Module, state: dict[str, torch.Tensor], sizes: set[tuple[int, int]]
                ) -> dict[str, torch.Tensor]:
    """`state` fitted to `module`: a tensor smaller than the module's own only along axes whose (old, new)
    sizes are in `sizes` becomes a copy of the module's tensor with the old one in its leading entries.
    Any other difference is left as it is, so `load_state_dict` reports it."""
    own = module.state_dict()
    fitted = {}
    for key, value in state.items():
        target = own.get(key)
        if target is None or target.shape == value.shape or target.dim() != value.dim() or any(
                (a, b) not in sizes for a, b in zip(value.shape, target.shape) if a != b):
            fitted[key] = value
            continue
        grown = target.detach().clone()
        grown[tuple(slice(0, n) for n in value.shape)] = value.to(grown.dtype)
        fitted[key] = grown
    return fitted
