"""Heads on frozen features: the task-identity network's residual MLP and classifier."""

from __future__ import annotations

import torch
from torch import nn


def trunc_normal_linear(fan_in: int, fan_out: int) -> nn.Linear:
    """timm's init for fresh layers: trunc-normal(std 0.02) weights, zero bias."""
    layer = nn.Linear(fan_in, fan_out)
    nn.init.trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class ResidualMlp(nn.Module):
    """`LayerNorm(x + net(x))`; hidden widths are multiples of the feature width (`[2]`, `[4, 4]`)."""

    def __init__(self, dim: int, hidden_multiples: tuple[int, ...]):
        super().__init__()
        widths = [dim] + [dim * m for m in hidden_multiples]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
            layers.append(trunc_normal_linear(fan_in, fan_out))
            layers.append(nn.GELU() if index == 0 else nn.LayerNorm(fan_out))
        layers.append(trunc_normal_linear(widths[-1], dim))
        self.net = nn.Sequential(*layers) if hidden_multiples else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x)) if self.net is not None else x


class TaskIdentityHead(nn.Module):
    """Residual MLP + linear classifier over all classes, on uninstructed features."""

    def __init__(self, dim: int, hidden_multiples: tuple[int, ...], num_classes: int):
        super().__init__()
        self.mlp = ResidualMlp(dim, hidden_multiples)
        self.head = trunc_normal_linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(features))
