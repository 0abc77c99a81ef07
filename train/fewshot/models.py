"""The upstream models of the few-shot study (math only): the vanilla model and the shared-LoRA model.

* vanilla: the frozen pretrained ViT and a linear head over the upstream classes. It also routes: its predicted
  class names the dataset, i.e. the shared LoRA slot.
* shared: one LoRA (k/v, blocks 0..depth-1) per upstream *dataset*, shared by all that dataset's tasks, and a
  head; LoRA at `shared_lora_lr_scale`·lr, head at lr. Evaluation routes each sample with the vanilla head of
  the same task (loaded as its task-identity network) to a dataset's slot.

Both mask their logits to the classes seen so far at test time (the reference masks the vanilla model's only).
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones.vit import cls_features
from ..config import RunConfig
from ..data.splits import TaskSplit
from ..errors import UserError
from ..losses import mask_logits
from ..methods.base import ContinualMethod, Prediction, Route, StepOutput, no_aux_loss
from ..methods.heads import trunc_normal_linear
from ..peft.lora import LoraPool, lora_features


class VanillaModel(ContinualMethod):
    name = "fsl_vanilla"
    routing = "none"

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        self.head = trunc_normal_linear(backbone.num_features, split.num_classes)

    def forward(self, x: torch.Tensor, task: int) -> StepOutput:
        with torch.no_grad():
            features = cls_features(self.backbone, x)
        logits = self.head(features)
        return StepOutput(logits, features, no_aux_loss(logits))

    def classify(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return self.head(cls_features(self.backbone, x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seen_task: int) -> Prediction:
        logits = mask_logits(self.classify(x, None).float(), self.seen_classes[seen_task])
        return Prediction(logits, self.class_to_task[logits.argmax(dim=1)])


class SharedLoraModel(ContinualMethod):
    name = "fsl_shared"
    needs_task_identity = True  # the vanilla run's head of the same task routes to a dataset's slot

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit, class_to_slot: torch.Tensor,
                 task_to_slot: tuple[int, ...], lora_lr_scale: float):
        super().__init__(config, backbone, split)
        lora, dim = config.lora, backbone.num_features
        self.lora = LoraPool(int(class_to_slot.max()) + 1, lora.depth, dim, lora.rank, lora.alpha, lora.official_a_init)
        self.head = trunc_normal_linear(dim, split.num_classes)
        self.router = trunc_normal_linear(dim, split.num_classes).requires_grad_(False)
        self.register_buffer("class_to_slot", class_to_slot.clone(), persistent=False)
        self.task_to_slot, self.lora_lr_scale = task_to_slot, lora_lr_scale

    def begin_task(self, task: int, statistics, task_identity: dict | None = None) -> None:
        if task_identity is not None:
            self.load_router(task_identity)

    def load_router(self, state: dict[str, torch.Tensor]) -> None:
        head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
        if set(head) != {"weight", "bias"} or head["weight"].shape != self.router.weight.shape:
            raise UserError("the vanilla run does not fit this shared run: it needs a vanilla head over the same "
                            f"{self.split.num_classes} upstream classes (same --datasets and class counts)")
        self.router.load_state_dict(head)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.lora.a, self.lora.b], "lr": lr * self.lora_lr_scale},
                {"params": list(self.head.parameters()), "lr": lr}]

    def slot_features(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        a, b = self.lora.select(slots)
        return lora_features(self.backbone, x, a, b, self.lora.scaling)

    def forward(self, x: torch.Tensor, task: int) -> StepOutput:
        a, b = self.lora.slot(self.task_to_slot[task])
        features = lora_features(self.backbone, x, a, b, self.lora.scaling)
        logits = self.head(features)
        return StepOutput(logits, features, no_aux_loss(logits))

    def route(self, x: torch.Tensor, seen: torch.Tensor) -> Route:
        """The vanilla head's class among the seen ones → its dataset's slot."""
        logits = mask_logits(self.router(cls_features(self.backbone, x)).float(), seen)
        probabilities, classes = logits.softmax(dim=1).max(dim=1)
        return Route(self.class_to_slot[classes], probabilities, logits)

    def classify(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return self.head(self.slot_features(x, condition))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seen_task: int) -> Prediction:
        seen = self.seen_classes[seen_task]
        logits = mask_logits(self.classify(x, self.route(x, seen).condition).float(), seen)
        return Prediction(logits, self.class_to_task[logits.argmax(dim=1)])

    def learned_state(self) -> dict[str, torch.Tensor]:
        """LoRA slots and head; the router belongs to the vanilla run."""
        return {k: v for k, v in super().learned_state().items() if not k.startswith("router.")}
