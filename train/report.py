"""People-facing output: console and JSON-lines log, results.json, the accuracy-matrix heat map."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


class RunLog:
    """Prints and appends JSON lines to `<output_dir>/log.jsonl`; silent on ranks other than 0."""

    def __init__(self, output_dir: str | Path, enabled: bool):
        self.enabled = enabled
        self.path = Path(output_dir) / "log.jsonl"
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def event(self, kind: str, message: str = "", **fields) -> None:
        if not self.enabled:
            return
        if message:
            print(message, flush=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"time": time.time(), "event": kind, **fields}) + "\n")


def format_matrix(A: np.ndarray, upto: int) -> str:
    rows = [" ".join(f"{A[i, t]:6.2f}" for t in range(upto + 1)) for i in range(upto + 1)]
    return "\n".join(f"  task {i + 1:>2}: {row}" for i, row in enumerate(rows))


def named_results(data, task_classes, tasks_trained: int, task_accuracy, class_accuracy: list[float]) -> dict:
    """results.json's names: every class's name, and per learned task its classes and final accuracy by name.

    `data` (ContinualData) names its classes and its listed tasks (`task_names` for `task_classes`: every task of
    ImageFolder; the folder tasks after a benchmark's own); other tasks are "task<k>". `task_classes`: the run's
    whole split; `task_accuracy`: accuracy on tasks 0..tasks_trained-1 after the last one.
    """
    class_names = data.names()
    listed = dict(zip(map(tuple, data.task_classes or ()), data.task_names))

    def number(value: float) -> float | None:
        return None if value is None or np.isnan(value) else round(float(value), 4)

    per_class = {class_names[c]: number(class_accuracy[c]) for c in range(min(len(class_names), len(class_accuracy)))
                 if not np.isnan(class_accuracy[c])}
    tasks = [{"task": t + 1, "name": listed.get(tuple(classes), f"task{t + 1}"),
              "classes": [class_names[c] for c in classes], "class_ids": list(classes),
              "accuracy": number(task_accuracy[t]) if t < len(task_accuracy) else None}
             for t, classes in enumerate(task_classes[:tasks_trained])]
    return {"class_names": list(class_names), "tasks": tasks, "per_class_accuracy": per_class,
            "per_task_accuracy": {task["name"]: task["accuracy"] for task in tasks}}


def write_results(output_dir: str | Path, results: dict) -> Path:
    path = Path(output_dir) / "results.json"
    path.write_text(json.dumps(results, indent=2))
    return path


def plot_accuracy_matrix(A: np.ndarray, path: str | Path, title: str) -> Path:
    """Heat map of `A[i, t]` (accuracy on task i after task t), empty below the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.where(np.triu(np.ones_like(A, dtype=bool)), A, np.nan)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(A), 0.8 + 0.6 * len(A)))
    image = ax.imshow(shown, vmin=0, vmax=100, cmap="viridis")
    for (i, t), value in np.ndenumerate(shown):
        if not np.isnan(value):
            ax.text(t, i, f"{value:.0f}", ha="center", va="center", color="w" if value < 60 else "k", fontsize=8)
    ax.set_xlabel("after training task")
    ax.set_ylabel("evaluated task")
    ax.set_xticks(range(len(A)), [str(t + 1) for t in range(len(A))])
    ax.set_yticks(range(len(A)), [str(t + 1) for t in range(len(A))])
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
