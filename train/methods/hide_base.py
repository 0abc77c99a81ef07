"""What HiDe-Prompt and HiDe-LoRA share: task slots of a parameter-efficient module, contrastive
regularisation against old classes' centroids, instructed statistics with classifier alignment, and
two-step inference routed by the stage-1 task-identity network."""

from __future__ import annotations

import torch
from torch import nn

from ..backbones.vit import cls_features
from ..config import RunConfig
from ..data.splits import TaskSplit
from ..errors import UserError
from ..losses import contrastive_regularization, within_tasks
from ..stats import ClassStatistics
from .base import ContinualMethod, Prediction, Route, StepOutput, no_aux_loss, task_probability
from .heads import TaskIdentityHead, class_head
from .hide_tii import route_to_tasks


def majority_task(tasks: torch.Tensor) -> torch.Tensor:
    """Every sample gets the batch's most frequent task (`adapter.batchwise_selection`: the reference's
    `batchwise_prompt`)."""
    return torch.full_like(tasks, int(torch.bincount(tasks).argmax()))


class HideMethod(ContinualMethod):
    uses_statistics = True
    needs_task_identity = True
    ca_samples_per_batch = 5  # with the raw ca_lr (ca_lr_scaled_default False), as the reference's stage 2

    def __init__(self, config: RunConfig, backbone: nn.Module, split: TaskSplit):
        super().__init__(config, backbone, split)
        fc_norm = config.backbone.mocov3_reference_norm
        self.head = class_head(backbone.num_features, split.num_classes, fc_norm)
        self.tii = TaskIdentityHead(backbone.num_features, config.alignment.mlp_structure, split.num_classes, fc_norm,
                                    config.alignment.router, config.alignment.router_shrinkage)
        self.tii.requires_grad_(False)
        self.register_buffer("old_centroids", torch.empty(0), persistent=False)
        self.answers_within_routed_task = config.alignment.answer_scope == "routed_task"

    # -- what a concrete method provides -----------------------------------------------------------
    def slot_features(self, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Instructed features with each sample's slot."""
        raise NotImplementedError

    def training_features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.slot_features(x, self._slots(x, task))

    def copy_slot(self, source: int, target: int) -> None:
        raise NotImplementedError

    # -- the shared task loop --------------------------------------------------------------------------
    def begin_task(self, task: int, statistics: ClassStatistics, task_identity: dict | None = None) -> None:
        if task > 0:
            self.copy_slot(task - 1, task)
        old_classes = self.split.seen_classes(task - 1) if task > 0 else []
        self.old_centroids = statistics.centroids(old_classes).to(self.head.weight.device)
        if task_identity is not None:
            self.load_task_identity(task_identity)

    def load_task_identity(self, state: dict[str, torch.Tensor]) -> None:
        """A HiDe stage-1 network, or only a head (a Continual-LoRA run, with `mlp_structure=[]`)."""
        reference_norm = self.config.backbone.mocov3_reference_norm
        if ("head.fc_norm.weight" in state) != reference_norm:
            raise UserError(
                f"the stage-1 network was trained {'without' if reference_norm else 'with'} --mocov3_reference_norm "
                f"(its classifier {'lacks' if reference_norm else 'has'} the reference's fc_norm): run both stages "
                "with the same --mocov3_reference_norm."
            )
        router = self.config.alignment.router
        if router != "mlp" and "gaussian.counts" not in state:
            raise UserError(f"--router {router} routes with class statistics the stage-1 run keeps only when it ran "
                            f"with a router other than mlp: run stage 1 with --router {router} (or route with mlp).")
        if self.tii.gaussian is None:  # a stage-1 run that kept class statistics, routed here with its MLP
            state = {k: v for k, v in state.items() if not k.startswith("gaussian.")}
        missing, unexpected = self.tii.load_state_dict(state, strict=False)
        if self.tii.gaussian is not None:
            self.tii.gaussian.refresh()  # this run's router kind (lda or ncm) from the stage-1 statistics
        head_only = not any(k.startswith("mlp.") for k in state) and self.tii.mlp.net is None
        if unexpected or (missing and not head_only) or any(k.startswith("head.") for k in missing):
            raise UserError(
                f"the stage-1 network does not fit this run (alignment.mlp_structure="
                f"{list(self.config.alignment.mlp_structure)}): missing {missing[:3]}, unexpected {unexpected[:3]}. "
                "Use the stage-1 run's --original_model_mlp_structure."
            )

    def forward(self, x: torch.Tensor, task: int) -> StepOutput:
        features = self.training_features(x, task)
        logits = self.head(features)
        reg = self.config.hide.contrastive_reg
        aux = reg * contrastive_regularization(features.float(), self.old_centroids) if reg else no_aux_loss(logits)
        return StepOutput(logits, features, aux)

    @torch.no_grad()
    def statistics_features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.slot_features(x, self._slots(x, task))

    def alignment_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def alignment_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def route(self, x: torch.Tensor, seen: torch.Tensor) -> Route:
        """The stage-1 network's class over the seen classes, and that class's task."""
        logits, tasks = route_to_tasks(self.tii, cls_features(self.backbone, x), seen, self.class_to_task)
        return Route(tasks, task_probability(logits, tasks, self.class_to_task), logits)

    def classify(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return self.head(self.slot_features(x, condition))

    def answer_logits(self, logits: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """The routed (or hinted) task's classes only, with `--answer_scope routed_task`."""
        if condition is None or not self.answers_within_routed_task:
            return logits
        return within_tasks(logits, condition, self.class_to_task)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seen_task: int) -> Prediction:
        tasks = self.route(x, self.seen_classes[seen_task]).condition
        if self.config.adapter.batchwise_selection:
            tasks = majority_task(tasks)
        return Prediction(self.answer_logits(self.classify(x, tasks), tasks), tasks)

    def learned_state(self) -> dict[str, torch.Tensor]:
        """Adapters and head; the task-identity network belongs to the stage-1 run."""
        return {k: v for k, v in super().learned_state().items() if not k.startswith("tii.")}

    @staticmethod
    def _slots(x: torch.Tensor, task: int) -> torch.Tensor:
        return torch.full((x.shape[0],), task, dtype=torch.long, device=x.device)
