"""Training library: continual methods on pretrained ViTs, run through DeepSpeed.

The API for other packages (export, benchmarks, tools), importable as `from train import NAME`:

- `load_trained(run_dir, task=None, backbone_checkpoint=None) -> TrainedRun`: a run's method after a task, in
  eval mode on the CPU, with its config, split, seen classes, class→task map, class names; no process group.
- `last_completed_task(run_dir)`, `held_out_images(run, limit)`: which task a run has reached; its test images.
- `UserError`: an expected mistake whose message names the fix; `ContinualMethod`, `mask_logits`,
  `task_probability`: what inference with a loaded method calls; `per_task_accuracy`: top-1 % per task of any
  predictions (numpy only).

Names are resolved on first use, so `import train` stays cheap (no torch until one is used).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_PUBLIC = {
    "load_trained": "train.trained",
    "TrainedRun": "train.trained",
    "last_completed_task": "train.trained",
    "held_out_images": "train.trained",
    "UserError": "train.errors",
    "ContinualMethod": "train.methods",
    "mask_logits": "train.losses",
    "per_task_accuracy": "train.metrics",
    "task_probability": "train.methods.base",
}
__all__ = ["ContinualMethod", "TrainedRun", "UserError", "held_out_images", "last_completed_task", "load_trained",
           "mask_logits", "per_task_accuracy", "task_probability"]

if TYPE_CHECKING:
    from .errors import UserError
    from .losses import mask_logits
    from .methods import ContinualMethod
    from .methods.base import task_probability
    from .metrics import per_task_accuracy
    from .trained import TrainedRun, held_out_images, last_completed_task, load_trained


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'train' has no attribute '{name}'")
    return getattr(import_module(_PUBLIC[name]), name)
