"""Entry point: `deepspeed train/main.py PRESET [reference flags] [key=value ...]` (or plain `python`).

A HiDe-Prompt stage-2 run without `--trained_original_model` first runs stage 1 (task-identity
inference) into `<output_dir>/tii`, so one command runs the whole pipeline.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script (deepspeed train/<this>.py): import as `python -m` would
    import script_path  # noqa: F401  (train/script_path.py, importable as a sibling before `train` is)

from train.cli import parse_or_exit  # noqa: E402
from train.config import RunConfig  # noqa: E402
from train.errors import UserError, exit_code_of  # noqa: E402
from train.presets import tii_stage  # noqa: E402


def stage1_config(config: RunConfig) -> RunConfig:
    """The pipeline's stage-1 run. `--not_train_ca` is a stage-2 switch, as in the reference: stage 1 aligns."""
    stage1 = tii_stage(config)
    return replace(stage1, output_dir=str(Path(config.output_dir) / "tii"),
                   alignment=replace(stage1.alignment, not_train_ca=False))


def needs_stage1(config: RunConfig) -> bool:
    """Stage 2 of a method routed by a task-identity network (HiDe-Prompt, HiDe-LoRA)."""
    from train.methods import build_method_class

    return config.stage == "wtp" and build_method_class(config.method).needs_task_identity


def check_inputs(config: RunConfig) -> None:
    """Cheap checks before any process group, data or weights: fail in a second, not a minute."""
    from train.backbones.registry import backbone_spec
    from train.checkpoint import check_stage1_run
    from train.data.folder import FOLDER_DATASET, check_folder_data
    from train.data.registry import builtin_class_names, check_loadable
    from train.data.splits import split_classes
    from train.distributed import load_ds_config

    backbone_spec(config.backbone.model)
    entry = check_loadable(config.data.dataset, config.data.data_path, config.data.download)
    if config.data.dataset != FOLDER_DATASET:  # the benchmark's own tasks, before any extra folder task
        split_classes(entry.num_classes, config.data.num_tasks - len(config.data.extra_task_dirs))
    try:
        load_ds_config(config.deepspeed_config, config.data.batch_size, config.optim.clip_grad)
    except FileNotFoundError as error:
        raise UserError(str(error)) from None
    if needs_stage1(config) and config.trained_original_model:
        check_stage1_run(config.trained_original_model, config.data.num_tasks)
    if config.data.dataset == FOLDER_DATASET:  # the user's folders, every image decoded: the slowest check, last
        check_folder_data(config)
    elif config.data.extra_task_dirs:  # folder tasks after a built-in benchmark: new names only
        check_folder_data(config, builtin_class_names(config.data, backbone_spec(config.backbone.model)))


def run_pipeline(config: RunConfig) -> dict:
    from train.distributed import init_distributed
    from train.engine import run

    ctx = init_distributed()
    if needs_stage1(config) and not config.trained_original_model:
        stage1 = stage1_config(config)
        run(stage1, ctx)
        config = replace(config, trained_original_model=stage1.output_dir)
    return run(config, ctx)


def run_invocation(invocation, check: Callable, execute: Callable) -> int:
    """`--dry-run` prints the config; otherwise note inert flags, check the inputs, run (exit 2 on a UserError)."""
    config = invocation.config
    if invocation.dry_run:
        print(config.to_json())
        return 0
    if invocation.inert:
        print(f"note: {', '.join(invocation.inert)} accepted for compatibility; no effect here", file=sys.stderr)
    return exit_code_of(lambda: (check(config), execute(config)))


def main(argv: list[str] | None = None) -> int:
    return run_invocation(parse_or_exit(sys.argv[1:] if argv is None else argv), check_inputs, run_pipeline)


if __name__ == "__main__":
    sys.exit(main())
