"""Per-task checkpoints: atomic folders, stage-1 checks, backbone identity and RNG state."""

import json
import random

import numpy as np
import pytest
import torch

from train.checkpoint import (
    check_stage1_run,
    latest_task,
    load_task,
    load_task_identity,
    restore_rng,
    rng_state,
    save_task,
    task_dir,
)
from train.errors import UserError

BACKBONE = {"name": "vit_glyph_patch8_32", "hash": "abc123"}


def _learned(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "tii.mlp.weight": torch.randn(4, 3, generator=g),
        "tii.mlp.bias": torch.randn(4, generator=g),
        "prompt.prompt": torch.randn(2, 3, generator=g).T,  # non-contiguous
        "head.weight": torch.randn(5, 4, generator=g, requires_grad=True),
    }


def _save(output_dir, task: int, seed: int = 0, backbone: dict = BACKBONE):
    statistics = {"mean.0": torch.full((2, 4), float(task)), "spread.0": torch.ones(2, 4)}
    state = {"task": task, "backbone": backbone, "metrics": {"accuracy": [[90.0]]}}
    return save_task(output_dir, task, _learned(seed), statistics, state)


def test_save_and_load_round_trip(tmp_path):
    folder = _save(tmp_path, 1, seed=7)
    assert folder == task_dir(tmp_path, 1) == tmp_path / "checkpoints" / "task2"
    learned, statistics, state = load_task(tmp_path, 1)
    expected = _learned(7)
    assert set(learned) == set(expected)
    for key, value in expected.items():
        assert torch.equal(learned[key], value.detach())
    assert torch.equal(statistics["mean.0"], torch.full((2, 4), 1.0))
    assert state["task"] == 1
    assert state["backbone"] == BACKBONE
    assert state["metrics"] == {"accuracy": [[90.0]]}
    assert "rng" in state


def test_saving_a_task_again_replaces_it_and_leaves_no_partial_folder(tmp_path):
    _save(tmp_path, 0, seed=1)
    _save(tmp_path, 0, seed=2)
    learned, _, _ = load_task(tmp_path, 0)
    assert torch.equal(learned["tii.mlp.bias"], _learned(2)["tii.mlp.bias"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["task1"]


def test_save_replaces_a_stale_partial_folder(tmp_path):
    stale = tmp_path / "checkpoints" / "task1.partial"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("left by a killed run")
    _save(tmp_path, 0)
    assert not stale.exists()
    assert not (task_dir(tmp_path, 0) / "junk").exists()


def test_latest_task_without_checkpoints_is_none(tmp_path):
    assert latest_task(tmp_path) is None


def test_latest_task_is_the_highest_complete_task(tmp_path):
    for task in (0, 1, 3):
        _save(tmp_path, task)
    assert latest_task(tmp_path) == 3


def test_latest_task_ignores_partial_and_incomplete_folders(tmp_path):
    _save(tmp_path, 0)
    _save(tmp_path, 1)
    partial = tmp_path / "checkpoints" / "task3.partial"
    partial.mkdir()
    (partial / "state.json").write_text("{}")
    (tmp_path / "checkpoints" / "task4").mkdir()  # no state.json: not complete
    assert latest_task(tmp_path) == 1


def test_latest_task_orders_numerically(tmp_path):
    _save(tmp_path, 1)  # task2
    _save(tmp_path, 9)  # task10
    assert latest_task(tmp_path) == 9


def test_check_stage1_run_accepts_a_complete_run(tmp_path):
    for task in range(3):
        _save(tmp_path, task)
    check_stage1_run(tmp_path, 3)


def test_check_stage1_run_names_the_missing_tasks(tmp_path):
    _save(tmp_path, 0)
    _save(tmp_path, 2)
    with pytest.raises(UserError) as error:
        check_stage1_run(tmp_path, 4)
    message = str(error.value)
    assert "[2, 4]" in message
    assert str(tmp_path) in message
    assert "--train_inference_task_only" in message


def test_check_stage1_run_on_an_empty_folder_names_every_task(tmp_path):
    with pytest.raises(UserError, match=r"\[1, 2\]"):
        check_stage1_run(tmp_path / "missing", 2)


def test_load_task_identity_keeps_only_tii_tensors_without_prefix(tmp_path):
    _save(tmp_path, 0, seed=3)
    network = load_task_identity(tmp_path, 0, BACKBONE)
    expected = _learned(3)
    assert set(network) == {"mlp.weight", "mlp.bias"}
    assert torch.equal(network["mlp.weight"], expected["tii.mlp.weight"])
    assert torch.equal(network["mlp.bias"], expected["tii.mlp.bias"])


def test_load_task_identity_rejects_another_backbone(tmp_path):
    _save(tmp_path, 0)
    other = {"name": "vit_glyph_patch8_32", "hash": "def456"}
    with pytest.raises(UserError) as error:
        load_task_identity(tmp_path, 0, other)
    assert "abc123" in str(error.value) and "def456" in str(error.value)


def _draws() -> tuple:
    return (torch.rand(3), torch.randn(2), np.random.rand(3), np.random.standard_normal(), random.random(),
            random.gauss(0, 1))


def _assert_same_draws(a: tuple, b: tuple) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    np.testing.assert_array_equal(a[2], b[2])
    assert a[3:] == b[3:]


def test_rng_state_round_trip_reproduces_the_next_numbers():
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    # leave a cached Gaussian in numpy and Python so that state is exercised too
    np.random.standard_normal()
    random.gauss(0, 1)
    state = json.loads(json.dumps(rng_state()))  # stored as JSON in state.json
    first = _draws()
    restore_rng(state)
    _assert_same_draws(first, _draws())


def test_saved_checkpoint_restores_the_rng_of_save_time(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    _save(tmp_path, 0)
    after_save = _draws()
    _draws()
    restore_rng(load_task(tmp_path, 0)[2]["rng"])
    _assert_same_draws(after_save, _draws())
