"""`train/fsl.py` as users call it: the reference README's three commands (dry run), and the three stages on
the embedded preset chaining through their output folders under the deepspeed launcher, then resuming."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import REPO, child_env, free_port

# The reference README's few-shot commands (launcher → deepspeed; flags as written there).
COMMON = ("imr_few_shot_lora --model vit_base_patch16_224 --original_model vit_base_patch16_224 --batch-size 24 "
          "--data-path ./datasets --output_dir ./output/ --seed 42 --epochs 50 --lr 0.01 --lora_type hide "
          "--num_tasks 8").split()
DIRS = ("--vanilla_model_output_dir ./output/imr_vit_vanilla_model --shared_model_output_dir "
        "./output/imr_vit_shared_model --lora_rank 8").split()
README_COMMANDS = {
    "vanilla": [*COMMON, "--fs_backbone", "vanilla", "--train_vanilla", *DIRS],
    "shared": [*COMMON, "--fs_backbone", "shared", "--train_shared", *DIRS],
    "few_shot": [*COMMON, *"--num_fs_epochs 50 --num_shots 5 --train_few_shot --fs_backbone shared --num_episodes 50"
                 .split(), *DIRS],
}
# Tiny settings: the machinery, not accuracy.
TINY = ["optim.epochs=1", "data.batch_size=64", "--num_episodes", "6", "--num_fs_epochs", "5"]


def fsl(args: list[str], ranks: int = 0, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python train/fsl.py ARGS` (ranks=0) or `deepspeed --num_gpus RANKS train/fsl.py ARGS`."""
    launcher = [sys.executable]
    if ranks:
        launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks),
                    "--master_port", str(free_port())]
    return subprocess.run([*launcher, "train/fsl.py", *args], cwd=REPO, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


def dry_run_json(stdout: str) -> dict:
    lines = stdout.splitlines()  # the launcher logs around our JSON
    return json.loads("\n".join(lines[lines.index("{"): len(lines) - lines[::-1].index("}")]))


# -- the reference README's commands -----------------------------------------------------------------------------
def test_reference_readme_commands_dry_run_to_the_reference_defaults():
    from train.cli import parse_few_shot_invocation

    for stage, command in README_COMMANDS.items():
        config = parse_few_shot_invocation([*command, "--dry-run"]).config
        f, run = config.fewshot, config.run
        assert (f.train_vanilla, f.train_shared, f.train_few_shot) == tuple(s == stage for s in README_COMMANDS)
        # the reference config's defaults where the command sets nothing
        assert f.datasets == ("Split-Imagenet-R",) and f.continual_classes_per_dataset == (160,)
        assert f.few_shot_classes_per_dataset == (40,) and f.tasks_per_dataset == (8,)
        assert f.few_class_idx == (160, 161, 162, 163, 164) and f.num_ways == 5 and f.num_queries == 100
        assert f.fs_lr == 0.001 and f.few_shot_dataset_idx == 0 and f.shared_lora_lr_scale == 0.1
        assert run.optim.sched == "constant" and run.optim.clip_grad == 2.0 and run.data.num_workers == 4
        # what the command sets
        assert f.vanilla_model_output_dir == "./output/imr_vit_vanilla_model"
        assert f.shared_model_output_dir == "./output/imr_vit_shared_model"
        assert run.output_dir == "./output/" and run.seed == 42 and run.data.batch_size == 24
        assert run.optim.epochs == 50 and run.optim.lr == 0.01 and run.lora.rank == 8 and run.data.num_tasks == 8
        assert run.backbone.model == "vit_base_patch16_224_augreg_in21k_ft_in1k"  # the reference LoRA code's weights
    assert f.fs_backbone == ("shared",) and f.num_shots == 5 and f.num_episodes == 50 and f.num_fs_epochs == 50
    vanilla = parse_few_shot_invocation(README_COMMANDS["vanilla"]).config.fewshot
    assert vanilla.fs_backbone == ("vanilla",) and vanilla.num_episodes == 100 and vanilla.num_fs_epochs == 20


@pytest.mark.multiprocess
def test_reference_readme_command_dry_runs_under_deepspeed():
    done = fsl([*README_COMMANDS["few_shot"], "--dry-run"], ranks=1)
    assert done.returncode == 0, done.stderr[-2000:]
    config = dry_run_json(done.stdout)
    assert config["fewshot"]["train_few_shot"] and config["fewshot"]["few_class_idx"] == [160, 161, 162, 163, 164]
    assert config["run"]["lora"]["rank"] == 8


def test_nothing_to_do_and_missing_upstream_runs_are_one_message(tmp_path, random_backbone):
    done = fsl(["digits_few_shot_lora", f"backbone.checkpoint={random_backbone}"])
    assert done.returncode == 2 and "nothing to do: pass --train_vanilla" in done.stderr
    done = fsl(["digits_few_shot_lora", "--train_shared", "--vanilla_model_output_dir", str(tmp_path / "none")])
    assert done.returncode == 2 and "Run train/fsl.py with --train_vanilla" in done.stderr
    assert "Traceback" not in done.stderr


# -- the three stages, chained through their folders ----------------------------------------------------------
def stage_args(root: Path, backbone: Path, *flags: str) -> list[str]:
    return ["digits_few_shot_lora", *flags, "--output_dir", str(root / "fewshot"), "--vanilla_model_output_dir",
            str(root / "vanilla"), "--shared_model_output_dir", str(root / "shared"),
            f"backbone.checkpoint={backbone}", *TINY]


@pytest.fixture(scope="module")
def chained(tmp_path_factory, random_backbone) -> Path:
    """vanilla → shared → few-shot, three deepspeed launches like the reference README's three commands."""
    root = tmp_path_factory.mktemp("fsl")
    for flag in ("--train_vanilla", "--train_shared", "--train_few_shot"):
        done = fsl(stage_args(root, random_backbone, flag), ranks=1)
        assert done.returncode == 0, f"{flag}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return root


@pytest.mark.multiprocess
def test_three_stages_chain_through_their_output_folders(chained):
    from safetensors.torch import load_file

    for stage in ("vanilla", "shared"):
        assert sorted(p.name for p in (chained / stage / "checkpoints").iterdir()) == ["task1", "task2"]
        assert json.loads((chained / stage / "results.json").read_text())["tasks_trained"] == 2
    assert set(load_file(str(chained / "vanilla/checkpoints/task2/learned.safetensors"))) == {"head.weight",
                                                                                               "head.bias"}
    learned = load_file(str(chained / "shared/checkpoints/task2/learned.safetensors"))
    assert set(learned) == {"lora.a", "lora.b", "head.weight", "head.bias"}  # no backbone, no router copy
    assert learned["lora.a"].shape[1] == 1 and learned["lora.b"].abs().sum() > 0  # one slot (one dataset), trained
    results = json.loads((chained / "fewshot" / "results.json").read_text())
    assert list(results["backbones"]) == ["vanilla", "shared", "vanilla+shared"]  # side by side
    for kind, summary in results["backbones"].items():
        accuracies = summary["accuracies"]
        assert summary["episodes"] == len(accuracies) == 6 and all(0 <= a <= 100 for a in accuracies)
        assert summary["accuracy_mean"] == pytest.approx(np.mean(accuracies))
        assert summary["ci95_half_width"] == pytest.approx(2.570582 * np.std(accuracies, ddof=1) / 6 ** 0.5, rel=1e-5)
        assert summary["reference_1_96_std"] == pytest.approx(1.96 * np.std(accuracies))
        assert summary["lora_slots"] == [None if kind == "vanilla" else 0] * 6
    assert set(results["paired_differences"]) == {"shared - vanilla", "vanilla+shared - vanilla"}
    assert set(results["upstream"]) == {"vanilla", "shared"}
    episodes = [json.loads((chained / "fewshot/episodes" / kind / "episode0003.json").read_text())
                for kind in results["backbones"]]
    assert len({(tuple(e["classes"]), tuple(e["support"])) for e in episodes}) == 1  # the same episode everywhere
    assert not list(chained.rglob("*.partial*"))


@pytest.mark.multiprocess
def test_resume_continues_both_kinds_of_stage_to_the_same_results(chained, random_backbone, tmp_path):
    """A run killed after task 1 of the shared stage and 2 episodes of the few-shot stage (what is left on disk
    then: whole task folders and whole episode records) resumes to the same checkpoints and results."""
    root = tmp_path / "copy"
    shutil.copytree(chained, root)
    shutil.rmtree(root / "shared/checkpoints/task2")
    (root / "shared/results.json").unlink()
    for kind in ("shared", "vanilla+shared"):
        shutil.rmtree(root / "fewshot/episodes" / kind)
    for k in (2, 3, 4, 5):
        (root / f"fewshot/episodes/vanilla/episode{k:04d}.json").unlink()
    (root / "fewshot/results.json").unlink()
    done = fsl([*stage_args(root, random_backbone, "--train_shared", "--train_few_shot"), "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming after task 1" in done.stdout and "vanilla: 4 episode(s)" in done.stdout
    assert "2 reused (--resume)" in done.stdout
    from safetensors.torch import load_file

    for name in ("lora.a", "lora.b", "head.weight"):
        np.testing.assert_allclose(load_file(str(root / "shared/checkpoints/task2/learned.safetensors"))[name],
                                   load_file(str(chained / "shared/checkpoints/task2/learned.safetensors"))[name],
                                   atol=1e-6)
    a = json.loads((chained / "fewshot/results.json").read_text())
    b = json.loads((root / "fewshot/results.json").read_text())
    for kind in a["backbones"]:
        np.testing.assert_allclose(b["backbones"][kind]["accuracies"], a["backbones"][kind]["accuracies"], atol=1e-9)
