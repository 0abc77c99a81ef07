"""Per-epoch learning-rate factors (timm 0.6 semantics of the reference's constant/step/cosine)."""

from __future__ import annotations

import math

from .config import OptimConfig


def lr_at_epoch(optim: OptimConfig, base_lr: float, epoch: int) -> float:
    """The learning rate for `epoch` (0-based) of a group whose configured rate is `base_lr`.

    With `scheduler_lag_official`, epoch e >= 1 trains at the rate of e-1, as the reference does by
    stepping the scheduler after each epoch.
    """
    if optim.scheduler_lag_official:
        epoch = max(0, epoch - 1)
    if optim.sched == "constant":
        return base_lr
    if epoch < optim.warmup_epochs:
        return optim.warmup_lr + (base_lr - optim.warmup_lr) * epoch / optim.warmup_epochs
    if optim.sched == "step":
        return base_lr * optim.decay_rate ** math.floor(epoch / optim.decay_epochs)
    # timm's CosineLRScheduler as the reference builds it (warmup_prefix=False): the cosine counts from epoch 0,
    # not from the end of warmup, so the first epoch after warmup already trains below base_lr.
    if epoch >= optim.epochs:  # past the single cycle (cycle_limit=1)
        return optim.min_lr
    return optim.min_lr + 0.5 * (base_lr - optim.min_lr) * (1 + math.cos(math.pi * epoch / optim.epochs))
