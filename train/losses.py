"""Losses shared by methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONTRASTIVE_TEMPERATURE = 0.8


def mask_logits(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Set the logits of classes outside `allowed` (a `(C,)` bool mask) to -inf."""
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))


def within_tasks(logits: torch.Tensor, tasks: torch.Tensor, class_to_task: torch.Tensor) -> torch.Tensor:
    """Set the logits of classes outside each sample's task (`tasks`: `(B,)`) to -inf."""
    return logits.masked_fill(class_to_task.to(logits.device)[None, :] != tasks[:, None], float("-inf"))


def masked_cross_entropy(logits: torch.Tensor, y: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy where only the `allowed` classes compete (no mask when `allowed` is None)."""
    return F.cross_entropy(mask_logits(logits, allowed) if allowed is not None else logits, y)


def contrastive_regularization(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """HiDe's contrastive regularisation in the reference code's form (`orth_loss`).

    Rows are the old classes' centroids followed by the batch features; each row's only positive is
    itself, every other row (centroids and other samples alike) is a negative; unnormalised dot
    products over a temperature of 0.8. (The reference computes it in float64; float32 here.)
    """
    rows = torch.cat([centroids.to(features), features]) if centroids.numel() else features
    similarity = rows @ rows.T / CONTRASTIVE_TEMPERATURE
    return F.cross_entropy(similarity.float(), torch.arange(len(rows), device=rows.device))
