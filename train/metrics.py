"""Continual-learning metrics as pure functions of the accuracy matrix.

`A[i, t]` is the accuracy (%) on task i's test set after training task t (defined for i <= t).
"""

from __future__ import annotations

import numpy as np


def per_task_accuracy(predictions: np.ndarray, labels: np.ndarray, class_to_task: np.ndarray) -> list[float]:
    """Top-1 accuracy (%) of `predictions` on the images of each task 0..(last task among `labels`)."""
    tasks = class_to_task[labels]
    return [float((predictions[tasks == t] == labels[tasks == t]).mean() * 100) for t in range(tasks.max() + 1)]


def final_average_accuracy(A: np.ndarray) -> float:
    """FAA: mean accuracy over all tasks after the last task."""
    return float(np.mean(A[:, -1]))


def average_accuracies(A: np.ndarray) -> np.ndarray:
    """Mean accuracy over tasks 0..t after each task t (the reference's 'Average accuracy till task')."""
    return np.array([np.mean(A[: t + 1, t]) for t in range(A.shape[1])])


def cumulative_average_accuracy(A: np.ndarray) -> float:
    """CAA: mean over t of the average accuracy after task t."""
    return float(np.mean(average_accuracies(A)))


def final_forgetting(A: np.ndarray, convention: str = "textbook") -> float:
    """FFM after the last task T-1, averaged over tasks i < T-1.

    textbook: `max_{l < T-1} A[i, l] - A[i, T-1]` (may be negative: backward transfer).
    reference: the reference code's max over every column including the last, i.e. `max(textbook, 0)`.
    """
    last = A.shape[1] - 1
    if last == 0:
        return 0.0
    best = A[:last, :last].max(axis=1) if convention == "textbook" else A[:last, :].max(axis=1)
    return float(np.mean(best - A[:last, last]))


def backward_transfer(A: np.ndarray) -> float:
    """BWT: mean over i < T-1 of `A[i, T-1] - A[i, i]`."""
    last = A.shape[1] - 1
    if last == 0:
        return 0.0
    return float(np.mean(A[:last, last] - np.diag(A)[:last]))


def summarize(A: np.ndarray, task_identity: np.ndarray, convention: str = "textbook") -> dict[str, float]:
    """Every headline metric of a finished run; `task_identity` is the Acc@task matrix like `A`."""
    return {
        "final_average_accuracy": final_average_accuracy(A),
        "cumulative_average_accuracy": cumulative_average_accuracy(A),
        "final_forgetting": final_forgetting(A, convention),
        "backward_transfer": backward_transfer(A),
        "task_identity_accuracy": final_average_accuracy(task_identity),
    }
