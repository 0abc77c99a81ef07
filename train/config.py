"""Typed, frozen run configuration; validated on creation, serialised into checkpoints and results."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .backbones.registry import MOCOV3_BACKBONE

Stage = Literal["tii", "wtp"]
Schedule = Literal["constant", "step", "cosine"]
StatsMethod = Literal["multi-centroid", "covariance", "variance"]
Forgetting = Literal["textbook", "reference"]


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "Split-Digits"
    data_path: str = "./datasets"
    num_tasks: int = 5
    shuffle: bool = False  # shuffle the class order (seeded); the reference keeps the native order
    batch_size: int = 24  # per rank
    num_workers: int = 0
    train_mask: bool = True  # mask other tasks' logits in training losses
    task_inc: bool = False  # task-incremental evaluation (mask logits to the evaluated task)
    reference_normalization: bool = False  # the reference's: none (CIFAR: CIFAR-100 stats), not the backbone's
    five_datasets_transform_leak: bool = False  # the reference's CIFAR transform for notMNIST and Fashion-MNIST
    download: bool = False  # fetch missing CIFAR/MNIST/Fashion-MNIST/SVHN files with torchvision (--download)
    # ImageFolder (train/data/folder.py): one more task per folder of <class>/<image> after the data path's tasks
    extra_task_dirs: tuple[str, ...] = ()
    skip_bad_images: bool = False  # leave unreadable images out (listed) instead of failing (--skip-bad-images)
    test_fraction: float = 0.2  # test share of each class in task folders without their own train/test split
    split_seed: int = 0  # that split's seed: fixed, not --seed, so every stage and rerun splits alike
    merge_tasks: bool = False  # ImageFolder: every task folder's classes as one task (the joint upper bound)

    def __post_init__(self) -> None:
        _check(self.num_tasks >= 1, "num_tasks must be at least 1")
        _check(self.batch_size >= 1, "batch size must be at least 1")
        _check(0 < self.test_fraction < 1, "test_fraction must be between 0 and 1 (exclusive)")


@dataclass(frozen=True)
class BackboneConfig:
    model: str = "vit_glyph_patch8_32"  # instructed model (prompts/LoRA)
    original_model: str = "vit_glyph_patch8_32"  # uninstructed model (task-identity inference)
    checkpoint: str = ""  # local pretrained weights, or a timm hub name (hf-hub:..., timm:...); empty = default file
    mocov3_reference_norm: bool = False  # the reference's MoCo v3 build: no final norm (checkpoint's norm dropped)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.03
    unscale_lr: bool = True  # lr ← lr · batch_size / 256 (per-rank batch, as the reference)
    epochs: int = 5
    sched: Schedule = "constant"
    decay_epochs: float = 30
    decay_rate: float = 0.1
    warmup_epochs: int = 0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    clip_grad: float = 1.0
    weight_decay: float = 0.0
    opt_betas: tuple[float, float] = (0.9, 0.999)
    opt_eps: float = 1e-8
    scheduler_lag_official: bool = False  # reference steps the scheduler after the epoch: one-epoch lag

    def __post_init__(self) -> None:
        _check(self.lr > 0, "lr must be positive")
        _check(self.epochs >= 1, "epochs must be at least 1")
        _check(self.sched in ("constant", "step", "cosine"), f"unknown scheduler '{self.sched}'")

    def scaled_lr(self, batch_size: int) -> float:
        return self.lr * batch_size / 256.0 if self.unscale_lr else self.lr


# Each method reads the sections of what it is built from (docs/training.md#configuration): `adapter` (every
# method with a slot pool), `prompt` (HiDe-Prompt, L2P, DualPrompt, S-Prompt), `lora` (HiDe-LoRA, Continual-LoRA),
# `hide` and `alignment` (HiDe-Prompt, HiDe-LoRA and HiDe's stage 1).
@dataclass(frozen=True)
class AdapterConfig:
    """The slots of the parameter-efficient module (a prompt pool or a LoRA pool) and how a batch picks them."""

    slots: int = 10  # pool size (HiDe-Prompt, HiDe-LoRA, S-Prompt, DualPrompt: one slot per task; L2P: shared)
    # Every sample of a batch gets the batch's majority choice (a reference quirk): the most-chosen prompts of
    # key matching (L2P, DualPrompt, S-Prompt) or the most frequent routed task (HiDe-Prompt, HiDe-LoRA).
    batchwise_selection: bool = False

    def __post_init__(self) -> None:
        _check(self.slots >= 1, "adapter.slots must be at least 1 (--size)")


@dataclass(frozen=True)
class PromptConfig:
    length: int = 5
    layers: tuple[int, ...] = (0, 1, 2, 3, 4)  # blocks with (E-)prompts
    top_k: int = 1  # prompts selected per sample by key matching (L2P: 4)
    pull_constraint_coeff: float = 1.0  # weight of the key-query pull constraint (L2P, DualPrompt, S-Prompt)
    g_prompt_length: int = 5  # DualPrompt's shared G-prompt
    g_prompt_layers: tuple[int, ...] = (0, 1)
    prompt_momentum: float = 0.0  # HiDe-Prompt: ensemble the task's prompt with the older slots
    larger_prompt_lr: bool = False  # HiDe-Prompt: prompts at lr, everything else at 0.1·lr
    kv_reshape_official: bool = False  # reproduce the reference's key/value reshape quirk

    def __post_init__(self) -> None:
        _check(self.length >= 1, "prompt length must be at least 1")
        _check(self.top_k >= 1, "top_k must be at least 1")
        _check(0 <= self.prompt_momentum < 1, "prompt_momentum must be in [0, 1)")


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 4
    depth: int = 5  # LoRA on the key/value projections of blocks 0..depth-1
    alpha: float = 1.0  # scaling alpha / rank
    lora_momentum: float = 0.0  # HiDe-LoRA: average the task's factors with the older slots after the task
    official_a_init: bool = False  # reference A init U(±1/√r) instead of standard LoRA's U(±1/√D)

    def __post_init__(self) -> None:
        _check(self.rank >= 1, "lora rank must be at least 1")
        _check(0 <= self.lora_momentum < 1, "lora_momentum must be in [0, 1)")


@dataclass(frozen=True)
class HideConfig:
    """HiDe's stage-2 training (HiDe-Prompt and HiDe-LoRA)."""

    contrastive_reg: float = 0.01  # weight of the contrastive regularisation against old classes' centroids


@dataclass(frozen=True)
class AlignmentConfig:
    ca_lr: float = 0.005
    crct_epochs: int = 30
    ca_storage_efficient_method: StatsMethod = "multi-centroid"
    n_centroids: int = 10
    not_train_ca: bool = False
    ca_lr_scaled: bool | None = None  # scale ca_lr by batch/256; None = reference (TII yes, WTP no)
    mlp_structure: tuple[int, ...] = (2,)  # TII residual MLP, hidden sizes as multiples of the width
    # Task routing from uninstructed features: the reference's trained MLP, class Gaussians with a shared shrunk
    # covariance (lda), nearest class mean (ncm), or the mean of mlp's and lda's probabilities (ensemble).
    router: Literal["mlp", "lda", "ncm", "ensemble"] = "mlp"
    router_shrinkage: float = 0.5  # lda: weight of the identity target in the shared covariance
    # The final answer among the seen classes (the reference) or only the routed task's classes: the task's
    # prompts/LoRA were trained to tell that task's classes apart, so a routed sample answers within its task.
    answer_scope: Literal["seen", "routed_task"] = "seen"

    def __post_init__(self) -> None:
        _check(self.n_centroids >= 1, "n_centroids must be at least 1")
        _check(self.ca_storage_efficient_method in ("multi-centroid", "covariance", "variance"),
               f"unknown statistics method '{self.ca_storage_efficient_method}'")
        _check(self.router in ("mlp", "lda", "ncm", "ensemble"),
               f"unknown router '{self.router}': use mlp, lda, ncm or ensemble")
        _check(0.0 <= self.router_shrinkage <= 1.0, "router_shrinkage must be within [0, 1]")
        _check(self.answer_scope in ("seen", "routed_task"),
               f"unknown answer_scope '{self.answer_scope}': use seen or routed_task")


@dataclass(frozen=True)
class RunConfig:
    preset: str = "digits_hideprompt"
    method: str = "hideprompt"
    stage: Stage = "wtp"  # "tii": stage 1 only (--train_inference_task_only)
    seed: int = 42
    output_dir: str = "./output"
    trained_original_model: str = ""  # stage-1 output dir; empty = run stage 1 into <output_dir>/tii
    deepspeed_config: str = "fp32"  # a name in ds_configs/ or a path
    forgetting: Forgetting = "textbook"
    resume: bool = False
    until_task: int = 0  # stop after this task (1-based; 0 = every task): with resume, learn the next task(s)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tii_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.0005, epochs=20))
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    hide: HideConfig = field(default_factory=HideConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)

    def __post_init__(self) -> None:
        _check(self.stage in ("tii", "wtp"), f"unknown stage '{self.stage}'")
        _check(self.forgetting in ("textbook", "reference"),
               f"unknown forgetting convention '{self.forgetting}' (textbook or reference)")

    def validate(self) -> RunConfig:
        """Checks across sections, once all overrides are applied (each may be given in any order)."""
        _check(self.backbone.model == self.backbone.original_model,
               "--model and --original_model must name the same pretrained backbone (they share it)")
        _check(not self.backbone.mocov3_reference_norm or self.backbone.model == MOCOV3_BACKBONE,
               f"--mocov3_reference_norm reproduces the reference's MoCo v3 build: it needs --model {MOCOV3_BACKBONE}")
        _check(0 <= self.until_task <= self.data.num_tasks,
               f"--until_task {self.until_task} is outside 1..{self.data.num_tasks} (0 = every task)")
        _check(self.adapter.slots >= self.data.num_tasks,
               f"adapter.slots {self.adapter.slots} is smaller than num_tasks {self.data.num_tasks} (--size)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The config a checkpoint recorded (`to_dict` output, of this or an earlier layout: see MOVED_KEYS);
        keys it lacks keep their defaults."""
        return _from_dict(cls, migrated_layout(data))


# Keys that moved when every method got its own section: old dotted key → new one. Recorded configs of the old
# layout load as the new one (`RunConfig.from_dict`), and old `key=value` overrides still work, with a notice.
MOVED_KEYS = {
    "prompt.size": "adapter.slots",
    "prompt.batchwise_prompt": "adapter.batchwise_selection",
    "prompt.reg": "hide.contrastive_reg",
}


def migrated_layout(data: dict[str, Any]) -> dict[str, Any]:
    """A recorded config dict with every old key of MOVED_KEYS at its new place (a new key given wins)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        if old_name in data.get(old_section, {}):
            value = data[old_section].pop(old_name)
            data.setdefault(new_section, {}).setdefault(new_name, value)
    return data


def current_key(dotted: str) -> str:
    """The key an override names now; an old key (MOVED_KEYS) gets a one-line notice on stderr."""
    if dotted not in MOVED_KEYS:
        return dotted
    print(f"note: config key '{dotted}' is now '{MOVED_KEYS[dotted]}' (the old key still works)", file=sys.stderr)
    return MOVED_KEYS[dotted]


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    values = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        value = data[f.name]
        if dataclasses.is_dataclass(default):
            value = _from_dict(type(default), value)
        elif isinstance(default, tuple) or isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def replace_path(config: Any, dotted: str, value: Any, _parent: str = "") -> Any:
    """`replace(config, a.b=value)` for nested frozen dataclasses, with the value coerced to the field type."""
    if isinstance(config, RunConfig):
        dotted = current_key(dotted)
    head, _, rest = dotted.partition(".")
    full = f"{_parent}{dotted}"
    names = {f.name for f in fields(config)}
    if head not in names:
        raise ConfigError(f"unknown config key '{full}'. Keys here: {', '.join(sorted(names))}")
    current = getattr(config, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"'{_parent}{head}' has no sub-keys (got '{full}')")
        return dataclasses.replace(config, **{head: replace_path(current, rest, value, f"{_parent}{head}.")})
    if current == () and "tuple[str" in str(next(f.type for f in fields(config) if f.name == head)):
        current = ("",)  # an empty tuple of strings: coerce items as strings, not as numbers
    try:
        return dataclasses.replace(config, **{head: coerce(value, current)})
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid value '{value}' for '{full}' ({error})") from None


def coerce(value: Any, like: Any) -> Any:
    """Turn a command-line string into the type of the current value `like`."""
    if isinstance(value, list):  # nargs="+" flags
        value = " ".join(value)
    if not isinstance(value, str):
        return value
    if isinstance(like, bool) or like is None and value.lower() in ("true", "false"):
        return parse_bool(value)
    if isinstance(like, tuple):
        items = [v for v in value.replace(",", " ").split() if v]
        kind = type(like[0]) if like else int
        return tuple(kind(v) for v in items)
    if isinstance(like, (int, float)):
        return type(like)(value)
    return value


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"'{value}' is not a boolean (use True or False)")


FewShotBackbone = Literal["vanilla", "shared", "vanilla+shared"]
FEW_SHOT_BACKBONES = ("vanilla", "shared", "vanilla+shared")


@dataclass(frozen=True)
class FewShotConfig:
    """The few-shot LoRA study (`train/fsl.py`): upstream continual data, the stages to run, the episodes.

    Upstream dataset i keeps its classes `0..continual_i-1` (native labels) for continual learning, offset
    behind the previous datasets' continual classes; its classes `continual_i..continual_i+few_shot_i-1` are
    held out. Episodes draw `num_ways` classes from `few_class_idx` (native labels of dataset
    `few_shot_dataset_idx`, all held out).
    """

    datasets: tuple[str, ...] = ("Split-Imagenet-R",)
    continual_classes_per_dataset: tuple[int, ...] = (160,)
    few_shot_classes_per_dataset: tuple[int, ...] = (40,)
    tasks_per_dataset: tuple[int, ...] = (8,)
    train_vanilla: bool = False
    train_shared: bool = False
    train_few_shot: bool = False
    vanilla_model_output_dir: str = "./output/vanilla_model"
    shared_model_output_dir: str = "./output/shared_model"
    shared_lora_lr_scale: float = 0.1  # the shared model's LoRA learns at 0.1·lr, its head at lr (as the reference)
    fs_backbone: tuple[str, ...] = ("shared",)  # one or more of FEW_SHOT_BACKBONES, run in turn
    few_shot_dataset_idx: int = 0
    few_class_idx: tuple[int, ...] = (160, 161, 162, 163, 164)
    num_ways: int = 5
    num_shots: int = 5
    num_queries: int = 100  # per class, at most the test images available
    num_episodes: int = 100
    num_fs_epochs: int = 20
    fs_lr: float = 0.001

    def __post_init__(self) -> None:
        for name in ("num_shots", "num_queries", "num_episodes", "num_fs_epochs"):
            _check(getattr(self, name) >= 1, f"--{name} must be at least 1")
        _check(self.fs_lr > 0 and self.shared_lora_lr_scale > 0, "--fs_lr and shared_lora_lr_scale must be positive")
        _check(bool(self.fs_backbone) and all(b in FEW_SHOT_BACKBONES for b in self.fs_backbone),
               f"--fs_backbone must be among {', '.join(FEW_SHOT_BACKBONES)} (got {list(self.fs_backbone)})")

    def validate(self) -> FewShotConfig:
        """Checks across fields, once all flags are applied (each may be given in any order)."""
        n = len(self.datasets)
        _check(n >= 1, "--datasets needs at least one dataset")
        for name in ("continual_classes_per_dataset", "few_shot_classes_per_dataset", "tasks_per_dataset"):
            _check(len(getattr(self, name)) == n, f"--{name} needs one value per dataset ({n}: {list(self.datasets)})")
        _check(all(c >= t >= 1 for c, t in zip(self.continual_classes_per_dataset, self.tasks_per_dataset)),
               "every dataset needs at least one task and at least one continual class per task")
        _check(0 <= self.few_shot_dataset_idx < n, f"--few_shot_dataset_idx must index --datasets (0..{n - 1})")
        held_out = range(self.continual_classes_per_dataset[self.few_shot_dataset_idx],
                         self.continual_classes_per_dataset[self.few_shot_dataset_idx]
                         + self.few_shot_classes_per_dataset[self.few_shot_dataset_idx])
        outside = [c for c in self.few_class_idx if c not in held_out]
        _check(not outside, f"--few_class_idx {outside} are not held-out classes of "
               f"{self.datasets[self.few_shot_dataset_idx]} ({held_out.start}..{held_out.stop - 1})")
        _check(len(set(self.few_class_idx)) == len(self.few_class_idx), "--few_class_idx has duplicates")
        _check(2 <= self.num_ways <= len(self.few_class_idx),
               f"--num_ways {self.num_ways} must be between 2 and the {len(self.few_class_idx)} --few_class_idx")
        return self

    @property
    def num_upstream_tasks(self) -> int:
        return sum(self.tasks_per_dataset)


@dataclass(frozen=True)
class FewShotRunConfig:
    """A few-shot LoRA invocation: the run settings of the upstream stages (`run`) and the study (`fewshot`)."""

    run: RunConfig = field(default_factory=RunConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)

    def validate(self) -> FewShotRunConfig:
        """The upstream task count follows `tasks_per_dataset` (the reference overwrites --num_tasks too)."""
        fewshot = self.fewshot.validate()
        tasks = fewshot.num_upstream_tasks
        data = dataclasses.replace(self.run.data, num_tasks=tasks, dataset=fewshot.datasets[0])
        adapter = dataclasses.replace(self.run.adapter, slots=max(self.run.adapter.slots, tasks))
        run = dataclasses.replace(self.run, data=data, adapter=adapter).validate()
        return dataclasses.replace(self, run=run)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
