"""DualPrompt: a shared G-prompt (prefix, layers 0-1, trained in every task) and per-task E-prompts
(prefix, layers 2-4) chosen by key matching at test time."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from ..data.splits import TaskSplit
from ..peft.prefix import PrefixPromptPool, arrange_prefixes, prompted_features
from .base import register
from .sprompt import SPrompt


@register
class DualPrompt(SPrompt):
    name = "dualprompt"

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        p = config.prompt
        self.g_prompt = PrefixPromptPool.for_vit(backbone, len(p.g_prompt_layers), 1, p.g_prompt_length)

    def prompted(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        shared = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        g = arrange_prefixes(self.g_prompt.select(shared))  # one prompt for every sample: no reshape quirk
        p = self.config.prompt
        return prompted_features(self.backbone, x, [*g, *self.e_prefixes(slots)], p.g_prompt_layers + p.layers)
