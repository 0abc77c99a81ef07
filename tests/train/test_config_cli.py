"""Run configuration, presets and the reference-compatible command line."""

import json

import pytest

from train.cli import parse_invocation, parse_or_exit
from train.config import (
    AlignmentConfig,
    BackboneConfig,
    ConfigError,
    OptimConfig,
    PromptConfig,
    RunConfig,
    coerce,
    parse_bool,
    replace_path,
)
from train.errors import UserError
from train.presets import preset, tii_stage

# The two HiDe-Prompt commands of the reference README (after the script name).
STAGE1 = " ".join([
    "cifar100_hideprompt_5e --original_model vit_base_patch16_224 --model vit_base_patch16_224",
    "--batch-size 24 --data-path ./datasets/",
    "--output_dir ./output/cifar100_sup21k_multi_centroid_mlp_2_seed42",
    "--epochs 20 --sched constant --seed 42 --train_inference_task_only --lr 0.0005",
]).split()
STAGE2 = " ".join([
    "cifar100_hideprompt_5e --model vit_base_patch16_224 --original_model vit_base_patch16_224",
    "--batch-size 24 --epochs 50 --data-path ./datasets --ca_lr 0.005 --crct_epochs 30 --seed 42",
    "--prompt_momentum 0.01 --reg 0.1 --length 5 --sched step --larger_prompt_lr",
    "--trained_original_model ./output/cifar100_sup21k_multi_centroid_mlp_2_seed42",
    "--output_dir ./output/cifar100_vit_pe_seed42",
]).split()


def _config(*args: str) -> RunConfig:
    return parse_invocation(["digits_hideprompt", *args]).config


# --- the reference README commands ---------------------------------------------------------------


def test_reference_stage1_command():
    invocation = parse_invocation(STAGE1)
    config = invocation.config
    assert config.stage == "tii"
    assert config.optim.lr == pytest.approx(0.0005)
    assert config.optim.epochs == 20
    assert config.optim.sched == "constant"
    assert config.data.batch_size == 24
    assert config.data.dataset == "Split-CIFAR100"
    assert config.data.num_tasks == 10
    assert config.data.data_path == "./datasets/"
    assert config.alignment.mlp_structure == (2,)
    assert config.seed == 42
    assert config.output_dir == "./output/cifar100_sup21k_multi_centroid_mlp_2_seed42"
    assert config.backbone.model == config.backbone.original_model == "vit_base_patch16_224"
    assert invocation.inert == ()
    assert invocation.dry_run is False


def test_reference_stage2_command():
    config = parse_invocation(STAGE2).config
    assert config.stage == "wtp"
    assert config.data.dataset == "Split-CIFAR100"
    assert config.data.batch_size == 24
    assert config.data.data_path == "./datasets"
    assert config.optim.epochs == 50
    assert config.optim.sched == "step"
    assert config.optim.lr == pytest.approx(0.03)  # preset default, not given on the command line
    assert config.alignment.ca_lr == pytest.approx(0.005)
    assert config.alignment.crct_epochs == 30
    assert config.seed == 42
    assert config.prompt.prompt_momentum == pytest.approx(0.01)
    assert config.hide.contrastive_reg == pytest.approx(0.1)
    assert config.prompt.length == 5
    assert config.prompt.larger_prompt_lr is True
    assert config.trained_original_model == "./output/cifar100_sup21k_multi_centroid_mlp_2_seed42"
    assert config.output_dir == "./output/cifar100_vit_pe_seed42"


def test_launcher_added_flags_are_accepted():
    plain = parse_invocation(STAGE2)
    launched = parse_invocation([*STAGE2, "--local_rank=0", "--master_port=29501"])
    assert launched.config == plain.config
    assert launched.inert == ("--master_port",)
    assert parse_invocation(["--local_rank=1", *STAGE1]).config == parse_invocation(STAGE1).config


# --- presets ---------------------------------------------------------------------------------------


def test_five_datasets_preset_defaults():
    config = preset("five_datasets_hideprompt_5e")
    assert config.data.dataset == "5-datasets"
    assert config.data.num_tasks == 5
    assert config.data.batch_size == 16
    assert config.prompt.length == 40
    assert config.adapter.batchwise_selection is False  # the reference's True is a quirk switch, off by default
    assert config.hide.contrastive_reg == 0.0
    assert config.alignment.mlp_structure == (4, 4)
    assert config.optim.sched == "constant"
    assert config.optim.warmup_epochs == 5


def test_cub_and_imr_preset_defaults():
    cub, imr = preset("cub_hideprompt_5e"), preset("imr_hideprompt_5e")
    assert cub.data.dataset == "Split-CUB200"
    assert imr.data.dataset == "Split-Imagenet-R"
    assert imr.prompt.prompt_momentum == 0
    assert preset("cifar100_hideprompt_5e").prompt.prompt_momentum == pytest.approx(0.01)
    for config in (cub, imr):
        assert config.data.num_tasks == 10
        assert config.optim.sched == "step"
        assert config.alignment.mlp_structure == (2,)


def test_preset_name_is_recorded():
    assert preset("imr_hideprompt_5e").preset == "imr_hideprompt_5e"


def test_tii_stage_swaps_in_the_stage1_optimiser():
    config = preset("digits_hideprompt")
    stage1 = tii_stage(config)
    assert stage1.stage == "tii"
    assert stage1.optim == config.tii_optim
    assert preset("digits_hideprompt_tii").optim == config.tii_optim


def test_unknown_preset_raises_user_error_naming_it():
    with pytest.raises(UserError, match="no_such_preset"):
        parse_invocation(["no_such_preset"])


# --- flags and overrides ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("False", False), ("True", True), ("false", False), ("0", False)])
def test_task_inc_parses_booleans_properly(text, expected):
    """The reference's `type=bool` turns the string 'False' into True; here it means False."""
    assert _config("--task_inc", text).data.task_inc is expected


def test_key_value_overrides():
    config = _config("optim.lr=0.1", "alignment.mlp_structure=4,4", "prompt.kv_reshape_official=true")
    assert config.optim.lr == pytest.approx(0.1)
    assert config.alignment.mlp_structure == (4, 4)
    assert config.prompt.kv_reshape_official is True


def test_list_flags_take_several_values():
    config = _config("--original_model_mlp_structure", "4", "4", "--opt-betas", "0.8", "0.99",
                     "--e_prompt_layer_idx", "0", "1", "2")
    assert config.alignment.mlp_structure == (4, 4)
    assert config.optim.opt_betas == pytest.approx((0.8, 0.99))
    assert config.prompt.layers == (0, 1, 2)


def test_switches_and_aliases():
    config = _config("--not_train_ca", "--resume", "--dr", "0.5", "--weight_decay", "0.01")
    assert config.alignment.not_train_ca is True
    assert config.resume is True
    assert config.optim.decay_rate == pytest.approx(0.5)
    assert config.optim.weight_decay == pytest.approx(0.01)


def test_flags_override_preset_values_and_leave_the_rest():
    base, changed = preset("digits_hideprompt"), _config("--epochs", "3")
    assert changed.optim.epochs == 3
    assert changed.optim.lr == base.optim.lr
    assert changed.data == base.data


def test_dry_run_flag():
    assert parse_invocation(["digits_hideprompt", "--dry-run"]).dry_run is True


@pytest.mark.parametrize("argv, named", [
    (["optim.no_such_key=1"], "no_such_key"),
    (["no_such_section.lr=1"], "no_such_section"),
    (["--sched", "linear"], "linear"),
    (["--task_inc", "maybe"], "maybe"),
    (["data.batch_size=0"], "batch size"),
    (["prompt.prompt_momentum=1.5"], "prompt_momentum"),
    (["--num_tasks", "20"], "num_tasks"),
    (["--model", "vit_base_patch16_224"], "--original_model"),
])
def test_invalid_configuration_raises_user_error_naming_the_problem(argv, named):
    with pytest.raises(UserError, match=named):
        parse_invocation(["digits_hideprompt", *argv])


@pytest.mark.parametrize("argv, named", [(["optim.lr=abc"], "abc"), (["--epochs", "five"], "five")])
def test_non_numeric_value_raises_user_error_naming_it(argv, named):
    with pytest.raises(UserError, match=named):
        parse_invocation(["digits_hideprompt", *argv])


def test_unknown_forgetting_convention_is_rejected():
    with pytest.raises(UserError, match="bogus"):
        parse_invocation(["digits_hideprompt", "--forgetting", "bogus"])


def test_unknown_flag_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_invocation(["digits_hideprompt", "--no-such-flag"])
    assert exit_info.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_parse_or_exit_turns_user_error_into_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_or_exit(["no_such_preset"])
    assert exit_info.value.code == 2
    assert "no_such_preset" in capsys.readouterr().err


def test_inert_reference_flags_are_reported():
    argv = ["digits_hideprompt", "--smoothing", "0.1", "--pin-mem", "--drop-path", "0.0"]
    invocation = parse_invocation(argv)
    assert invocation.inert == ("--drop-path", "--pin-mem", "--smoothing")
    assert invocation.config == preset("digits_hideprompt")


# --- config dataclasses ----------------------------------------------------------------------------


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def test_to_json_round_trips():
    config = parse_invocation(STAGE2).config
    loaded = json.loads(config.to_json())
    assert loaded == _lists(config.to_dict())
    assert loaded["optim"]["epochs"] == 50
    assert loaded["alignment"]["mlp_structure"] == [2]
    assert loaded["trained_original_model"] == "./output/cifar100_sup21k_multi_centroid_mlp_2_seed42"


def test_replace_path_reaches_nested_fields_without_mutating():
    config = RunConfig()
    changed = replace_path(config, "prompt.length", "7")
    assert changed.prompt.length == 7
    assert config.prompt.length == 5
    with pytest.raises(ConfigError, match="has no sub-keys"):
        replace_path(config, "seed.value", "1")


def test_coerce_follows_the_current_type():
    assert coerce("3", 1) == 3 and isinstance(coerce("3", 1), int)
    assert coerce("0.5", 1.0) == 0.5
    assert coerce("4 4", (2,)) == (4, 4)
    assert coerce(["0.8", "0.9"], (0.9, 0.999)) == (0.8, 0.9)
    assert coerce("off", True) is False
    assert coerce("true", None) is True
    assert coerce("step", "constant") == "step"


def test_parse_bool_rejects_other_words():
    assert parse_bool(" YES ") is True
    with pytest.raises(ConfigError, match="perhaps"):
        parse_bool("perhaps")


def test_dataclass_validation():
    with pytest.raises(ConfigError, match="original_model"):
        RunConfig(backbone=BackboneConfig(model="a", original_model="b")).validate()
    with pytest.raises(ConfigError, match="lr"):
        OptimConfig(lr=0)
    with pytest.raises(ConfigError, match="prompt_momentum"):
        PromptConfig(prompt_momentum=1.0)
    with pytest.raises(ConfigError, match="statistics method"):
        AlignmentConfig(ca_storage_efficient_method="median")
    with pytest.raises(ConfigError, match="stage"):
        RunConfig(stage="both")


def test_scaled_lr():
    assert OptimConfig(lr=0.03).scaled_lr(24) == pytest.approx(0.03 * 24 / 256)
    assert OptimConfig(lr=0.03, unscale_lr=False).scaled_lr(24) == pytest.approx(0.03)


def test_cross_field_overrides_apply_in_any_order():
    config = parse_invocation(["digits_hideprompt", "data.num_tasks=10", "adapter.slots=10"]).config
    assert (config.data.num_tasks, config.adapter.slots) == (10, 10)


def test_prompt_pool_smaller_than_task_count_is_rejected():
    with pytest.raises(UserError, match=r"adapter.slots 5 is smaller than num_tasks 10 \(--size\)"):
        parse_invocation(["digits_hideprompt", "data.num_tasks=10"])


# --- the baselines' reference commands (README) and repaired reference bugs -------------------------

BASELINE_COMMANDS = {
    "cifar100_l2p": "--epochs 5",
    "cifar100_sprompt_5e": "--epochs 40",
    "cifar100_dualprompt": "--epochs 40",
}


@pytest.mark.parametrize("name", BASELINE_COMMANDS)
def test_reference_readme_baseline_commands_resolve(name):
    argv = [name, "--model", "vit_base_patch16_224", "--original_model", "vit_base_patch16_224", "--batch-size",
            "24", "--data-path", "./datasets", "--output_dir", "./output", "--seed", "42",
            *BASELINE_COMMANDS[name].split()]
    config = parse_invocation(argv).config
    assert config.method == {"cifar100_l2p": "l2p", "cifar100_sprompt_5e": "sprompt",
                             "cifar100_dualprompt": "dualprompt"}[name]
    assert config.optim.epochs == int(BASELINE_COMMANDS[name].split()[1])


def test_reference_readme_lora_commands_resolve_including_the_broken_ones():
    common = ["--model", "vit_base_patch16_224", "--original_model", "vit_base_patch16_224", "--batch-size", "24",
              "--data-path", "/home/x/data", "--seed", "42", "--epochs", "20", "--lr", "0.01", "--num_tasks", "10",
              "--lora_rank", "8"]
    lora = parse_invocation(["cifar100_continual_lora", *common, "--output_dir", "o/cl", "--lora_type",
                             "continual"]).config
    hide = parse_invocation(["cifar100_hidelora", *common, "--output_dir", "o/h", "--lora_type", "hide",
                             "--trained_original_model", "o/cl"]).config
    assert (lora.method, lora.lora.rank, lora.optim.lr, lora.optim.clip_grad) == ("continual_lora", 8, 0.01, 2.0)
    assert (hide.method, hide.trained_original_model) == ("hidelora", "o/cl")
    assert hide.lora.lora_momentum == 0.1  # missing from the reference config: its script's value
    assert preset("imr_hidelora").data.dataset == "Split-Imagenet-R"  # the reference's default is invalid
    assert parse_invocation(["imr_dualprompt", "--original_model", "vit_base_patch16_224"]).config  # flag exists


@pytest.mark.parametrize("name", [f"{d}_{m}" for d in ("cifar100", "imr", "five_datasets", "cub")
                                  for m in ("l2p", "dualprompt", "sprompt_5e")])
def test_key_query_presets_follow_the_reference_configs(name):
    config = preset(name)
    five, imr = name.startswith("five"), name.startswith("imr")
    assert config.data.batch_size == (16 if five else 24)
    assert config.optim.lr == (0.005 if imr else 0.03) and config.optim.epochs == (50 if imr else 5)
    assert config.adapter.batchwise_selection is False  # reference quirk, off by default
    if "l2p" in name:
        assert (config.prompt.layers, config.prompt.top_k) == ((0,), 4)
        assert (config.adapter.slots, config.prompt.length) == ((20, 10) if five else (10, 5))
        assert config.prompt.pull_constraint_coeff == (0.5 if five else 0.1)
    else:
        assert config.prompt.length == (40 if five else 20) and config.prompt.top_k == 1
        assert config.prompt.layers == ((2, 3, 4) if "dualprompt" in name else (0, 1, 2, 3, 4))
