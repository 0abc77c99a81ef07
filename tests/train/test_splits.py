"""Class-incremental task splits and their logit masks."""

import pytest
import torch

from train.data.splits import TaskSplit, indices_of_classes, split_classes
from train.errors import UserError


def test_ten_classes_five_tasks_native_order():
    split = split_classes(10, 5)
    assert split.num_classes == 10
    assert split.num_tasks == 5
    assert split.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


def test_uneven_split_gives_ceil_classes_per_task_and_a_short_last_task():
    split = split_classes(10, 3)
    assert split.task_classes == ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9))


def test_every_class_lands_in_exactly_one_task():
    split = split_classes(100, 10, shuffle=True, seed=3)
    flat = [c for task in split.task_classes for c in task]
    assert sorted(flat) == list(range(100))
    assert all(len(task) == 10 for task in split.task_classes)


def test_seeded_shuffle_is_deterministic():
    assert split_classes(20, 4, shuffle=True, seed=7) == split_classes(20, 4, shuffle=True, seed=7)


def test_seeded_shuffle_is_a_permutation_different_from_native_order():
    shuffled = split_classes(20, 4, shuffle=True, seed=7)
    flat = [c for task in shuffled.task_classes for c in task]
    assert sorted(flat) == list(range(20))
    assert flat != list(range(20))
    assert shuffled != split_classes(20, 4)


def test_different_seeds_give_different_orders():
    assert split_classes(20, 4, shuffle=True, seed=1) != split_classes(20, 4, shuffle=True, seed=2)


def test_seed_is_ignored_without_shuffle():
    assert split_classes(10, 5, seed=1) == split_classes(10, 5, seed=2)


def test_class_to_task():
    split = split_classes(10, 3)
    assert split.class_to_task().tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_class_to_task_marks_classes_in_no_task():
    split = TaskSplit(5, ((3, 1), (0,)))
    assert split.class_to_task().tolist() == [1, 0, -1, 0, -1]


def test_task_mask_follows_shuffled_classes():
    split = TaskSplit(6, ((4, 0), (5, 2), (1, 3)))
    mask = split.task_mask(1)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [False, False, True, False, False, True]


def test_seen_mask_accumulates_tasks():
    split = TaskSplit(6, ((4, 0), (5, 2), (1, 3)))
    assert split.seen_mask(0).tolist() == [True, False, False, False, True, False]
    assert split.seen_mask(1).tolist() == [True, False, True, False, True, True]
    assert split.seen_mask(2).all()


def test_seen_classes_in_task_order():
    split = TaskSplit(6, ((4, 0), (5, 2), (1, 3)))
    assert split.seen_classes(0) == [4, 0]
    assert split.seen_classes(1) == [4, 0, 5, 2]


@pytest.mark.parametrize("task", [0, 1, 2])
def test_masks_agree_with_class_to_task(task):
    split = split_classes(10, 3, shuffle=True, seed=0)
    table = split.class_to_task()
    assert torch.equal(split.task_mask(task), table == task)
    assert torch.equal(split.seen_mask(task), (table >= 0) & (table <= task))
    assert sorted(split.seen_classes(task)) == torch.nonzero(table <= task).flatten().tolist()


def test_indices_of_classes_in_dataset_order():
    targets = torch.tensor([3, 0, 1, 3, 2, 0, 1, 3])
    assert indices_of_classes(targets, (0, 3)) == [0, 1, 3, 5, 7]
    assert indices_of_classes(targets, (1,)) == [2, 6]


def test_indices_of_absent_classes_is_empty():
    assert indices_of_classes(torch.tensor([0, 1, 2]), (7, 8)) == []


def test_a_split_that_would_leave_a_task_empty_is_refused():
    with pytest.raises(UserError, match="empty"):
        split_classes(10, 6)  # ceil(10/6) = 2 classes per task: task 6 would have none
