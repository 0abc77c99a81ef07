"""Named presets: every reference HiDe-Prompt config with its defaults, and the embedded benchmark.

Reference presets carry the defaults of the reference `configs/<name>.py` (flags on the command line
override them exactly as in the reference). `tii_optim` holds the stage-1 settings of the reference
scripts, used when stage 2 runs stage 1 itself (no `--trained_original_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .config import AlignmentConfig, BackboneConfig, DataConfig, OptimConfig, PromptConfig, RunConfig
from .errors import UserError

_VIT_B = BackboneConfig(model="vit_base_patch16_224", original_model="vit_base_patch16_224")


def _reference_hideprompt(
    name: str, dataset: str, num_tasks: int = 10, batch: int = 24, sched: str = "step", warmup: int = 0,
    length: int = 20, momentum: float = 0.0, reg: float = 0.01, mlp: tuple[int, ...] = (2,),
    batchwise: bool = False, tii_lr: float = 0.0005,
) -> RunConfig:
    return RunConfig(
        preset=name,
        output_dir="./output",
        data=DataConfig(dataset=dataset, data_path="/local_datasets/", num_tasks=num_tasks, batch_size=batch,
                        num_workers=4),
        backbone=_VIT_B,
        optim=OptimConfig(lr=0.03, epochs=5, sched=sched, warmup_epochs=warmup),
        tii_optim=OptimConfig(lr=tii_lr, epochs=20, sched="constant"),
        prompt=PromptConfig(length=length, size=num_tasks, prompt_momentum=momentum, reg=reg,
                            batchwise_prompt=batchwise),
        alignment=AlignmentConfig(mlp_structure=mlp),
    )


def _digits_hideprompt(name: str) -> RunConfig:
    """HiDe-Prompt on Split-Digits with the embedded glyph-pretrained ViT: minutes on 2 CPU cores."""
    return RunConfig(
        preset=name,
        output_dir="./output/digits_hideprompt",
        data=DataConfig(dataset="Split-Digits", num_tasks=5, batch_size=32),
        optim=OptimConfig(lr=0.2, epochs=10, sched="constant"),
        tii_optim=OptimConfig(lr=0.01, epochs=10, sched="constant"),
        prompt=PromptConfig(length=5, size=5, prompt_momentum=0.01, reg=0.1, larger_prompt_lr=True),
        # small 128-d features: the same, larger alignment lr in both stages
        alignment=AlignmentConfig(ca_lr=0.1, ca_lr_scaled=False, crct_epochs=30, n_centroids=10),
    )


PRESETS: dict[str, Callable[[str], RunConfig]] = {
    "cifar100_hideprompt_5e": lambda n: _reference_hideprompt(n, "Split-CIFAR100", momentum=0.01),
    "imr_hideprompt_5e": lambda n: _reference_hideprompt(n, "Split-Imagenet-R"),
    "five_datasets_hideprompt_5e": lambda n: _reference_hideprompt(
        n, "5-datasets", num_tasks=5, batch=16, sched="constant", warmup=5, length=40, reg=0.0, mlp=(4, 4),
        batchwise=True, tii_lr=0.001,
    ),
    "cub_hideprompt_5e": lambda n: _reference_hideprompt(n, "Split-CUB200", tii_lr=0.01),
    "digits_hideprompt": _digits_hideprompt,
    "digits_hideprompt_tii": lambda n: tii_stage(_digits_hideprompt(n), n),
}


def tii_stage(config: RunConfig, name: str | None = None) -> RunConfig:
    """The stage-1 run of a HiDe pipeline: the stage-1 optimiser settings, stage "tii"."""
    return replace(config, preset=name or config.preset, stage="tii", optim=config.tii_optim)


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'. Presets: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name](name)
