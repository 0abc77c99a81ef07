"""Entry point of the few-shot LoRA study: `deepspeed train/fsl.py PRESET [reference flags] [key=value ...]`.

Stages, in this order, as the flags ask: `--train_vanilla` (frozen ViT + head over the upstream classes, into
`--vanilla_model_output_dir`), `--train_shared` (one LoRA per upstream dataset, into `--shared_model_output_dir`),
`--train_few_shot` (episodes with each `--fs_backbone`, into `--output_dir`). Each stage reads the earlier
stages' output folders.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script (deepspeed train/<this>.py): import as `python -m` would
    import script_path  # noqa: F401  (train/script_path.py, importable as a sibling before `train` is)

from train.cli import parse_few_shot_or_exit  # noqa: E402
from train.config import FewShotRunConfig  # noqa: E402
from train.errors import UserError  # noqa: E402
from train.main import run_invocation  # noqa: E402


def stages(config: FewShotRunConfig) -> list[str]:
    fewshot = config.fewshot
    chosen = [name for name, on in (("vanilla", fewshot.train_vanilla), ("shared", fewshot.train_shared),
                                    ("few_shot", fewshot.train_few_shot)) if on]
    if not chosen:
        raise UserError("nothing to do: pass --train_vanilla, --train_shared and/or --train_few_shot")
    return chosen


def check_inputs(config: FewShotRunConfig) -> None:
    """Cheap checks before any process group, data or weights; a stage's inputs from earlier stages of this
    invocation are checked when it starts."""
    from train.backbones.registry import backbone_spec
    from train.data.registry import check_loadable
    from train.distributed import load_ds_config
    from train.fewshot.data import check_members, registry_name
    from train.fewshot.upstream import check_finished

    chosen = stages(config)
    run, fewshot = config.run, config.fewshot
    backbone_spec(run.backbone.model)
    check_members(fewshot)
    for name in fewshot.datasets:
        check_loadable(registry_name(name), run.data.data_path, run.data.download)
    try:
        load_ds_config(run.deepspeed_config, run.data.batch_size, run.optim.clip_grad)
    except FileNotFoundError as error:
        raise UserError(str(error)) from None
    if "shared" in chosen and "vanilla" not in chosen:
        check_finished(fewshot.vanilla_model_output_dir, fewshot.num_upstream_tasks, "vanilla")


def run_stages(config: FewShotRunConfig) -> dict | None:
    from train.distributed import init_distributed
    from train.fewshot.runner import run_few_shot
    from train.fewshot.upstream import run_stage

    ctx = init_distributed()
    results = None
    for stage in stages(config):
        results = run_few_shot(config, ctx) if stage == "few_shot" else run_stage(config, stage, ctx)
    return results


def main(argv: list[str] | None = None) -> int:
    return run_invocation(parse_few_shot_or_exit(sys.argv[1:] if argv is None else argv), check_inputs, run_stages)


if __name__ == "__main__":
    sys.exit(main())
