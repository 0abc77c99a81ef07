"""train.load_trained, the one way from a trained run to inference: the method as it was saved, in eval mode,
with no process group; and one message naming the fix for each way a run folder can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from train import TrainedRun, UserError, held_out_images, last_completed_task, load_trained
from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
from train.backbones.vit import create_vit
from train.checkpoint import save_task
from train.config import RunConfig, replace_path
from train.data.splits import split_classes
from train.methods import build_method
from train.presets import preset
from train.trained import check_method, task_checkpoint
from train.weights import load_backbone

SPLIT = split_classes(10, 5)


def random_weights(path, seed: int):
    torch.manual_seed(seed)
    save_file(create_vit(backbone_spec(EMBEDDED_BACKBONE)).state_dict(), str(path))
    return path


def write_run(run, weights, tasks: int = 2, **overrides: str):
    """A run of `digits_dualprompt` on `weights` with `tasks` completed tasks (learned tensors randomised, so a
    load that kept the fresh model's values would show); the method as saved after the last task."""
    config = replace_path(preset("digits_dualprompt"), "backbone.checkpoint", str(weights))
    for key, value in overrides.items():
        config = replace_path(config, key, value)
    backbone = load_backbone(config.backbone, None)
    torch.manual_seed(3)
    method = build_method("dualprompt", config, backbone.vit, SPLIT)
    with torch.no_grad():
        for name, parameter in method.named_parameters():
            if not name.startswith("backbone."):
                parameter.add_(torch.randn_like(parameter))
    state = {"config": config.to_dict(), "backbone": backbone.identity(), "class_names": [f"c{c}" for c in range(10)],
             "task_names": [], "task_classes": [list(c) for c in SPLIT.task_classes]}
    for task in range(tasks):
        save_task(run, task, method.learned_state(), {}, state)
    return method.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_weights(tmp_path_factory.mktemp("weights") / "random.safetensors", seed=0)


def test_the_saved_method_comes_back_in_eval_mode_without_a_process_group(tmp_path, weights):
    saved = write_run(tmp_path / "run", weights)
    run = load_trained(tmp_path / "run")
    assert isinstance(run, TrainedRun) and run.task == 1 == last_completed_task(tmp_path / "run")
    assert not run.method.training and not torch.distributed.is_initialized()
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(run.method.predict(x, 1).logits, saved.predict(x, 1).logits, rtol=0, atol=0)
    assert run.seen_classes == [0, 1, 2, 3] and run.seen.tolist() == [True] * 4 + [False] * 6
    assert run.class_to_task.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert run.class_names[:2] == ["c0", "c1"] and run.config.method == "dualprompt"
    assert len(run.checkpoint_sha256) == 64


def test_an_earlier_task_is_loaded_as_it_was(tmp_path, weights):
    write_run(tmp_path / "run", weights)
    run = load_trained(tmp_path / "run", task=0)
    assert run.task == 0 and run.seen_classes == [0, 1]


def test_held_out_images_are_test_images_of_the_learned_classes(tmp_path, weights):
    write_run(tmp_path / "run", weights)
    images, labels = held_out_images(load_trained(tmp_path / "run", task=0), limit=25)
    assert images.shape == (25, 3, 32, 32) and set(labels.tolist()) <= {0, 1}


@pytest.mark.parametrize("problem, message", [
    ("missing", "does not exist: pass the --output_dir of a training run"),
    ("empty", "holds no completed task"),
    ("task", "has no completed task 5"),
])
def test_a_wrong_folder_or_task_is_named_with_the_fix(tmp_path, weights, problem, message):
    run = tmp_path / "run"
    if problem == "empty":
        (run / "checkpoints").mkdir(parents=True)
    if problem == "task":
        write_run(run, weights)
    with pytest.raises(UserError, match=message):
        load_trained(run, task=4 if problem == "task" else None)


def test_other_backbone_weights_are_refused_naming_the_flag(tmp_path, weights):
    write_run(tmp_path / "run", weights)
    other = random_weights(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(UserError, match="not the ones .* was trained on") as error:
        load_trained(tmp_path / "run", backbone_checkpoint=str(other))
    assert "--backbone-checkpoint" in str(error.value)


def test_a_stage1_run_is_not_loaded_for_inference(tmp_path, weights):
    write_run(tmp_path / "run", weights, tasks=1, stage="tii")
    with pytest.raises(UserError, match="stage-1"):
        load_trained(tmp_path / "run")


def test_resuming_into_another_method_is_refused(tmp_path, weights):
    write_run(tmp_path / "run", weights, tasks=1)
    saved = task_checkpoint(tmp_path / "run")
    assert isinstance(saved.config, RunConfig) and saved.split == SPLIT
    check_method(saved, "wtp", "dualprompt")
    with pytest.raises(UserError, match="method 'dualprompt'.*not of 'l2p'.*preset it was trained with"):
        check_method(saved, "wtp", "l2p")


def test_import_train_stays_cheap():
    import subprocess
    import sys

    script = ("import sys, train; from train import UserError, per_task_accuracy; "
              "print(sorted(m for m in ('torch', 'deepspeed') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
