"""N-way K-shot episodes: classes, support and queries drawn from a seed, the same for every backbone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError


@dataclass(frozen=True)
class Episode:
    index: int
    classes: tuple[int, ...]  # native labels; position = the episode's label (0..ways-1)
    support: tuple[int, ...]  # training-set indices, `shots` per class, grouped by class
    query: tuple[int, ...]  # test-set indices, min(queries, available) per class, grouped by class
    support_labels: tuple[int, ...]  # episode labels
    query_labels: tuple[int, ...]


def episode_rng(seed: int, index: int) -> np.random.Generator:
    """Episode `index` depends on (seed, index) only: reruns, resumes and every backbone see the same episode."""
    return np.random.default_rng([seed, index])


def _draw(rng: np.random.Generator, targets: torch.Tensor, label: int, count: int, where: str) -> list[int]:
    pool = (targets == label).nonzero().flatten().numpy()
    if len(pool) < count:
        raise UserError(f"class {label} has {len(pool)} {where} images, fewer than the {count} an episode needs")
    return sorted(rng.choice(pool, size=count, replace=False).tolist())


def sample_episode(index: int, seed: int, pool: tuple[int, ...], ways: int, shots: int, queries: int,
                   train_targets: torch.Tensor, test_targets: torch.Tensor) -> Episode:
    """`ways` classes of `pool` (random order), `shots` training images each, up to `queries` test images each."""
    rng = episode_rng(seed, index)
    classes = tuple(int(c) for c in rng.choice(np.asarray(pool), size=ways, replace=False))
    support, query, support_labels, query_labels = [], [], [], []
    for label, native in enumerate(classes):
        drawn = _draw(rng, train_targets, native, shots, "training")
        support += drawn
        support_labels += [label] * len(drawn)
        available = int((test_targets == native).sum())
        drawn = _draw(rng, test_targets, native, min(queries, available), "test")
        query += drawn
        query_labels += [label] * len(drawn)
    return Episode(index, classes, tuple(support), tuple(query), tuple(support_labels), tuple(query_labels))


def episodes_of_rank(num_episodes: int, rank: int, world: int) -> list[int]:
    """This rank's episodes (round robin): results do not depend on the number of ranks."""
    return list(range(rank, num_episodes, world))
