"""Every method on a tiny random ViT, in process: the method table, the Split-Digits-sized class split, and how
to build, feed and train a method for a few steps (the method matrix and the switch, router, growth and
alignment tests share them)."""

from __future__ import annotations

import torch

from train.config import replace_path
from train.data.splits import split_classes
from train.methods import build_method
from train.presets import preset
from train.stats import ClassStatistics

# method key → preset whose config it runs with
METHODS = {
    "hide_tii": "digits_hideprompt_tii",
    "hideprompt": "digits_hideprompt",
    "hidelora": "digits_hidelora",
    "l2p": "digits_l2p",
    "dualprompt": "digits_dualprompt",
    "sprompt": "digits_sprompt",
    "continual_lora": "digits_continual_lora",
}
SPLIT = split_classes(10, 5)


def build(key: str, backbone, **changes):
    """The method `key` with its preset's config (and `changes`: fields of its `adapter` or `prompt` section, by
    name) on `backbone`, seeded."""
    config = preset(METHODS[key])
    for name, value in changes.items():
        config = replace_path(config, f"{'adapter' if hasattr(config.adapter, name) else 'prompt'}.{name}", value)
    torch.manual_seed(1)
    return build_method(key, config, backbone, SPLIT)


def task_batch(task: int, n: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed + task)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    y = torch.tensor(SPLIT.task_classes[task])[torch.arange(n) % 2]
    return x, y


def train(method, task: int, steps: int = 3) -> None:
    """A few Adam steps on one batch of `task`, between the method's begin_task and end_task."""
    fit(method, task, *task_batch(task), ClassStatistics("variance"), steps)


def fit(method, task: int, x: torch.Tensor, y: torch.Tensor, statistics: ClassStatistics, steps: int = 3) -> None:
    """begin_task → `steps` Adam steps on (x, y) → end_task; the method is left in eval mode."""
    method.begin_task(task, statistics)
    method.train()
    optimizer = torch.optim.Adam(method.param_groups(1e-2))
    for _ in range(steps):
        loss = method.training_loss(method(x, task), y, task)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    method.end_task(task)
    method.eval()
