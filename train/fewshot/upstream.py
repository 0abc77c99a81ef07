"""The upstream stages: the vanilla model (`--train_vanilla`) and the shared-LoRA model (`--train_shared`),
trained task by task through the project's engine (DeepSpeed, per-task atomic checkpoints, `--resume`)."""

from __future__ import annotations

from dataclasses import replace

from .. import checkpoint
from ..backbones.registry import backbone_spec
from ..config import FewShotRunConfig, RunConfig
from ..distributed import DistContext
from ..engine import Progress, finish, run_task, seed_everything
from ..errors import UserError
from ..methods.base import ContinualMethod
from ..report import RunLog
from ..stats import ClassStatistics
from ..trained import check_backbone, check_method, task_checkpoint
from ..weights import LoadedBackbone, load_backbone
from .data import UpstreamLayout, load_member, upstream_data
from .models import SharedLoraModel, VanillaModel

STAGES = ("vanilla", "shared")


def stage_config(config: FewShotRunConfig, stage: str) -> RunConfig:
    """The run config of an upstream stage: its output folder, its model, and (shared) the vanilla run."""
    fewshot = config.fewshot
    if stage == "vanilla":
        return replace(config.run, method=VanillaModel.name, output_dir=fewshot.vanilla_model_output_dir)
    return replace(config.run, method=SharedLoraModel.name, output_dir=fewshot.shared_model_output_dir,
                   trained_original_model=fewshot.vanilla_model_output_dir)


def check_finished(output_dir: str, num_tasks: int, stage: str) -> None:
    """Fail early, naming the command, when a stage this one builds on is not complete."""
    missing = [t + 1 for t in range(num_tasks) if not (checkpoint.task_dir(output_dir, t) / checkpoint.STATE).is_file()]
    if missing:
        raise UserError(f"the {stage} model in '{output_dir}' is not trained: no checkpoint for task(s) {missing}. "
                        f"Run train/fsl.py with --train_{stage} (and the same --{stage}_model_output_dir) first.")


def build_model(config: FewShotRunConfig, stage: str, backbone: LoadedBackbone, layout: UpstreamLayout
                ) -> ContinualMethod:
    split, run = layout.split(), stage_config(config, stage)
    if stage == "vanilla":
        return VanillaModel(run, backbone.vit, split)
    return SharedLoraModel(run, backbone.vit, split, layout.class_to_dataset(), layout.task_to_dataset(),
                           config.fewshot.shared_lora_lr_scale)


def _resume(model: ContinualMethod, run: RunConfig, last: int, backbone: LoadedBackbone, log: RunLog) -> Progress:
    saved = task_checkpoint(run.output_dir, last)
    check_method(saved, run.stage, run.method)
    check_backbone(saved, backbone, "resume it with the --model and --backbone_checkpoint it was trained with")
    model.load_state_dict(saved.learned(), strict=False)
    checkpoint.restore_rng(saved.state["rng"])
    log.event("resume", f"resuming after task {last + 1} from {saved.folder}")
    return Progress.from_dict(saved.state["progress"])


def run_stage(config: FewShotRunConfig, stage: str, ctx: DistContext) -> dict:
    """Train the upstream tasks of `stage` into its output folder; return its results (accuracy matrix, ...)."""
    run, layout = stage_config(config, stage), UpstreamLayout.of(config.fewshot)
    log = RunLog(run.output_dir, ctx.is_main)
    seed_everything(run.seed)
    spec = backbone_spec(run.backbone.model)
    members = [load_member(run, name, spec, c + f) for name, c, f in zip(
        config.fewshot.datasets, config.fewshot.continual_classes_per_dataset,
        config.fewshot.few_shot_classes_per_dataset)]
    data, split = upstream_data(members, layout), layout.split()
    backbone = load_backbone(run.backbone, ctx)
    model = build_model(config, stage, backbone, layout).to(ctx.device)
    progress, start = Progress(split.num_tasks), 0
    last = checkpoint.latest_task(run.output_dir) if run.resume else None
    if last is not None:
        progress, start = _resume(model, run, last, backbone, log), last + 1
    log.event("start", f"{run.preset}: upstream {stage} model, {split.num_tasks} tasks over "
              f"{', '.join(config.fewshot.datasets)} ({layout.num_classes} classes), {ctx.world_size} rank(s)",
              config=config.to_dict())
    statistics = ClassStatistics(run.alignment.ca_storage_efficient_method, run.alignment.n_centroids)  # unused
    for task in range(start, split.num_tasks):
        run_task(model, task, data, split, statistics, progress, run, ctx, backbone, log)
    return finish(progress, run, split, ctx, log, split.num_tasks, data)
