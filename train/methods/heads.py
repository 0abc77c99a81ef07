"""Heads on frozen features: the task-identity network's residual MLP and classifier.

With `backbone.mocov3_reference_norm` (the reference's MoCo v3 build, `fc_norm=True`) every classifier
starts with a trainable `fc_norm` LayerNorm: `logits = head(fc_norm(mlp(pre_logits)))`, and the residual
MLP's final LayerNorm is omitted. Features (statistics, regulariser, queries) stay before `fc_norm`."""

from __future__ import annotations

import torch
from torch import nn


def trunc_normal_linear(fan_in: int, fan_out: int) -> nn.Linear:
    """timm's init for fresh layers: trunc-normal(std 0.02) weights, zero bias."""
    layer = nn.Linear(fan_in, fan_out)
    nn.init.trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class NormedLinear(nn.Linear):
    """The reference's MoCo v3 classifier: `fc_norm` (LayerNorm at (1, 0)), then the linear layer.

    A subclass of `nn.Linear`, so `weight`/`bias` keep their names; `fc_norm.*` is the only extra state."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__(fan_in, fan_out)
        self.fc_norm = nn.LayerNorm(fan_in, eps=1e-6)  # timm's ViT norm layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.fc_norm(x))


def class_head(fan_in: int, fan_out: int, fc_norm: bool = False) -> nn.Linear:
    """A fresh classifier: `trunc_normal_linear`, behind a trainable `fc_norm` when `fc_norm`
    (`backbone.mocov3_reference_norm`)."""
    if not fc_norm:
        return trunc_normal_linear(fan_in, fan_out)
    layer = NormedLinear(fan_in, fan_out)
    nn.init.trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class ResidualMlp(nn.Module):
    """`LayerNorm(x + net(x))`; hidden widths are multiples of the feature width (`[2]`, `[4, 4]`).
    Without `final_norm` (a classifier with `fc_norm` follows), `x + net(x)`."""

    def __init__(self, dim: int, hidden_multiples: tuple[int, ...], final_norm: bool = True):
        super().__init__()
        widths = [dim] + [dim * m for m in hidden_multiples]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
            layers.append(trunc_normal_linear(fan_in, fan_out))
            layers.append(nn.GELU() if index == 0 else nn.LayerNorm(fan_out))
        layers.append(trunc_normal_linear(widths[-1], dim))
        self.net = nn.Sequential(*layers) if hidden_multiples else None
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x)) if self.net is not None else x


class TaskIdentityHead(nn.Module):
    """Residual MLP + linear classifier over all classes, on uninstructed features;
    `head(fc_norm(mlp(x)))` with the MLP's final norm omitted when `fc_norm`."""

    def __init__(self, dim: int, hidden_multiples: tuple[int, ...], num_classes: int, fc_norm: bool = False):
        super().__init__()
        self.mlp = ResidualMlp(dim, hidden_multiples, final_norm=not fc_norm)
        self.head = class_head(dim, num_classes, fc_norm)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(features))
