"""`train/main.py` as users call it: reference README commands under the deepspeed launcher, errors."""

from __future__ import annotations

import json

import pytest

from tests.helpers.runs import run_main

TII_COMMAND = (
    "cifar100_hideprompt_5e --original_model vit_base_patch16_224 --model vit_base_patch16_224 --batch-size 24 "
    "--data-path ./datasets/ --output_dir ./output/cifar100_sup21k_multi_centroid_mlp_2_seed42 --epochs 20 "
    "--sched constant --seed 42 --train_inference_task_only --lr 0.0005"
).split()
WTP_COMMAND = (
    "cifar100_hideprompt_5e --model vit_base_patch16_224 --original_model vit_base_patch16_224 --batch-size 24 "
    "--epochs 50 --data-path ./datasets --ca_lr 0.005 --crct_epochs 30 --seed 42 --prompt_momentum 0.01 "
    "--reg 0.1 --length 5 --sched step --larger_prompt_lr "
    "--trained_original_model ./output/cifar100_sup21k_multi_centroid_mlp_2_seed42 "
    "--output_dir ./output/cifar100_vit_pe_seed42"
).split()


@pytest.mark.multiprocess
def test_reference_readme_commands_dry_run_under_deepspeed():
    for command, stage in ((TII_COMMAND, "tii"), (WTP_COMMAND, "wtp")):
        done = run_main([*command, "--dry-run"], ranks=1)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.splitlines()  # the launcher logs around our JSON
        config = json.loads("\n".join(lines[lines.index("{"): len(lines) - lines[::-1].index("}")]))
        assert config["stage"] == stage
        assert config["data"]["dataset"] == "Split-CIFAR100" and config["data"]["batch_size"] == 24
    assert config["optim"]["epochs"] == 50 and config["hide"]["contrastive_reg"] == 0.1


@pytest.mark.parametrize("preset", ["imr_hideprompt_5e", "five_datasets_hideprompt_5e", "cub_hideprompt_5e"])
def test_every_reference_preset_dry_runs(preset):
    done = run_main([preset, "--dry-run"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["preset"] == preset


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["cifar100_hideprompt_5e_typo"], "unknown preset 'cifar100_hideprompt_5e_typo'"),
        (["cifar100_hideprompt_5e", "--data-path", "/no/such/folder"], "data path '/no/such/folder' does not exist"),
        (["digits_hideprompt", "--trained_original_model", "/no/stage1"], "is not a finished stage-1 run"),
        (["digits_hideprompt", "optim.lr=abc"], "invalid value 'abc' for 'optim.lr'"),
        (["digits_hideprompt", "optim.nope=1"], "unknown config key 'optim.nope'"),
        (["digits_hideprompt", "--deepspeed_config", "fp64"], "DeepSpeed config 'fp64' not found"),
    ],
)
def test_bad_invocations_end_with_one_clear_message(args, expected):
    done = run_main(args)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
