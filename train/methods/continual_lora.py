"""Continual-LoRA: one LoRA on the key/value projections shared by all tasks, trained sequentially."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from ..data.splits import TaskSplit
from ..peft.lora import lora_features
from .base import ContinualMethod, Prediction, StepOutput, no_aux_loss, register
from .heads import class_head
from .hidelora import build_lora_pool


@register
class ContinualLora(ContinualMethod):
    name = "continual_lora"

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        self.lora = build_lora_pool(config, backbone, pool_size=1)
        self.head = class_head(backbone.num_features, split.num_classes, config.backbone.mocov3_reference_norm)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora.slot(0)
        return lora_features(self.backbone, x, a, b, self.lora.scaling)

    def forward(self, x: torch.Tensor, task: int) -> StepOutput:
        features = self._features(x)
        logits = self.head(features)
        return StepOutput(logits, features, no_aux_loss(logits))

    routing = "none"  # one forward, no router

    def classify(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return self.head(self._features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seen_task: int) -> Prediction:
        """One forward; the 'routed task' is the task of the predicted class."""
        logits = self.classify(x, None)
        return Prediction(logits, self.class_to_task[logits.argmax(dim=1)])
