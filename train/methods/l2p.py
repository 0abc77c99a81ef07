"""L2P: a shared pool of prompt-tuning prompts at the input, the top-k by key matching for every sample
(in training too), no task slots."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig
from ..data.splits import TaskSplit
from ..peft.prompt_tuning import prompt_tuned_features
from .base import register
from .key_query import KeyQueryMethod


@register
class L2P(KeyQueryMethod):
    name = "l2p"
    task_slots_in_training = False
    copy_previous_slot = False

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        p = config.prompt
        self.prompts = nn.Parameter(torch.empty(config.adapter.slots, p.length, backbone.num_features).uniform_(-1, 1))

    def prompted(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        tokens = self.prompts[slots].flatten(1, 2)  # (B, k·length, D)
        return prompt_tuned_features(self.backbone, x, tokens)
