"""Continual-learning metrics on hand-written 3x3 accuracy matrices (entries below the diagonal are 0,
as the engine leaves them)."""

import numpy as np
import pytest

from train.metrics import (
    average_accuracies,
    backward_transfer,
    cumulative_average_accuracy,
    final_average_accuracy,
    final_forgetting,
    summarize,
)

# Every earlier task loses accuracy.
FORGETS = np.array([
    [90.0, 80.0, 70.0],
    [0.0, 85.0, 75.0],
    [0.0, 0.0, 95.0],
])
# Every earlier task gains accuracy later (positive backward transfer).
RISES = np.array([
    [60.0, 70.0, 80.0],
    [0.0, 50.0, 56.0],
    [0.0, 0.0, 90.0],
])
# Task 0 rises (textbook -10, reference 0), task 1 drops (4 in both).
MIXED = np.array([
    [60.0, 70.0, 80.0],
    [0.0, 50.0, 46.0],
    [0.0, 0.0, 90.0],
])


def test_final_average_accuracy_is_mean_of_last_column():
    assert final_average_accuracy(FORGETS) == pytest.approx((70 + 75 + 95) / 3)
    assert final_average_accuracy(RISES) == pytest.approx((80 + 56 + 90) / 3)


def test_average_accuracies_only_count_seen_tasks():
    np.testing.assert_allclose(average_accuracies(FORGETS), [90.0, 82.5, 80.0])
    np.testing.assert_allclose(average_accuracies(RISES), [60.0, 60.0, 226 / 3])


def test_cumulative_average_accuracy_is_mean_of_average_accuracies():
    assert cumulative_average_accuracy(FORGETS) == pytest.approx((90 + 82.5 + 80) / 3)
    assert cumulative_average_accuracy(RISES) == pytest.approx((60 + 60 + 226 / 3) / 3)


@pytest.mark.parametrize("convention", ["textbook", "reference"])
def test_forgetting_when_every_task_drops_is_the_same_in_both_conventions(convention):
    # task 0: 90 - 70, task 1: 85 - 75
    assert final_forgetting(FORGETS, convention) == pytest.approx(15.0)


def test_textbook_forgetting_is_negative_when_accuracy_rises():
    # task 0: max(60, 70) - 80 = -10, task 1: 50 - 56 = -6
    assert final_forgetting(RISES, "textbook") == pytest.approx(-8.0)


def test_reference_forgetting_is_clamped_at_zero_when_accuracy_rises():
    assert final_forgetting(RISES, "reference") == pytest.approx(0.0)


def test_reference_forgetting_clamps_each_task_not_the_mean():
    assert final_forgetting(MIXED, "textbook") == pytest.approx((-10 + 4) / 2)
    assert final_forgetting(MIXED, "reference") == pytest.approx((0 + 4) / 2)


def test_textbook_is_the_default_convention():
    assert final_forgetting(RISES) == pytest.approx(final_forgetting(RISES, "textbook"))


def test_backward_transfer():
    assert backward_transfer(FORGETS) == pytest.approx(((70 - 90) + (75 - 85)) / 2)
    assert backward_transfer(RISES) == pytest.approx(((80 - 60) + (56 - 50)) / 2)


def test_single_task_run():
    A = np.array([[77.0]])
    assert final_average_accuracy(A) == pytest.approx(77.0)
    assert cumulative_average_accuracy(A) == pytest.approx(77.0)
    assert final_forgetting(A, "textbook") == 0.0
    assert final_forgetting(A, "reference") == 0.0
    assert backward_transfer(A) == 0.0


def test_summarize_reports_every_headline_metric():
    identity = np.array([
        [100.0, 95.0, 90.0],
        [0.0, 98.0, 92.0],
        [0.0, 0.0, 97.0],
    ])
    summary = summarize(MIXED, identity, convention="reference")
    assert summary == pytest.approx({
        "final_average_accuracy": (80 + 46 + 90) / 3,
        "cumulative_average_accuracy": (60 + 60 + (80 + 46 + 90) / 3) / 3,
        "final_forgetting": 2.0,
        "backward_transfer": ((80 - 60) + (46 - 50)) / 2,
        "task_identity_accuracy": (90 + 92 + 97) / 3,
    })
    assert summarize(MIXED, identity)["final_forgetting"] == pytest.approx(-3.0)
    assert all(isinstance(v, float) for v in summary.values())


def test_results_tables_report_the_sample_std():
    """The README's tables and the few-shot study use one convention: sample std (ddof 1)."""
    from train.results_table import preset_table, table

    runs = [{"preset": "p", "config": {"seed": s}, "world_size": 2, "train_seconds": 1.0, "total_seconds": 2.0,
             "final_average_accuracy": faa, "cumulative_average_accuracy": 0.0, "task_identity_accuracy": 0.0,
             "final_forgetting": 0.0, "backward_transfer": 0.0} for s, faa in ((42, 90.0), (40, 92.0), (44, 94.0))]
    assert "92.00 ± 2.00" in table(runs) and "92.00 ± 2.00" in preset_table(runs)  # population std: 1.63
