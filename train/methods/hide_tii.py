"""HiDe stage 1: task-identity inference (TII) network on uninstructed (frozen) features."""

from __future__ import annotations

import torch
from torch import nn

from ..backbones.vit import cls_features
from ..config import RunConfig
from ..data.splits import TaskSplit
from .base import ContinualMethod, Prediction, StepOutput, no_aux_loss, register
from .heads import TaskIdentityHead


def route_to_tasks(tii: TaskIdentityHead, features: torch.Tensor, seen: torch.Tensor, class_to_task: torch.Tensor):
    """Task-identity logits over the seen classes (from the configured router) and the task of their argmax."""
    logits = tii.route_logits(features, seen)
    return logits, class_to_task[logits.argmax(dim=1)]


@register
class HideTaskIdentity(ContinualMethod):
    name = "hide_tii"
    uses_statistics = True
    ca_lr_scaled_default = True  # the reference scales ca_lr by batch/256 in its TII trainer

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        self.tii = TaskIdentityHead(backbone.num_features, config.alignment.mlp_structure, split.num_classes,
                                    config.backbone.mocov3_reference_norm, config.alignment.router,
                                    config.alignment.router_shrinkage)

    @torch.no_grad()
    def _frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        return cls_features(self.backbone, x)

    def forward(self, x: torch.Tensor, task: int) -> StepOutput:
        features = self._frozen_features(x)
        logits = self.tii(features)
        return StepOutput(logits, features, no_aux_loss(logits))

    def statistics_features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self._frozen_features(x)

    def observe_class(self, label: int, features: torch.Tensor) -> None:
        if self.tii.gaussian is not None:
            self.tii.gaussian.add_class(label, features)

    def alignment_parameters(self) -> list[nn.Parameter]:
        return list(self.tii.parameters())

    def alignment_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.tii(features)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seen_task: int) -> Prediction:
        logits, tasks = route_to_tasks(self.tii, self._frozen_features(x), self.seen_classes[seen_task],
                                       self.class_to_task)
        return Prediction(logits, tasks)
