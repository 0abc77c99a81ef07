"""Heads on frozen features: the task-identity network's residual MLP and classifier.

With `backbone.mocov3_reference_norm` (the reference's MoCo v3 build, `fc_norm=True`) every classifier
starts with a trainable `fc_norm` LayerNorm: `logits = head(fc_norm(mlp(pre_logits)))`, and the residual
MLP's final LayerNorm is omitted. Features (statistics, regulariser, queries) stay before `fc_norm`."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import mask_logits


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


class GaussianRouter(nn.Module):
    """Class-conditional Gaussians on frozen features, as a linear layer in closed form: no gradients, no past
    images, only each class's count, feature sum and the within-class scatter, added one class at a time.

    `lda`: one shared covariance, shrunk towards a multiple of the identity (scores −½(f−μ_c)ᵀΣ⁻¹(f−μ_c) up to a
    term every class shares: `W = μΣ⁻¹`, `b_c = −½ μ_cᵀΣ⁻¹μ_c`). `ncm`: the identity (nearest class mean).
    Unseen classes score 0 (routing masks them anyway). Features are centred on the mean of the class means before
    the product (`b` absorbs the shift): the scores' common offset, large on features far from the origin, then
    never passes through a float32 sum whose rounding would differ between PyTorch and onnxruntime."""

    def __init__(self, dim: int, num_classes: int, kind: str = "lda", shrinkage: float = 0.5):
        super().__init__()
        self.kind, self.shrinkage = kind, shrinkage
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("sums", torch.zeros(num_classes, dim, dtype=torch.float64))
        self.register_buffer("scatter", torch.zeros(dim, dim, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(num_classes, dim))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("center", torch.zeros(dim), persistent=False)
        self.stale = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.stale = True  # weight, bias and center derive from the loaded statistics: recomputed before routing

    @torch.no_grad()
    def add_class(self, label: int, features: torch.Tensor) -> None:
        f = features.detach().to(self.sums)
        centred = f - f.mean(dim=0)
        self.counts[label], self.sums[label] = len(f), f.sum(dim=0)
        self.scatter += centred.T @ centred
        self.stale = True  # refreshed once before the next routing, not once per class

    @torch.no_grad()
    def refresh(self, kind: str | None = None) -> None:
        """Recompute the linear layer from the statistics (for `kind`, when given: lda or ncm)."""
        self.kind = kind or self.kind
        seen = self.counts > 0
        means = self.sums[seen] / self.counts[seen, None]
        precision = self._precision(int(seen.sum())) if self.kind == "lda" else None
        projected = means if precision is None else means @ precision
        self.center.copy_(means.mean(dim=0) if len(means) else torch.zeros_like(self.center))
        self.weight.zero_()
        self.bias.zero_()
        self.weight[seen] = projected.to(self.weight)
        self.bias[seen] = (projected @ self.center.double() - 0.5 * (projected * means).sum(dim=1)).to(self.bias)
        self.stale = False

    def _precision(self, classes: int) -> torch.Tensor:
        dim = self.scatter.shape[0]
        covariance = self.scatter / max(1.0, float(self.counts.sum()) - classes)
        target = covariance.trace() / dim * torch.eye(dim, dtype=covariance.dtype, device=covariance.device)
        return torch.linalg.inv((1 - self.shrinkage) * covariance + self.shrinkage * target)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.stale:
            self.refresh()
        return (features - self.center) @ self.weight.T + self.bias


ROUTERS = ("mlp", "lda", "ncm", "ensemble")


class TaskIdentityHead(nn.Module):
    """Residual MLP + linear classifier over all classes, on uninstructed features;
    `head(fc_norm(mlp(x)))` with the MLP's final norm omitted when `fc_norm`.

    With a `router` other than the reference's `mlp`, it also keeps a `GaussianRouter` on the same features,
    and routes with it (`lda`, `ncm`) or with the mean of both routers' probabilities (`ensemble`)."""

    def __init__(self, dim: int, hidden_multiples: tuple[int, ...], num_classes: int, fc_norm: bool = False,
                 router: str = "mlp", shrinkage: float = 0.5):
        super().__init__()
        self.mlp = ResidualMlp(dim, hidden_multiples, final_norm=not fc_norm)
        self.head = class_head(dim, num_classes, fc_norm)
        self.router = router
        self.gaussian = None if router == "mlp" else GaussianRouter(
            dim, num_classes, "ncm" if router == "ncm" else "lda", shrinkage)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(features))

    def route_logits(self, features: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Routing scores over the seen classes (unseen: −inf); `ensemble` gives log mean probabilities."""
        if self.router == "mlp":
            return mask_logits(self(features), seen)
        gaussian = mask_logits(self.gaussian(features.to(self.gaussian.weight.dtype)), seen)
        if self.router != "ensemble":
            return gaussian
        mlp = mask_logits(self(features), seen)
        return torch.log((mlp.float().softmax(dim=1) + gaussian.float().softmax(dim=1)) / 2)
