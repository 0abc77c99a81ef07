"""What L2P, DualPrompt and S-Prompt++ share: a pool of prompts with learnable keys, selected per sample
by cosine similarity to the frozen model's cls feature (the query), a pull-constraint loss that draws
the selected keys to their queries, and (DualPrompt, S-Prompt++) the true task's slot in training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.vit import cls_features
from ..config import RunConfig
from ..data.splits import TaskSplit
from .base import ContinualMethod, Prediction, Route, StepOutput
from .heads import class_head


def top_slots(similarity: torch.Tensor, k: int, batchwise: bool) -> torch.Tensor:
    """`(B, k)` most similar slots per sample, or the batch's k most often chosen slots for every sample."""
    chosen = similarity.topk(k, dim=1).indices
    if not batchwise:
        return chosen
    counts = torch.bincount(chosen.flatten(), minlength=similarity.shape[1])
    return counts.topk(k).indices.unsqueeze(0).expand(similarity.shape[0], -1)


class KeyQueryMethod(ContinualMethod):
    task_slots_in_training = True  # the prompt mask: train slot(s) [t·k, (t+1)·k)
    copy_previous_slot = True  # the shared prompt pool: slot t starts from slot t-1

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        self.keys = nn.Parameter(torch.empty(config.adapter.slots, backbone.num_features).uniform_(-1, 1))
        self.head = class_head(backbone.num_features, split.num_classes, config.backbone.mocov3_reference_norm)

    # -- what a concrete method provides -----------------------------------------------------------
    def prompted(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Features with the prompts of `slots (B, k)`."""
        raise NotImplementedError

    def copy_slot(self, source: int, target: int) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------------
    def begin_task(self, task, statistics, task_identity=None) -> None:
        k = self.config.prompt.top_k
        if task > 0 and self.copy_previous_slot and (task + 1) * k <= self.config.adapter.slots:
            for j in range(k):
                self.copy_slot((task - 1) * k + j, task * k + j)

    def _similarity(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            query = F.normalize(cls_features(self.backbone, x).float(), dim=1)
        return query @ F.normalize(self.keys.float(), dim=1).T

    def _slots(self, similarity: torch.Tensor, task: int | None) -> torch.Tensor:
        k, size = self.config.prompt.top_k, self.config.adapter.slots
        if task is not None and self.task_slots_in_training and (task + 1) * k <= size:
            slots = torch.arange(task * k, (task + 1) * k, device=similarity.device)
            return slots.unsqueeze(0).expand(similarity.shape[0], -1)
        return top_slots(similarity, k, self.config.adapter.batchwise_selection)

    def forward(self, x: torch.Tensor, task: int) -> StepOutput:
        similarity = self._similarity(x)
        slots = self._slots(similarity, task)
        features = self.prompted(x, slots)
        pull = similarity.gather(1, slots).sum() / x.shape[0]
        return StepOutput(self.head(features), features, -self.config.prompt.pull_constraint_coeff * pull)

    @property
    def routing(self) -> str:
        return "task" if self.task_slots_in_training else "prompt_set"

    def route(self, x: torch.Tensor, seen: torch.Tensor) -> Route:
        """Per-sample key matching: the top slot's task (task slots, top_k 1) or L2P's top-k prompt set."""
        top = self._similarity(x).topk(self.config.prompt.top_k, dim=1)
        if not self.task_slots_in_training:
            return Route(top.indices, top.values.mean(dim=1))
        return Route(top.indices[:, 0] // self.config.prompt.top_k, top.values[:, 0])

    def classify(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """Logits with the prompts of task `condition` (its k slots) or of prompt set `condition (B, k)`."""
        if not self.task_slots_in_training:
            return self.head(self.prompted(x, condition))
        k = self.config.prompt.top_k
        slots = condition.unsqueeze(1) * k + torch.arange(k, device=condition.device)
        return self.head(self.prompted(x, slots))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seen_task: int) -> Prediction:
        slots = self._slots(self._similarity(x), task=None)
        k = self.config.prompt.top_k
        return Prediction(self.head(self.prompted(x, slots)), slots // k if self.task_slots_in_training else slots)
