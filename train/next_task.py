"""Entry point: `deepspeed train/next_task.py RUN_DIR [key=value ...]` — learn the next task of a trained run.

The run's own recorded config is resumed after its last completed task and stopped after one more task
(both HiDe stages when the run trained its stage 1 itself), evaluating on every task so far. This is the
training half of the continual deployment loop (`make learn-next`); `python -m export.promote` is the other.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the `train` package, not sibling modules
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from train import checkpoint  # noqa: E402
from train.config import ConfigError, RunConfig, replace_path  # noqa: E402
from train.errors import UserError, exit_code_of  # noqa: E402
from train.main import check_inputs, run_pipeline, stage1_config  # noqa: E402


def next_task_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The run's config, resumed and stopped after the task after its last completed one."""
    last = checkpoint.latest_task(run_dir)
    if last is None:
        raise UserError(f"'{run_dir}' holds no completed task: train it first (deepspeed train/main.py PRESET "
                        f"--output_dir {run_dir} --until_task K).")
    config = RunConfig.from_dict(checkpoint.load_task(run_dir, last)[2]["config"])
    if last + 1 >= config.data.num_tasks:
        raise UserError(f"'{run_dir}' has learned all {config.data.num_tasks} tasks of {config.preset}: "
                        "there is no next task.")
    own_stage1 = config.trained_original_model == stage1_config(config).output_dir
    config = replace(config, output_dir=str(run_dir), resume=True, until_task=last + 2,
                     trained_original_model="" if own_stage1 else config.trained_original_model)
    try:
        for key, value in (item.split("=", 1) for item in overrides):
            config = replace_path(config, key, value)
        return config.validate()
    except (ConfigError, ValueError) as error:
        raise UserError(f"bad override ({error}); overrides are key=value, e.g. optim.epochs=3") from None


def main(argv: list[str] | None = None) -> int:
    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("--local_rank")]
    if not args or args[0].startswith("-"):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    def learn() -> None:
        config = next_task_config(Path(args[0]), args[1:])
        check_inputs(config)
        print(f"learning task {config.until_task}/{config.data.num_tasks} of {config.preset} in {args[0]}",
              file=sys.stderr)
        run_pipeline(config)

    return exit_code_of(learn)


if __name__ == "__main__":
    sys.exit(main())
