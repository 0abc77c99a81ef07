"""A trained run read back: `load_trained(run_dir, task)` gives the method after a task, ready for inference.

This is the way out of training for export, the benchmarks and tools; resume, next-task and the few-shot study
read their checkpoints through the same checks (`task_checkpoint`, `check_backbone`, `check_method`), so a
missing run, a missing task, other backbone weights or another method's checkpoint get one message naming the
fix wherever they are met. Loading starts no process group and needs no DeepSpeed launcher.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from . import checkpoint
from .config import RunConfig
from .data.registry import load_dataset
from .data.splits import TaskSplit, indices_of_classes
from .errors import UserError
from .growth import recorded_split
from .methods import METHODS, ContinualMethod, build_method
from .weights import LoadedBackbone, load_backbone

TRAIN_FIRST = "deepspeed train/main.py PRESET --output_dir {run_dir}"


@dataclass(frozen=True)
class TaskCheckpoint:
    """A completed task's checkpoint folder; `state` is its state.json, the tensors are read on demand."""

    run_dir: Path
    task: int  # 0-based
    state: dict

    @property
    def folder(self) -> Path:
        return checkpoint.task_dir(self.run_dir, self.task)

    @property
    def config(self) -> RunConfig:
        """The config the run was trained with."""
        return RunConfig.from_dict(self.state["config"])

    @property
    def split(self) -> TaskSplit:
        """The tasks as they were when this checkpoint was written (a run may grow later)."""
        return recorded_split(self.state)

    def learned(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.folder / checkpoint.LEARNED))

    def statistics(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.folder / checkpoint.STATISTICS))


def last_completed_task(run_dir: str | Path) -> int:
    """The 0-based index of the run's last completed task, or a UserError saying how to train one."""
    task = checkpoint.latest_task(run_dir)
    if task is None:
        raise UserError(f"'{run_dir}' holds no completed task (no {Path(run_dir)}/checkpoints/task<k>/state.json): "
                        f"train it first, e.g. {TRAIN_FIRST.format(run_dir=run_dir)}.")
    return task


def task_checkpoint(run_dir: str | Path, task: int | None = None) -> TaskCheckpoint:
    """The checkpoint of `run_dir` after task `task` (default: the last completed one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' does not exist: pass the --output_dir of a training run.")
    task = last_completed_task(run_dir) if task is None else task
    folder = checkpoint.task_dir(run_dir, task)
    if not (folder / checkpoint.STATE).is_file():
        raise UserError(f"'{run_dir}' has no completed task {task + 1} ({folder} is missing); "
                        f"completed tasks: 1..{last_completed_task(run_dir) + 1}.")
    return TaskCheckpoint(run_dir, task, json.loads((folder / checkpoint.STATE).read_text()))


def check_backbone(saved: TaskCheckpoint, backbone: LoadedBackbone, fix: str) -> None:
    """The backbone weights loaded now are the ones the checkpoint was trained on; else `fix` tells what to do."""
    recorded = saved.state["backbone"]
    if backbone.identity() != recorded:
        raise UserError(
            f"the backbone weights found for '{backbone.spec.name}' (sha256 {backbone.weights_sha256[:12]}…) are not "
            f"the ones '{saved.run_dir}' was trained on ('{recorded['name']}', sha256 {recorded['sha256'][:12]}…): "
            f"{fix}.")


def check_method(saved: TaskCheckpoint, stage: str, method: str) -> None:
    """The checkpoint was written by stage `stage` of method `method` (resuming into another method would load
    only the parameters whose names happen to match)."""
    config = saved.config
    if (config.stage, config.method) != (stage, method):
        raise UserError(f"'{saved.run_dir}' holds a checkpoint of method '{config.method}' (stage {config.stage}, "
                        f"preset {config.preset}), not of '{method}' (stage {stage}): resume it with the preset it was "
                        "trained with, or pass another --output_dir.")


@dataclass(frozen=True)
class TrainedRun:
    """A run's method after task `task`, in eval mode on the CPU, with what inference needs to know."""

    run_dir: Path
    task: int  # 0-based index of the last learned task
    config: RunConfig  # as trained, except that prompts are chosen per sample (not per batch)
    split: TaskSplit  # every task of the run as the checkpoint knew them
    backbone: LoadedBackbone
    method: ContinualMethod
    checkpoint_sha256: str  # over the task's checkpoint folder (file names and bytes)
    state: dict  # the checkpoint's state.json

    @property
    def seen(self) -> torch.Tensor:
        """`(C,)` True for the classes of tasks `0..task`."""
        return self.split.seen_mask(self.task)

    @property
    def seen_classes(self) -> list[int]:
        return self.split.seen_classes(self.task)

    @property
    def class_to_task(self) -> torch.Tensor:
        """`(C,)` task index of every class of the run."""
        return self.split.class_to_task()

    @property
    def class_names(self) -> list[str]:
        """The names the run's data gave its classes; the index for any it did not name (checkpoints written
        before names were kept)."""
        recorded = self.state.get("class_names", [])
        return [str(recorded[c]) if c < len(recorded) else str(c) for c in range(self.split.num_classes)]

    @property
    def task_names(self) -> list[str]:
        """The names the data gave its tasks: those of the last `len(task_names)` tasks (folder tasks)."""
        return list(self.state.get("task_names", []))


def folder_sha256(folder: Path) -> str:
    """SHA-256 over a checkpoint folder's file names and bytes, in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def stage1_dir(run_dir: Path, config: RunConfig) -> Path:
    """The recorded stage-1 run (relative to where training ran), else `<run>/tii`, where main.py puts it."""
    recorded = Path(config.trained_original_model)
    return recorded if recorded.is_dir() else run_dir / "tii"


def load_trained(run_dir: str | Path, task: int | None = None, backbone_checkpoint: str | None = None) -> TrainedRun:
    """The method of `run_dir` after task `task` (default: the last completed), in eval mode on the CPU.

    `backbone_checkpoint` replaces the recorded path of the backbone weights (a run trained elsewhere); the
    weights must still be the ones the run was trained on.
    """
    saved = task_checkpoint(run_dir, task)
    config = saved.config
    if config.stage != "wtp":
        raise UserError(f"'{saved.run_dir}' is a stage-1 (task-identity) run: pass the stage-2 run that uses it "
                        "(the folder above it when train/main.py ran both stages).")
    if config.method not in METHODS:
        raise UserError(f"'{saved.run_dir}' holds a checkpoint of method '{config.method}', which is not a continual "
                        f"method ({', '.join(sorted(METHODS))}): load a run trained by train/main.py.")
    # Per-sample routing only: the reference's batch-wise prompt choice depends on the batch's composition.
    config = replace(config, adapter=replace(config.adapter, batchwise_selection=False))
    if backbone_checkpoint:
        config = replace(config, backbone=replace(config.backbone, checkpoint=backbone_checkpoint))
    backbone = load_backbone(config.backbone, None)
    check_backbone(saved, backbone, "pass the training run's weights with --backbone-checkpoint PATH")
    method = build_method(config.method, config, backbone.vit, saved.split)
    missing, unexpected = method.load_state_dict(saved.learned(), strict=False)
    missing = [k for k in missing if not k.startswith(("backbone.", "tii."))]
    if missing or unexpected:
        raise UserError(f"checkpoint {saved.folder} does not fit method '{config.method}' as this version builds it "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}): load it with the version that "
                        "trained it.")
    if method.needs_task_identity:
        method.load_task_identity(checkpoint.load_task_identity(stage1_dir(saved.run_dir, config), saved.task,
                                                                 backbone.identity()))
    return TrainedRun(saved.run_dir, saved.task, config, saved.split, backbone, method.eval(),
                      folder_sha256(saved.folder), saved.state)


def held_out_images(run: TrainedRun, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images of the learned tasks (a seeded sample of at most `limit`), preprocessed as in training."""
    data = load_dataset(run.config.data, run.backbone.spec, run.run_dir)  # ImageFolder: the run's recorded split
    indices = indices_of_classes(data.test_targets, tuple(run.seen_classes))
    if len(indices) > limit:
        keep = torch.randperm(len(indices), generator=torch.Generator().manual_seed(0))[:limit]
        indices = [indices[i] for i in sorted(keep.tolist())]
    pairs = [data.test[i] for i in indices]
    return torch.stack([p[0] for p in pairs]).float(), torch.tensor([int(p[1]) for p in pairs])
