"""A trained run's method after task k, rebuilt from its checkpoint and checked against its backbone."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from train import checkpoint
from train.config import RunConfig
from train.data.splits import TaskSplit
from train.distributed import init_distributed
from train.errors import UserError
from train.growth import recorded_split
from train.methods import ContinualMethod, build_method
from train.weights import LoadedBackbone, load_backbone


@dataclass(frozen=True)
class RestoredRun:
    run_dir: Path
    task: int  # 0-based index of the last learned task
    config: RunConfig
    split: TaskSplit
    backbone: LoadedBackbone
    method: ContinualMethod
    checkpoint_sha256: str


def last_completed_task(run_dir: Path) -> int:
    task = checkpoint.latest_task(run_dir)
    if task is None:
        raise UserError(f"'{run_dir}' holds no completed task (no {run_dir}/checkpoints/task<k>/state.json): "
                        "train it first, e.g. deepspeed train/main.py digits_hideprompt --output_dir RUN.")
    return task


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


def restore(run_dir: str | Path, task: int | None = None, backbone_checkpoint: str | None = None) -> RestoredRun:
    """The method of `run_dir` after task `task` (default: the last completed), in eval mode on the CPU."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' does not exist: pass the --output_dir of a training run.")
    task = last_completed_task(run_dir) if task is None else task
    folder = checkpoint.task_dir(run_dir, task)
    if not (folder / checkpoint.STATE).is_file():
        raise UserError(f"'{run_dir}' has no completed task {task + 1} ({folder} is missing); "
                        f"completed tasks: 1..{last_completed_task(run_dir) + 1}.")
    learned, _, state = checkpoint.load_task(run_dir, task)
    config = RunConfig.from_dict(state["config"])
    if config.stage != "wtp":
        raise UserError(f"'{run_dir}' is a stage-1 (task-identity) run: export the stage-2 run that uses it.")
    # Per-sample routing only: the reference's batch-wise prompt choice depends on the batch's composition.
    config = replace(config, prompt=replace(config.prompt, batchwise_prompt=False))
    if backbone_checkpoint:
        config = replace(config, backbone=replace(config.backbone, checkpoint=backbone_checkpoint))
    backbone = load_backbone(config.backbone, init_distributed())
    if backbone.identity() != state["backbone"]:
        raise UserError(
            f"the backbone weights found for '{config.backbone.model}' (sha256 {backbone.weights_sha256[:12]}…) are "
            f"not the ones '{run_dir}' was trained on (sha256 {state['backbone']['sha256'][:12]}…): pass the "
            "training run's weights with --backbone-checkpoint PATH.")
    split = recorded_split(state)  # the tasks as they were when this checkpoint was written (a run may grow)
    method = build_method(config.method, config, backbone.vit, split)
    missing, unexpected = method.load_state_dict(learned, strict=False)
    missing = [k for k in missing if not k.startswith(("backbone.", "tii."))]
    if missing or unexpected:
        raise UserError(f"checkpoint {folder} does not fit method '{config.method}' as this version builds it "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}): export it with the version that "
                        "trained it.")
    if method.needs_task_identity:
        method.load_task_identity(checkpoint.load_task_identity(stage1_dir(run_dir, config), task,
                                                                 backbone.identity()))
    return RestoredRun(run_dir, task, config, split, backbone, method.eval(), folder_sha256(folder))
