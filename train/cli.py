"""Command line: `PRESET [reference flags] [key=value ...]` → RunConfig.

The reference implementation's flag names are accepted as they are (so its README commands run with
`deepspeed` as the launcher); each maps onto one config field. Flags that the reference parses but
never uses are accepted and reported as having no effect. `key=value` overrides reach any field
(`optim.lr=0.01`, `tii_optim.epochs=3`, `prompt.kv_reshape_official=true`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from .config import ConfigError, FewShotRunConfig, RunConfig, replace_path
from .data.folder_scan import FOLDER_DATASET, resolve_folder_tasks
from .errors import UserError
from .presets import FEW_SHOT_PRESETS, PRESETS, few_shot_preset, preset, reference_model_name

# flag → config field (dotted); a tuple of flags shares one field.
FLAG_FIELDS: dict[tuple[str, ...], str] = {
    ("--batch-size",): "data.batch_size",
    ("--data-path",): "data.data_path",
    ("--dataset",): "data.dataset",
    ("--num_tasks",): "data.num_tasks",
    ("--shuffle",): "data.shuffle",
    ("--num_workers",): "data.num_workers",
    ("--train_mask",): "data.train_mask",
    ("--task_inc",): "data.task_inc",
    ("--model",): "backbone.model",
    ("--original_model",): "backbone.original_model",
    ("--backbone_checkpoint", "--pretrained_checkpoint"): "backbone.checkpoint",
    ("--mocov3_reference_norm",): "backbone.mocov3_reference_norm",
    ("--lr",): "optim.lr",
    ("--epochs",): "optim.epochs",
    ("--sched",): "optim.sched",
    ("--unscale_lr",): "optim.unscale_lr",
    ("--warmup-lr",): "optim.warmup_lr",
    ("--min-lr",): "optim.min_lr",
    ("--decay-epochs",): "optim.decay_epochs",
    ("--warmup-epochs",): "optim.warmup_epochs",
    ("--decay-rate", "--dr"): "optim.decay_rate",
    ("--clip-grad",): "optim.clip_grad",
    ("--weight-decay", "--weight_decay"): "optim.weight_decay",
    ("--opt-eps",): "optim.opt_eps",
    ("--opt-betas",): "optim.opt_betas",
    ("--length",): "prompt.length",
    ("--e_prompt_layer_idx",): "prompt.layers",
    ("--size",): "adapter.slots",
    ("--prompt_momentum",): "prompt.prompt_momentum",
    ("--reg",): "hide.contrastive_reg",
    ("--batchwise_prompt",): "adapter.batchwise_selection",
    ("--kv_reshape_official",): "prompt.kv_reshape_official",
    ("--top_k",): "prompt.top_k",
    ("--pull_constraint_coeff",): "prompt.pull_constraint_coeff",
    ("--g_prompt_length",): "prompt.g_prompt_length",
    ("--g_prompt_layer_idx",): "prompt.g_prompt_layers",
    ("--lora_rank",): "lora.rank",
    ("--lora_momentum",): "lora.lora_momentum",
    ("--lora_a_init_official",): "lora.official_a_init",
    ("--ca_lr",): "alignment.ca_lr",
    ("--crct_epochs",): "alignment.crct_epochs",
    ("--ca_storage_efficient_method",): "alignment.ca_storage_efficient_method",
    ("--n_centroids",): "alignment.n_centroids",
    ("--original_model_mlp_structure",): "alignment.mlp_structure",
    ("--router",): "alignment.router",  # beyond the reference: task routing (mlp = the reference's)
    ("--router_shrinkage",): "alignment.router_shrinkage",
    ("--answer_scope",): "alignment.answer_scope",  # beyond the reference: seen = the reference's answer
    ("--seed",): "seed",
    ("--output_dir",): "output_dir",
    ("--trained_original_model",): "trained_original_model",
    ("--deepspeed_config", "--ds_config"): "deepspeed_config",
    ("--forgetting",): "forgetting",
    ("--until_task",): "until_task",
}
FLAG_NOTES = {flag: " (LoRA presets: vit_base_patch16_224 is the reference LoRA code's augreg IN-21k→1k ViT-B/16)"
              for flag in ("--model", "--original_model")}
# Flags without a value that set a field to True.
SWITCH_FIELDS: dict[str, str] = {
    "--larger_prompt_lr": "prompt.larger_prompt_lr",
    "--not_train_ca": "alignment.not_train_ca",
    "--resume": "resume",
    "--download": "data.download",
    "--skip-bad-images": "data.skip_bad_images",
}
LIST_FLAGS = {"--opt-betas", "--e_prompt_layer_idx", "--g_prompt_layer_idx", "--original_model_mlp_structure"}
# Parsed by the reference but without effect there (or decided by the launcher/backbone here).
INERT_FLAGS = (
    "--input-size --pretrained --drop --drop-path --opt --momentum --reinit_optimizer --lr-noise "
    "--lr-noise-pct --lr-noise-std --cooldown-epochs --patience-epochs --color-jitter --aa --smoothing "
    "--train-interpolation --reprob --remode --recount --device --world_size --dist_url --use_g_prompt "
    "--use_prefix_tune_for_g_prompt --use_e_prompt --use_prefix_tune_for_e_prompt --prompt_pool --initializer "
    "--prompt_key --prompt_key_init --use_prompt_mask --mask_first_epoch --shared_prompt_pool --shared_prompt_key "
    "--embedding_key --predefined_key --pull_constraint --same_key_value --global_pool --head_type "
    "--freeze --milestones --ca_epochs --print_freq --master_port --lora_type"
).split()
INERT_SWITCHES = ("--pin-mem", "--no-pin-mem", "--separated_head")


@dataclass(frozen=True)
class Invocation:
    config: RunConfig
    dry_run: bool
    inert: tuple[str, ...]  # reference flags given that have no effect


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train/main.py",
        description="Continual learning on pretrained ViTs (HiDe-Prompt & co.) through DeepSpeed. "
        "Reference flags map onto config fields (shown as → field); any field can also be set as "
        "key=value, e.g. optim.lr=0.01 tii_optim.epochs=3.",
        epilog=f"presets: {', '.join(sorted(PRESETS))}",
    )
    parser.add_argument("preset", help="a preset name, e.g. digits_hideprompt or cifar100_hideprompt_5e")
    parser.add_argument("--train_inference_task_only", action="store_true",
                        help="run HiDe stage 1 (task-identity inference) only")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="print the resolved config as JSON and exit")
    parser.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)  # set by the launcher
    for flags, path in FLAG_FIELDS.items():
        nargs = "+" if flags[0] in LIST_FLAGS else None
        parser.add_argument(*flags, dest=path, nargs=nargs, default=argparse.SUPPRESS, metavar="V",
                            help=f"→ {path}{FLAG_NOTES.get(flags[0], '')}")
    for flag, path in SWITCH_FIELDS.items():
        parser.add_argument(flag, dest=path, action="store_const", const="true", default=argparse.SUPPRESS,
                            help=f"→ {path}=true")
    for flag in INERT_FLAGS:
        parser.add_argument(flag, dest=f"inert:{flag}", nargs="*", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    for flag in INERT_SWITCHES:
        parser.add_argument(flag, dest=f"inert:{flag}", action="store_true", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    return parser


def parse_flags_and_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[dict, list[str]]:
    """(flags by destination, the `key=value` overrides); anything else is an error naming it."""
    namespace, rest = parser.parse_known_args(argv)
    unknown = [item for item in rest if item.startswith("-") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (see --help; overrides are key=value)")
    return vars(namespace), rest


def parse_invocation(argv: list[str]) -> Invocation:
    parser = build_parser()
    args, rest = parse_flags_and_overrides(parser, argv)
    config = preset(args.pop("preset"))
    if args.pop("train_inference_task_only"):  # the preset's optimiser, overridden by flags: as the reference
        config = replace_path(config, "stage", "tii")
    dry_run = args.pop("dry_run")
    args.pop("local_rank")
    overrides = [tuple(item.split("=", 1)) for item in rest]
    inert = tuple(sorted(k.removeprefix("inert:") for k in args if k.startswith("inert:")))
    try:
        for path, value in [(k, _reference_value(config, k, v)) for k, v in args.items()
                            if not k.startswith("inert:")] + overrides:
            config = replace_path(config, path, value)
        if config.data.dataset == FOLDER_DATASET and "data.num_tasks" in {*args, *dict(overrides)}:
            raise UserError(f"{FOLDER_DATASET} runs take their task count from the task folders under --data-path "
                            "(and data.extra_task_dirs): leave --num_tasks out.")
        config = resolve_folder_tasks(config).validate()
    except ConfigError as error:
        raise UserError(str(error)) from None
    return Invocation(config, dry_run, inert)


def _reference_value(config: RunConfig, path: str, value):
    """A flag's value as the reference meant it (model names depend on the method's trainer)."""
    if path in ("backbone.model", "backbone.original_model"):
        return reference_model_name(config.method, value)
    return value


def parse_or_exit(argv: list[str]) -> Invocation:
    try:
        return parse_invocation(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None



# -- train/fsl.py: the reference's few-shot flags (configs/*_few_shot_lora.py) → FewShotConfig fields ----------
FEW_SHOT_FLAG_FIELDS: dict[str, str] = {f"--{name}": f"fewshot.{name}" for name in (
    "datasets", "continual_classes_per_dataset", "few_shot_classes_per_dataset", "tasks_per_dataset",
    "vanilla_model_output_dir", "shared_model_output_dir", "num_shots", "num_ways", "num_episodes", "num_queries",
    "num_fs_epochs", "fs_lr", "fs_backbone", "few_shot_dataset_idx", "few_class_idx")}
# The reference declares these `type=list` (`--few_class_idx 160 161` became [['1','6','0'], ...]): here they
# take one or more values (spaces or commas), as does --fs_backbone (the backbones then run in turn).
FEW_SHOT_LIST_FLAGS = {"--datasets", "--continual_classes_per_dataset", "--few_shot_classes_per_dataset",
                       "--tasks_per_dataset", "--fs_backbone", "--few_class_idx"}
FEW_SHOT_SWITCHES = {f"--{name}": f"fewshot.{name}" for name in ("train_vanilla", "train_shared", "train_few_shot")}
FEW_SHOT_INERT = ("--init_lr", "--eval")


@dataclass(frozen=True)
class FewShotInvocation:
    config: FewShotRunConfig
    dry_run: bool
    inert: tuple[str, ...]


def build_few_shot_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    parser.prog = "train/fsl.py"
    parser.description = ("The few-shot LoRA study: upstream vanilla and shared-LoRA models, then few-shot episodes "
                          "on held-out classes. Flags as in train/main.py, plus the reference's few-shot flags.")
    parser.epilog = f"presets: {', '.join(sorted(FEW_SHOT_PRESETS))}"
    for flag, path in FEW_SHOT_FLAG_FIELDS.items():
        parser.add_argument(flag, dest=path, nargs="+" if flag in FEW_SHOT_LIST_FLAGS else None, metavar="V",
                            default=argparse.SUPPRESS, help=f"→ {path}")
    for flag, path in FEW_SHOT_SWITCHES.items():
        parser.add_argument(flag, dest=path, action="store_const", const="true", default=argparse.SUPPRESS,
                            help=f"→ {path}=true")
    for flag in FEW_SHOT_INERT:
        parser.add_argument(flag, dest=f"inert:{flag}", nargs="*", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def parse_few_shot_invocation(argv: list[str]) -> FewShotInvocation:
    """`PRESET [flags] [key=value]` → FewShotRunConfig; `fewshot.*` keys set the study, the rest the run."""
    parser = build_few_shot_parser()
    args, rest = parse_flags_and_overrides(parser, argv)
    if args.pop("train_inference_task_only"):
        raise UserError("--train_inference_task_only belongs to train/main.py (HiDe stage 1), not to train/fsl.py")
    config, dry_run = few_shot_preset(args.pop("preset")), args.pop("dry_run")
    args.pop("local_rank")
    inert = tuple(sorted(k.removeprefix("inert:") for k in args if k.startswith("inert:")))
    items = [(k, v) for k, v in args.items() if not k.startswith("inert:")] + [tuple(i.split("=", 1)) for i in rest]
    run, fewshot = config.run, config.fewshot
    try:
        for path, value in items:
            if path.startswith("fewshot."):
                fewshot = replace_path(fewshot, path.removeprefix("fewshot."), value, "fewshot.")
            else:
                run = replace_path(run, path, _reference_value(run, path, value))
        given_tasks = run.data.num_tasks if "data.num_tasks" in dict(items) else None
        if given_tasks is not None and given_tasks != fewshot.num_upstream_tasks:
            raise ConfigError(f"--num_tasks {given_tasks} disagrees with --tasks_per_dataset "
                              f"{list(fewshot.tasks_per_dataset)} (the upstream tasks are their sum)")
        config = FewShotRunConfig(run, fewshot).validate()
    except ConfigError as error:
        raise UserError(str(error)) from None
    return FewShotInvocation(config, dry_run, inert)


def parse_few_shot_or_exit(argv: list[str]) -> FewShotInvocation:
    try:
        return parse_few_shot_invocation(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
