"""HiDe-Prompt stage 2: within-task prediction with task-specific prefix prompts, task-adaptive
prediction (classifier alignment on instructed statistics), and two-step inference routed by the
stage-1 task-identity network."""

from __future__ import annotations

import torch
from torch import nn

from ..backbones.vit import cls_features
from ..config import RunConfig
from ..data.splits import TaskSplit
from ..losses import contrastive_regularization, masked_cross_entropy
from ..peft.prefix import PrefixPromptPool, arrange_prefixes, prompted_features
from ..stats import ClassStatistics
from .base import ContinualMethod, Prediction, register
from .heads import TaskIdentityHead, trunc_normal_linear
from .hide_tii import route_to_tasks


def majority_task(tasks: torch.Tensor) -> torch.Tensor:
    """Every sample gets the batch's most frequent task (the reference's `batchwise_prompt`)."""
    return torch.full_like(tasks, int(torch.bincount(tasks).argmax()))


@register
class HidePrompt(ContinualMethod):
    name = "hideprompt"
    uses_statistics = True
    needs_task_identity = True
    ca_samples_per_batch = 5  # and the raw ca_lr (ca_lr_scaled_default False), as the reference

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        attn = backbone.blocks[0].attn
        p = config.prompt
        self.prompts = PrefixPromptPool(len(p.layers), p.size, p.length, attn.num_heads, attn.head_dim)
        self.head = trunc_normal_linear(backbone.num_features, split.num_classes)
        self.tii = TaskIdentityHead(backbone.num_features, config.alignment.mlp_structure, split.num_classes)
        self.tii.requires_grad_(False)
        self.register_buffer("old_centroids", torch.empty(0), persistent=False)

    def begin_task(self, task: int, statistics: ClassStatistics, task_identity=None) -> None:
        if task > 0:
            self.prompts.copy_slot(task - 1, task)
        old_classes = self.split.seen_classes(task - 1) if task > 0 else []
        self.old_centroids = statistics.centroids(old_classes).to(self.head.weight.device)
        if task_identity is not None:
            self.tii.load_state_dict(task_identity)

    def param_groups(self, lr: float) -> list[dict]:
        prompts = [self.prompts.prompt]
        rest = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("prompts.")]
        if not self.config.prompt.larger_prompt_lr:
            return [{"params": prompts + rest, "lr": lr}]
        return [{"params": prompts, "lr": lr}, {"params": rest, "lr": 0.1 * lr}]

    def _features(self, x: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        prefixes = arrange_prefixes(selected, self.config.prompt.kv_reshape_official)
        return prompted_features(self.backbone, x, prefixes, self.config.prompt.layers)

    def forward(self, x: torch.Tensor, task: int):
        prompt = self.prompts.ensemble(task, self.config.prompt.prompt_momentum)
        selected = prompt.unsqueeze(2).expand(-1, -1, x.shape[0], -1, -1, -1)
        features = self._features(x, selected)
        return self.head(features), features

    def training_loss(self, logits, features, y, task):
        allowed = self.own_classes[task] if self.config.data.train_mask else None
        loss = masked_cross_entropy(logits, y, allowed)
        if self.config.prompt.reg:
            loss = loss + self.config.prompt.reg * contrastive_regularization(features, self.old_centroids)
        return loss

    def end_task(self, task: int) -> None:
        if task > 0 and self.config.prompt.prompt_momentum > 0:
            self.prompts.apply_ensemble(task, self.config.prompt.prompt_momentum)

    @torch.no_grad()
    def statistics_features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        slots = torch.full((x.shape[0],), task, dtype=torch.long, device=x.device)
        return self._features(x, self.prompts.select(slots))

    def alignment_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def alignment_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seen_task: int) -> Prediction:
        _, tasks = route_to_tasks(self.tii, cls_features(self.backbone, x), self.seen_classes[seen_task],
                                  self.class_to_task)
        if self.config.prompt.batchwise_prompt:
            tasks = majority_task(tasks)
        return Prediction(self.head(self._features(x, self.prompts.select(tasks))), tasks)

    def learned_state(self) -> dict[str, torch.Tensor]:
        """Prompts and head; the task-identity network belongs to the stage-1 run."""
        return {k: v for k, v in super().learned_state().items() if not k.startswith("tii.")}
