"""The contract every continual method fulfils, and the registry that maps names to methods.

A method is the `nn.Module` that DeepSpeed wraps. The engine drives it task by task:
`begin_task` → training steps (`forward` → `StepOutput`, `training_loss`) → `end_task` → class statistics of
`statistics_features` → classifier alignment of `alignment_parameters` → `predict` for evaluation.
Methods do math only: no files, no process groups, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..config import RunConfig
from ..data.splits import TaskSplit
from ..errors import UserError
from ..losses import mask_logits, masked_cross_entropy  # noqa: F401  (part of the method toolkit)
from ..stats import ClassStatistics


class StepOutput(NamedTuple):
    logits: torch.Tensor  # (B, C)
    features: torch.Tensor  # (B, D) the features statistics and regularisers use
    aux_loss: torch.Tensor  # the method's own extra loss terms for this batch (0 when none)


class Route(NamedTuple):
    """What a router decides per sample, in the form the task-conditioned forward (`classify`) takes."""

    condition: torch.Tensor | None  # (B,) task ids ("task"), (B, k) prompt ids ("prompt_set"), None ("none")
    confidence: torch.Tensor  # (B,) the router's confidence in its choice
    logits: torch.Tensor | None = None  # (B, C) the router's class logits, unseen classes at -inf (HiDe)


def task_probability(logits: torch.Tensor, tasks: torch.Tensor, class_to_task: torch.Tensor) -> torch.Tensor:
    """`(B,)` softmax probability mass of each sample's task: the sum over that task's classes."""
    in_task = class_to_task.unsqueeze(0) == tasks.unsqueeze(1)
    return (logits.float().softmax(dim=1) * in_task).sum(dim=1)


@dataclass(frozen=True)
class Prediction:
    logits: torch.Tensor  # (B, C)
    task_ids: torch.Tensor  # (B,) or (B, k): the task(s) each sample was routed to; a hit if any matches


class ContinualMethod(nn.Module):
    name: str = ""
    uses_statistics: bool = False  # class statistics after each task, classifier alignment from task 1 on
    needs_task_identity: bool = False  # routed by a stage-1 task-identity network (`--trained_original_model`)
    ca_lr_scaled_default: bool = False  # scale ca_lr by batch/256 unless the config says otherwise
    ca_samples_per_batch: int = 1  # pseudo-features per statistics component = batch size · this

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__()
        self.config = config
        self.split = split
        self.backbone = backbone
        own = torch.stack([split.task_mask(t) for t in range(split.num_tasks)])
        self.register_buffer("class_to_task", split.class_to_task(), persistent=False)
        self.register_buffer("own_classes", own, persistent=False)  # (T, C): classes of task t
        self.register_buffer("seen_classes", own.cumsum(dim=0).bool(), persistent=False)  # (T, C): tasks 0..t

    # -- the task loop ------------------------------------------------------------------------
    def begin_task(self, task: int, statistics: ClassStatistics, task_identity: dict | None = None) -> None:
        """Prepare slot `task` (copy/initialise parameters, cache what the loss needs); `task_identity` is
        the stage-1 network of this task for methods that need one."""

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def forward(self, x: torch.Tensor, task: int) -> StepOutput:
        """Training forward of task `task` (what the DeepSpeed engine calls)."""
        raise NotImplementedError

    def training_loss(self, out: StepOutput, y: torch.Tensor, task: int) -> torch.Tensor:
        """Cross-entropy over the task's classes (all classes without `train_mask`) plus `out.aux_loss`."""
        allowed = self.own_classes[task] if self.config.data.train_mask else None
        return masked_cross_entropy(out.logits.float(), y, allowed) + out.aux_loss.float()

    def end_task(self, task: int) -> None:
        """Finish slot `task` after its last training step."""

    # -- statistics and alignment -------------------------------------------------------------
    def statistics_features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        raise NotImplementedError

    def alignment_parameters(self) -> list[nn.Parameter]:
        return []

    def alignment_logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- inference ------------------------------------------------------------------------------
    # Two-step inference as exported graphs run it: `route` (the router graph), then `classify` (the
    # task-conditioned graph). `routing` names what passes between them: see `Route.condition`.
    routing: str = "task"
    answers_within_routed_task: bool = False  # `answer_logits` keeps only the routed task's classes

    def route(self, x: torch.Tensor, seen: torch.Tensor) -> Route:
        """Per-sample routing among the classes `seen (C,)` learned so far."""
        raise NotImplementedError

    def classify(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """`(B, C)` class logits given the router's condition (or a task hint)."""
        raise NotImplementedError

    def answer_logits(self, logits: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """`classify`'s logits restricted to the classes the method may answer given the condition (all here)."""
        return logits

    def predict(self, x: torch.Tensor, seen_task: int) -> Prediction:
        """Class-incremental prediction after training tasks `0..seen_task`."""
        raise NotImplementedError

    def observe_class(self, label: int, features: torch.Tensor) -> None:
        """One class's statistics features, all of them (gathered over ranks); methods that route with class
        statistics keep what they need."""

    def learned_state(self) -> dict[str, torch.Tensor]:
        """Everything the method learned (the frozen backbone excluded)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}


METHODS: dict[str, type[ContinualMethod]] = {}


def register(cls: type[ContinualMethod]) -> type[ContinualMethod]:
    METHODS[cls.name] = cls
    return cls


def build_method_class(key: str) -> type[ContinualMethod]:
    if key not in METHODS:
        raise UserError(f"unknown method '{key}'. Methods: {', '.join(sorted(METHODS))}.")
    return METHODS[key]


def build_method(key: str, config: RunConfig, backbone: nn.Module, split: TaskSplit) -> ContinualMethod:
    return build_method_class(key)(config, backbone, split)


def no_aux_loss(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(())
