"""HiDe-LoRA: a LoRA slot per task on the key/value projections of blocks 0..depth-1, initialised from
the previous task's slot and averaged with the older slots after the task (LoRA momentum), then the
shared HiDe alignment and two-step inference."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from ..data.splits import TaskSplit
from ..peft.lora import LoraPool, lora_features
from .base import register
from .hide_base import HideMethod


def build_lora_pool(config: RunConfig, backbone: nn.Module, pool_size: int) -> LoraPool:
    lora = config.lora
    return LoraPool(pool_size, lora.depth, backbone.num_features, lora.rank, lora.alpha, lora.official_a_init)


@register
class HideLora(HideMethod):
    name = "hidelora"

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        self.lora = build_lora_pool(config, backbone, config.adapter.slots)

    def slot_features(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        a, b = self.lora.select(slots)
        return lora_features(self.backbone, x, a, b, self.lora.scaling)

    def training_features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        a, b = self.lora.slot(task)
        return lora_features(self.backbone, x, a, b, self.lora.scaling)

    def copy_slot(self, source: int, target: int) -> None:
        self.lora.copy_slot(source, target)

    def end_task(self, task: int) -> None:
        if task > 0 and self.config.lora.lora_momentum > 0:
            self.lora.apply_momentum(task, self.config.lora.lora_momentum)
