"""S-Prompt++ (the HiDe paper's S-Prompt baseline): a prefix prompt per task at layers 0-4, the true
task's slot in training, chosen by key matching at test time."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from ..data.splits import TaskSplit
from ..peft.prefix import PrefixPromptPool, arrange_prefixes, prompted_features
from .base import register
from .key_query import KeyQueryMethod


@register
class SPrompt(KeyQueryMethod):
    name = "sprompt"

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        p = config.prompt
        self.e_prompts = PrefixPromptPool.for_vit(backbone, len(p.layers), config.adapter.slots, p.length)

    def e_prefixes(self, slots: torch.Tensor) -> torch.Tensor:
        """`(L, 2, B, H, length, hd)` of the first selected slot (top-k is 1 for prefix e-prompts)."""
        return arrange_prefixes(self.e_prompts.select(slots[:, 0]), self.config.prompt.kv_reshape_official)

    def prompted(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return prompted_features(self.backbone, x, self.e_prefixes(slots), self.config.prompt.layers)

    def copy_slot(self, source: int, target: int) -> None:
        self.e_prompts.copy_slot(source, target)
