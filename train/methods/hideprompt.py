"""HiDe-Prompt stage 2: task-specific prefix prompts (initialised from the previous task, ensembled with
the older ones by prompt momentum), then the shared HiDe alignment and two-step inference."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from ..data.splits import TaskSplit
from ..peft.prefix import PrefixPromptPool, arrange_prefixes, prompted_features
from .base import register
from .hide_base import HideMethod


@register
class HidePrompt(HideMethod):
    name = "hideprompt"

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        p = config.prompt
        self.prompts = PrefixPromptPool.for_vit(backbone, len(p.layers), config.adapter.slots, p.length)

    def param_groups(self, lr: float) -> list[dict]:
        prompts = [self.prompts.prompt]
        rest = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("prompts.")]
        if not self.config.prompt.larger_prompt_lr:
            return [{"params": prompts + rest, "lr": lr}]
        return [{"params": prompts, "lr": lr}, {"params": rest, "lr": 0.1 * lr}]

    def _features(self, x: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        prefixes = arrange_prefixes(selected, self.config.prompt.kv_reshape_official)
        return prompted_features(self.backbone, x, prefixes, self.config.prompt.layers)

    def slot_features(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return self._features(x, self.prompts.select(slots))

    def training_features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Slot `task` ensembled with the older slots (prompt momentum) in the forward pass."""
        prompt = self.prompts.ensemble(task, self.config.prompt.prompt_momentum)
        return self._features(x, prompt.unsqueeze(2).expand(-1, -1, x.shape[0], -1, -1, -1))

    def copy_slot(self, source: int, target: int) -> None:
        self.prompts.copy_slot(source, target)

    def end_task(self, task: int) -> None:
        if task > 0 and self.config.prompt.prompt_momentum > 0:
            self.prompts.apply_ensemble(task, self.config.prompt.prompt_momentum)
