"""Class statistics of features (multi-centroid, covariance, variance) and pseudo-feature sampling.

Each class is summarised by Gaussian components: `multi-centroid` clusters its features with k-means
and keeps every cluster's mean and per-dimension variance; `variance` keeps one mean and the diagonal
of the covariance; `covariance` one mean and the full covariance.

As in the reference, every cluster mean (singletons included) is a centroid of the contrastive regulariser,
while pseudo-features are drawn only from clusters with spread (variance not all zero). A class whose
clusters are all singletons (fewer features than centroids) is drawn from all of them (ridge spread only),
where the reference would draw nothing for it.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

COVARIANCE_RIDGE = 1e-4
_RIDGE_STD = torch.tensor(np.sqrt(COVARIANCE_RIDGE)).float()  # the stored std of a zero-variance cluster


class ClassStatistics:
    def __init__(self, method: str, n_centroids: int = 10):
        self.method = method
        self.n_centroids = n_centroids
        self.means: dict[int, torch.Tensor] = {}  # class → (components, D)
        self.spreads: dict[int, torch.Tensor] = {}  # class → (components, D) std, or (D, D) Cholesky factor

    def add_class(self, label: int, features: torch.Tensor, seed: int) -> None:
        """Summarise one class's features (float64 math on CPU, stored in float32)."""
        f = features.detach().double().cpu()
        if self.method == "multi-centroid":
            self.means[label], self.spreads[label] = _clusters(f, self.n_centroids, seed)
            return
        mean = f.mean(dim=0, keepdim=True)
        cov = torch.cov(f.T) + COVARIANCE_RIDGE * torch.eye(f.shape[1], dtype=f.dtype)
        self.means[label] = mean.float()
        if self.method == "variance":
            self.spreads[label] = cov.diagonal().sqrt().unsqueeze(0).float()
        else:
            self.spreads[label] = torch.linalg.cholesky(cov).float().contiguous()

    def centroids(self, classes: list[int]) -> torch.Tensor:
        """All stored means of `classes`, stacked: `(K, D)` (empty when there are none)."""
        rows = [self.means[c] for c in classes if c in self.means]
        return torch.cat(rows) if rows else torch.empty(0)

    def sample(self, classes: list[int], per_component: int, count: int, generator: torch.Generator):
        """`count` pseudo-features drawn from a shuffled pool of `per_component` draws per component.

        Equivalent to drawing the whole pool, shuffling and keeping the first `count`, but draws only
        what is used. Returns features `(count, D)` and labels `(count,)`.
        """
        components = [(c, k) for c in classes for k in self._sampled_components(c)]
        pool = len(components) * per_component
        picked = torch.randperm(pool, generator=generator)[: min(count, pool)]
        owners = picked // per_component
        features = torch.empty(len(picked), self.means[classes[0]].shape[1])
        for owner in owners.unique().tolist():
            rows = (owners == owner).nonzero().flatten()
            label, k = components[owner]
            noise = torch.randn(len(rows), features.shape[1], generator=generator)
            features[rows] = self._draw(label, k, noise)
        labels = torch.tensor([components[o][0] for o in owners.tolist()], dtype=torch.long)
        return features, labels

    def _sampled_components(self, label: int) -> list[int]:
        """Components pseudo-features come from: multi-centroid skips zero-variance clusters (std = ridge only)."""
        count = self.means[label].shape[0]
        if self.method != "multi-centroid":
            return list(range(count))
        ridge_only = (self.spreads[label] == _RIDGE_STD).all(dim=1)
        return [k for k in range(count) if not ridge_only[k]] or list(range(count))

    def _draw(self, label: int, component: int, noise: torch.Tensor) -> torch.Tensor:
        mean = self.means[label][component]
        if self.method == "covariance":
            return mean + noise @ self.spreads[label].T
        return mean + noise * self.spreads[label][component]

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"mean.{c}": m for c, m in self.means.items()}
        state.update({f"spread.{c}": s for c, s in self.spreads.items()})
        return {k: v.contiguous() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            kind, label = key.split(".")
            (self.means if kind == "mean" else self.spreads)[int(label)] = value


def _clusters(features: torch.Tensor, n_centroids: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means means and per-cluster std (population variance + ridge) of every non-empty cluster."""
    k = min(n_centroids, features.shape[0])
    x = features.numpy()
    with threadpool_limits(1, user_api="openmp"):  # beside torch's OpenMP pool, more threads only contend
        assignment = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x.astype(np.float32))
    groups = [g for cluster in range(k) if len(g := x[assignment == cluster])]
    means = np.stack([g.mean(axis=0) for g in groups])
    stds = np.stack([np.sqrt(g.var(axis=0) + COVARIANCE_RIDGE) for g in groups])
    return torch.tensor(means).float(), torch.tensor(stds).float()
