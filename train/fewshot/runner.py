"""The few-shot stage (`--train_few_shot`): episodes on the held-out classes with each `--fs_backbone`.

Per episode: the backbone is the frozen pretrained ViT (`vanilla`), or that ViT with one upstream LoRA slot
merged into its qkv weights (`shared`: the few-shot dataset's slot; `vanilla+shared`: the slot the vanilla
model's majority vote over the support images picks), both from the final checkpoints of the upstream runs;
then a fresh linear head is fitted on the support set and scored on the queries. Episodes are spread over the
ranks round robin and recorded one file each; rank 0 summarises them into `<output_dir>/results.json`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from contract.files import file_sha256

from .. import checkpoint
from ..backbones.registry import backbone_spec
from ..backbones.vit import cls_features
from ..config import FewShotRunConfig
from ..data.registry import ContinualData
from ..distributed import DistContext, barrier
from ..engine import seed_everything
from ..errors import UserError
from ..peft.lora import merge_lora
from ..report import RunLog
from ..trained import check_backbone, task_checkpoint
from ..weights import LoadedBackbone, load_backbone
from . import records
from .data import UpstreamLayout, load_member
from .episode import accuracy, fit_head, majority_slot
from .results import write_study_results
from .sampling import Episode, episodes_of_rank, sample_episode
from .summary import summarize
from .upstream import check_finished

SOURCES = {"vanilla": (), "shared": ("shared",), "vanilla+shared": ("vanilla", "shared")}  # upstream runs used


@dataclass(frozen=True)
class Upstream:
    """What the episodes take from the upstream runs: the final vanilla head and shared LoRA factors."""

    router: torch.nn.Linear | None  # vanilla head over the upstream classes
    lora_a: torch.Tensor | None  # (2, slots, L, D, r)
    lora_b: torch.Tensor | None
    scaling: float
    class_to_slot: torch.Tensor
    sources: dict[str, str]  # checkpoint file → SHA-256, part of every record's fingerprint


def _final_learned(output_dir: str, num_tasks: int, stage: str, backbone: LoadedBackbone) -> tuple[dict, str]:
    check_finished(output_dir, num_tasks, stage)
    # after every upstream task (the reference reads task{tasks_per_dataset[0]}: see README)
    saved = task_checkpoint(output_dir, num_tasks - 1)
    check_backbone(saved, backbone, f"train the {stage} model with the same --model and weights as this run")
    return saved.learned(), file_sha256(saved.folder / checkpoint.LEARNED)


def load_upstream(config: FewShotRunConfig, backbone: LoadedBackbone) -> Upstream:
    fewshot, layout = config.fewshot, UpstreamLayout.of(config.fewshot)
    needs = set(fewshot.fs_backbone)
    router = a = b = None
    sources: dict[str, str] = {}
    if needs & {"vanilla", "vanilla+shared"}:
        learned, sources["vanilla"] = _final_learned(fewshot.vanilla_model_output_dir, fewshot.num_upstream_tasks,
                                                     "vanilla", backbone)
        router = torch.nn.Linear(*reversed(learned["head.weight"].shape))
        router.load_state_dict({"weight": learned["head.weight"], "bias": learned["head.bias"]})
    if needs & {"shared", "vanilla+shared"}:
        learned, sources["shared"] = _final_learned(fewshot.shared_model_output_dir, fewshot.num_upstream_tasks,
                                                    "shared", backbone)
        a, b = learned["lora.a"], learned["lora.b"]
    lora = config.run.lora
    return Upstream(router, a, b, lora.alpha / lora.rank, layout.class_to_dataset(), sources)


def _images(dataset: Dataset, indices: list[int]) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in indices])


@torch.no_grad()
def _features(vit, images: torch.Tensor, ctx: DistContext, batch: int = 256) -> torch.Tensor:
    return torch.cat([cls_features(vit, chunk.to(ctx.device)) for chunk in images.split(batch)])


class FrozenFeatures:
    """The backbone of each slot (`None`: the plain pretrained one; k: LoRA slot k merged into it) and the
    features of images seen through it without random augmentation, each computed once for all episodes. The
    merge is deterministic, so merging once per slot gives every episode the same weights as merging per
    episode would."""

    def __init__(self, backbone: LoadedBackbone, upstream: Upstream, ctx: DistContext):
        self.backbone, self.upstream, self.ctx = backbone, upstream, ctx
        self.vits: dict[int | None, torch.nn.Module] = {None: backbone.vit}
        self.cache: dict[tuple, torch.Tensor] = {}

    def vit(self, slot: int | None) -> torch.nn.Module:
        if slot not in self.vits:
            u = self.upstream
            self.vits[slot] = merge_lora(self.backbone.vit, u.lora_a[:, slot], u.lora_b[:, slot], u.scaling)
        return self.vits[slot]

    def of(self, slot: int | None, name: str, dataset: Dataset, indices: tuple[int, ...]) -> torch.Tensor:
        missing = sorted({i for i in indices if (slot, name, i) not in self.cache})
        if missing:
            for i, row in zip(missing, _features(self.vit(slot), _images(dataset, missing), self.ctx)):
                self.cache[(slot, name, i)] = row
        return torch.stack([self.cache[(slot, name, i)] for i in indices])


def choose_slot(kind: str, upstream: Upstream, support: torch.Tensor, fewshot_dataset: int) -> int | None:
    """None for the plain backbone; else the shared LoRA slot to merge (`support`: plain-backbone features)."""
    if kind == "vanilla":
        return None
    if kind == "shared":
        return fewshot_dataset
    with torch.no_grad():
        logits = upstream.router.to(support.device)(support)  # every upstream class has been seen
    return majority_slot(logits, upstream.class_to_slot)


@contextmanager
def one_cpu_thread():
    """A 25×D linear head on the CPU: thread wake-ups cost more than the arithmetic (20× here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_episode(kind: str, episode: Episode, data: ContinualData, frozen: FrozenFeatures, config: FewShotRunConfig,
                ) -> dict:
    fewshot, seed = config.fewshot, config.run.seed * 100_003 + episode.index
    augmented = data.train is not data.train_eval  # a train transform with random augmentation
    plain = frozen.of(None, "train_eval", data.train_eval, episode.support) if kind == "vanilla+shared" else None
    slot = choose_slot(kind, frozen.upstream, plain, fewshot.few_shot_dataset_idx)
    query = frozen.of(slot, "test", data.test, episode.query)
    with torch.random.fork_rng(devices=[]), one_cpu_thread() if not augmented else nullcontext():
        torch.manual_seed(seed)  # the support augmentations of this episode
        if augmented:
            per_epoch = lambda _: _features(frozen.vit(slot), _images(data.train, list(episode.support)), frozen.ctx)
        else:
            support = frozen.of(slot, "train", data.train, episode.support)
            per_epoch = lambda _: support
        head = fit_head(per_epoch, torch.tensor(episode.support_labels), fewshot.num_ways, fewshot.num_fs_epochs,
                        fewshot.fs_lr, seed)
        correct = accuracy(head, query, torch.tensor(episode.query_labels))
    return {"episode": episode.index, "accuracy": correct,
            "lora_slot": slot, "classes": list(episode.classes), "support": list(episode.support),
            "queries": len(episode.query)}


def episode_fingerprint(config: FewShotRunConfig, kind: str, backbone: LoadedBackbone, upstream: Upstream) -> str:
    settings = records.episode_settings(config.fewshot)
    used = {name: upstream.sources[name] for name in SOURCES[kind]}
    return records.fingerprint({"settings": settings, "seed": config.run.seed, "backbone": backbone.identity(),
                                "kind": kind, "lora": [config.run.lora.rank, config.run.lora.alpha], "sources": used})


def run_backbone(kind: str, data: ContinualData, frozen: FrozenFeatures, config: FewShotRunConfig, ctx: DistContext,
                 log: RunLog) -> None:
    """This rank's episodes with one backbone kind, each recorded as soon as it is done."""
    fewshot, out = config.fewshot, config.run.output_dir
    expected = episode_fingerprint(config, kind, frozen.backbone, frozen.upstream)
    started, done, reused = time.time(), 0, 0
    for index in episodes_of_rank(fewshot.num_episodes, ctx.rank, ctx.world_size):
        if config.run.resume and records.load_record(out, kind, index, expected) is not None:
            reused += 1
            continue
        episode = sample_episode(index, config.run.seed, fewshot.few_class_idx, fewshot.num_ways, fewshot.num_shots,
                                 fewshot.num_queries, data.train_targets, data.test_targets)
        result = run_episode(kind, episode, data, frozen, config)
        records.write_json_atomic(records.record_path(out, kind, index), {**result, "fingerprint": expected})
        done += 1
    log.event("episodes", f"{kind}: {done} episode(s) in {time.time() - started:.1f} s on rank {ctx.rank}"
              + (f", {reused} reused (--resume)" if reused else ""), backbone=kind, done=done, reused=reused)


def summarize_backbone(kind: str, expected: str, config: FewShotRunConfig) -> dict:
    """All episodes of `kind` (every rank's records) → summary.json beside them."""
    out, n = config.run.output_dir, config.fewshot.num_episodes
    found = [records.load_record(out, kind, k, expected) for k in range(n)]
    missing = [k for k, r in enumerate(found) if r is None]
    if missing:
        raise UserError(f"{kind}: episode record(s) {missing[:5]} missing or stale under "
                                   f"{records.backbone_dir(out, kind)}")
    accuracies = [r["accuracy"] for r in found]
    slots = [r["lora_slot"] for r in found]
    summary = {**summarize(accuracies), "backbone": kind, "accuracies": accuracies, "lora_slots": slots,
               "settings": records.episode_settings(config.fewshot),
               "seed": config.run.seed, "fingerprint": expected}
    records.write_json_atomic(records.backbone_dir(out, kind) / "summary.json", summary)
    return summary


def run_few_shot(config: FewShotRunConfig, ctx: DistContext) -> dict | None:
    """Every `--fs_backbone` in turn; rank 0 writes and returns the study's results (other ranks: None)."""
    run, fewshot = config.run, config.fewshot
    log = RunLog(run.output_dir, ctx.is_main)
    seed_everything(run.seed)
    name = fewshot.datasets[fewshot.few_shot_dataset_idx]
    needed = fewshot.continual_classes_per_dataset[fewshot.few_shot_dataset_idx] + \
        fewshot.few_shot_classes_per_dataset[fewshot.few_shot_dataset_idx]
    data = load_member(run, name, backbone_spec(run.backbone.model), needed)
    backbone = load_backbone(run.backbone, ctx)
    upstream = load_upstream(config, backbone)
    log.event("start", f"{run.preset}: {fewshot.num_episodes} episodes {fewshot.num_ways}-way {fewshot.num_shots}-shot "
              f"on {name} classes {list(fewshot.few_class_idx)}, backbones {', '.join(fewshot.fs_backbone)}, "
              f"{ctx.world_size} rank(s)", config=config.to_dict())
    fingerprints, frozen = {}, FrozenFeatures(backbone, upstream, ctx)
    for kind in fewshot.fs_backbone:
        fingerprints[kind] = episode_fingerprint(config, kind, backbone, upstream)
        run_backbone(kind, data, frozen, config, ctx, log)
    barrier()
    if not ctx.is_main:
        return None
    for kind in fewshot.fs_backbone:
        summarize_backbone(kind, fingerprints[kind], config)
    return write_study_results(config, log)
