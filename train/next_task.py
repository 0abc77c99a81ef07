"""Entry point: `deepspeed train/next_task.py RUN_DIR [--task-data DIR [--skip-bad-images]] [key=value ...]` — learn
the next task of a trained run.

The run's own recorded config is resumed after its last completed task and stopped after one more task
(both HiDe stages when the run trained its stage 1 itself), evaluating on every task so far. With `--task-data
DIR` (a folder of `<class>/<image>`, or of `train/` and `test/` holding them) the next task is DIR's classes, a
new task after all the run's own: the model grows to hold them, and DIR joins the run's `data.extra_task_dirs`
so resume and export see it. This is the training half of the continual deployment loop (`make learn-next`);
`python -m export.promote` is the other.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script (deepspeed train/<this>.py): import as `python -m` would
    import script_path  # noqa: F401  (train/script_path.py, importable as a sibling before `train` is)

from train.config import ConfigError, RunConfig, replace_path  # noqa: E402
from train.data.folder_scan import resolve_folder_tasks  # noqa: E402
from train.errors import UserError, exit_code_of  # noqa: E402
from train.main import check_inputs, run_pipeline, stage1_config  # noqa: E402


def with_task_folder(config: RunConfig, run_dir: Path, learned: int, folder: Path) -> RunConfig:
    """`config` with `folder` appended as one more task, once the run has learned every task it has."""
    if learned < config.data.num_tasks:
        raise UserError(f"'{run_dir}' has learned {learned} of its {config.data.num_tasks} tasks: learn those first "
                        f"(train/next_task.py {run_dir}, once per task), then add '{folder}' with --task-data.")
    if not folder.is_dir():
        raise UserError(f"--task-data '{folder}' is not a folder: pass a folder holding one sub-folder of images per "
                        "class (<class>/<image>, or train/<class>/<image> and test/<class>/<image>).")
    path, extra = str(folder.resolve()), config.data.extra_task_dirs
    if path in extra:
        task = config.data.num_tasks - len(extra) + extra.index(path) + 1
        raise UserError(f"'{folder}' is task {task} of '{run_dir}' already: pass a folder of new classes.")
    data = replace(config.data, extra_task_dirs=(*extra, path), num_tasks=config.data.num_tasks + 1)
    adapter = replace(config.adapter, slots=max(config.adapter.slots, data.num_tasks))  # a slot per task
    return resolve_folder_tasks(replace(config, data=data, adapter=adapter))


def next_task_config(run_dir: Path, overrides: list[str], task_data: Path | None = None) -> RunConfig:
    """The run's config (with `task_data` as a new task), resumed and stopped after the task after its last
    completed one."""
    from train.trained import task_checkpoint

    saved = task_checkpoint(run_dir)
    last, config = saved.task, saved.config
    if task_data is not None:
        config = with_task_folder(config, run_dir, last + 1, task_data)
    if last + 1 >= config.data.num_tasks:
        raise UserError(f"'{run_dir}' has learned all {config.data.num_tasks} tasks of {config.preset}: "
                        "there is no next task. Add one with --task-data DIR (a folder of <class>/<image>).")
    own_stage1 = config.trained_original_model == stage1_config(config).output_dir
    config = replace(config, output_dir=str(run_dir), resume=True, until_task=last + 2,
                     trained_original_model="" if own_stage1 else config.trained_original_model)
    try:
        for key, value in (item.split("=", 1) for item in overrides):
            config = replace_path(config, key, value)
        return config.validate()
    except (ConfigError, ValueError) as error:
        raise UserError(f"bad override ({error}); overrides are key=value, e.g. optim.epochs=3") from None


def task_data_flag(args: list[str]) -> tuple[Path | None, list[str]]:
    """`--task-data DIR` (or `--task-data=DIR`) taken out of `args`."""
    for index, arg in enumerate(args):
        if arg.startswith("--task-data="):
            return Path(arg.split("=", 1)[1]), args[:index] + args[index + 1:]
        if arg == "--task-data":
            if index + 1 == len(args):
                raise UserError("--task-data needs a folder: --task-data DIR (DIR/<class>/<image>).")
            return Path(args[index + 1]), args[:index] + args[index + 2:]
    return None, args


def main(argv: list[str] | None = None) -> int:
    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("--local_rank")]
    if not args or args[0].startswith("-"):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2

    def learn() -> None:
        task_data, overrides = task_data_flag(args[1:])
        overrides = ["data.skip_bad_images=true" if a == "--skip-bad-images" else a for a in overrides]
        config = next_task_config(Path(args[0]), overrides, task_data)
        check_inputs(config)
        what = f"the classes of {task_data}" if task_data else f"of {config.preset}"
        print(f"learning task {config.until_task}/{config.data.num_tasks} {what} in {args[0]}", file=sys.stderr)
        run_pipeline(config)

    return exit_code_of(learn)


if __name__ == "__main__":
    sys.exit(main())
