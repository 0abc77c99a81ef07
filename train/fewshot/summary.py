"""Episode accuracies → mean, spread and a real 95% confidence interval of the mean."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CI_METHOD = "Student t: mean ± t(0.975, n-1)·s/√n, s the sample std (ddof 1)"
REFERENCE_NOTE = "the reference's '95 confidence interval': 1.96·std (ddof 0) of the episode accuracies, a spread of " \
                 "single episodes, not an interval for the mean"


def summarize(accuracies: list[float]) -> dict:
    """Accuracies in %; `ci95` is for the mean over episodes (none for a single episode)."""
    values = np.asarray(accuracies, dtype=np.float64)
    n, mean = len(values), float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "episodes": n,
        "accuracy_mean": mean,
        "accuracy_std": std,
        "ci95_half_width": half,
        "ci95": [mean - half, mean + half],
        "ci95_method": CI_METHOD,
        "reference_1_96_std": float(1.96 * values.std(ddof=0)),
        "reference_1_96_std_note": REFERENCE_NOTE,
    }


def paired_difference(first: list[float], second: list[float]) -> dict:
    """`second - first` on the same episodes (same classes, support and queries): mean, std, t-based 95% CI."""
    difference = (np.asarray(second) - np.asarray(first)).tolist()
    summary = summarize(difference)
    return {k.replace("accuracy_", "difference_"): v for k, v in summary.items() if not k.startswith("reference_")}
