"""One episode's classifier on frozen (LoRA-merged) features, as the reference trains it (math only).

A fresh `Linear(D, ways)` (PyTorch's default init, as timm's `reset_classifier`), Adam at `fs_lr` on the whole
support set per step, one step per epoch for `num_fs_epochs` epochs; the backbone stays frozen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def fresh_head(dim: int, ways: int, seed: int) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(dim, ways)


def fit_head(support_features: Callable[[int], torch.Tensor], labels: torch.Tensor, ways: int, epochs: int,
             lr: float, seed: int) -> nn.Linear:
    """`support_features(epoch)` gives the support features of that epoch (new augmentations, or the same)."""
    head = None
    optimizer = None
    for epoch in range(epochs):
        features = support_features(epoch).float()
        if head is None:
            head = fresh_head(features.shape[1], ways, seed).to(features.device)
            optimizer = torch.optim.Adam(head.parameters(), lr=lr)
        loss = F.cross_entropy(head(features), labels.to(features.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head


@torch.no_grad()
def accuracy(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in %."""
    predicted = head(features.float()).argmax(dim=1).cpu()
    return float((predicted == labels).float().mean() * 100)


@torch.no_grad()
def majority_slot(router_logits: torch.Tensor, class_to_slot: torch.Tensor) -> int:
    """The slot (upstream dataset) most of the support images are predicted in (ties: the lower slot)."""
    slots = class_to_slot[router_logits.argmax(dim=1).cpu()]
    return int(torch.bincount(slots, minlength=int(class_to_slot.max()) + 1).argmax())
