"""The task loop: fit task → finish slot → class statistics → classifier alignment → evaluate → checkpoint."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from . import checkpoint
from .backbones.registry import backbone_spec
from .config import RunConfig
from .data.registry import ContinualData, load_dataset, record_data_split
from .data.splits import TaskSplit, indices_of_classes
from .distributed import (
    DistContext,
    all_gather_rows,
    all_reduce_sum,
    barrier,
    broadcast_tensors,
    build_engine,
    engine_dtype,
    load_ds_config,
    shard,
)
from .growth import check_grows, grown_state, growth_sizes, run_split
from .losses import mask_logits, masked_cross_entropy
from .methods import ContinualMethod, build_method
from .metrics import average_accuracies, summarize
from .report import RunLog, format_matrix, named_results, plot_accuracy_matrix, write_results
from .schedule import lr_at_epoch
from .stats import ClassStatistics
from .trained import check_backbone, check_method, task_checkpoint
from .weights import LoadedBackbone, load_backbone


@dataclass
class Progress:
    """Everything measured so far; saved with every task checkpoint."""

    num_tasks: int
    accuracy: np.ndarray | None = None  # [evaluated task, after task], %; zeros until measured
    pre_alignment_accuracy: np.ndarray | None = None
    task_identity: np.ndarray | None = None
    timings: list[dict] = field(default_factory=list)
    class_accuracy: list[float] = field(default_factory=list)  # % per class id after the last task (NaN: unseen)

    def __post_init__(self) -> None:
        for name in ("accuracy", "pre_alignment_accuracy", "task_identity"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros((self.num_tasks, self.num_tasks)))

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy.tolist(), "pre_alignment_accuracy": self.pre_alignment_accuracy.tolist(),
                "task_identity": self.task_identity.tolist(), "timings": self.timings,
                "class_accuracy": self.class_accuracy}

    @classmethod
    def from_dict(cls, data: dict, num_tasks: int | None = None) -> Progress:
        """The saved progress; with `num_tasks` (a run that grew), its matrices padded with zeros to that size."""
        arrays = {k: np.array(data[k]) for k in ("accuracy", "pre_alignment_accuracy", "task_identity")}
        num_tasks = num_tasks or len(arrays["accuracy"])
        arrays = {k: np.pad(a.reshape(len(a), len(a)), (0, num_tasks - len(a))) for k, a in arrays.items()}
        return cls(num_tasks, timings=data["timings"], class_accuracy=data.get("class_accuracy", []), **arrays)


def method_key(config: RunConfig) -> str:
    return "hide_tii" if config.stage == "tii" else config.method


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def model_dtype(method: ContinualMethod) -> torch.dtype:
    return next(method.parameters()).dtype


# -- one task's training through DeepSpeed --------------------------------------------------------------
def train_task(method: ContinualMethod, task: int, data: ContinualData, split: TaskSplit, config: RunConfig,
               ctx: DistContext) -> dict:
    optim, batch = config.optim, config.data.batch_size
    method.train()
    subset = Subset(data.train, indices_of_classes(data.train_targets, split.task_classes[task]))
    sampler = DistributedSampler(subset, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed + task)
    loader = DataLoader(subset, batch, sampler=sampler, num_workers=config.data.num_workers)
    optimizer = torch.optim.Adam(method.param_groups(optim.scaled_lr(batch)), betas=optim.opt_betas,
                                 eps=optim.opt_eps, weight_decay=optim.weight_decay)
    engine = build_engine(method, optimizer, load_ds_config(config.deepspeed_config, batch, optim.clip_grad))
    dtype, base_lrs = engine_dtype(engine), [g["lr"] for g in optimizer.param_groups]
    started, images, loss = time.time(), 0, torch.zeros(())
    show = ctx.is_main and sys.stderr.isatty()
    bar = tqdm(total=optim.epochs * len(loader), desc=f"task {task + 1} train", disable=not show, leave=False)
    for epoch in range(optim.epochs):
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr_at_epoch(optim, base, epoch)
        sampler.set_epoch(epoch)
        for x, y in loader:
            x, y = x.to(ctx.device, dtype), y.to(ctx.device)
            loss = method.training_loss(engine(x, task), y, task)
            engine.backward(loss)
            engine.step()
            images += len(y)
            bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    engine.destroy()
    seconds = time.time() - started
    return {"task": task, "train_seconds": seconds, "train_images_per_second": images * ctx.world_size / seconds,
            "final_loss": float(loss.item())}


# -- which images share a batch outside training ---------------------------------------------------------------
def batch_dependent(config: RunConfig) -> bool:
    """Switches under which a sample's prediction depends on its batch neighbours (reference quirks)."""
    return config.prompt.kv_reshape_official or config.adapter.batchwise_selection


def rank_batches(indices: list[int], config: RunConfig, ctx: DistContext) -> list[list[int]]:
    """This rank's strided share of `indices`, in batches of 4×batch (batch composition does not matter)."""
    mine, size = shard(indices, ctx.rank, ctx.world_size), 4 * config.data.batch_size
    return [mine[i:i + size] for i in range(0, len(mine), size)]


def reference_batches(indices: list[int], config: RunConfig, ctx: DistContext) -> list[list[int]]:
    """The reference's sequential batches of `batch_size` over `indices`, whole batches dealt to the ranks, so
    every batch holds exactly the images it holds in the reference whatever the number of ranks."""
    size = config.data.batch_size
    return [indices[i:i + size] for i in range(0, len(indices), size)][ctx.rank::ctx.world_size]


# -- class statistics ---------------------------------------------------------------------------------------
@torch.no_grad()
def collect_statistics(method: ContinualMethod, task: int, data: ContinualData, split: TaskSplit,
                       statistics: ClassStatistics, config: RunConfig, ctx: DistContext) -> None:
    """Features of the task's training images (each rank a share, gathered), summarised per class."""
    method.eval()
    if batch_dependent(config):  # the reference's per-class loaders: a batch never mixes classes
        batches = [b for label in split.task_classes[task]
                   for b in reference_batches(indices_of_classes(data.train_targets, (label,)), config, ctx)]
    else:
        batches = rank_batches(indices_of_classes(data.train_targets, split.task_classes[task]), config, ctx)
    loader = DataLoader(data.train_eval, batch_sampler=batches, num_workers=config.data.num_workers)
    features, labels = [], []
    for x, y in loader:
        features.append(method.statistics_features(x.to(ctx.device, model_dtype(method)), task).float())
        labels.append(y.to(ctx.device))
    features, labels = all_gather_rows(torch.cat(features)), all_gather_rows(torch.cat(labels))
    for label in split.task_classes[task]:
        statistics.add_class(label, features[labels == label], seed=config.seed * 1000 + label)
        method.observe_class(label, features[labels == label])


# -- classifier alignment on pseudo-features -----------------------------------------------------------------
def align_classifier(method: ContinualMethod, task: int, split: TaskSplit, statistics: ClassStatistics,
                     config: RunConfig, ctx: DistContext) -> None:
    """SGD of the alignment parameters on features sampled from the class statistics (tasks 0..task).

    Runs in float32 even when DeepSpeed cast the model to bf16/fp16 (small SGD steps vanish in bf16).
    Every rank draws the same samples from the same seed, so ranks stay identical; rank 0's result is
    broadcast anyway to rule out drift.
    """
    cfg, batch = config.alignment, config.data.batch_size
    scaled = cfg.ca_lr_scaled if cfg.ca_lr_scaled is not None else method.ca_lr_scaled_default
    lr = cfg.ca_lr * batch / 256.0 if scaled else cfg.ca_lr
    params, dtype = method.alignment_parameters(), model_dtype(method)
    for p in params:
        p.data = p.data.float()
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.crct_epochs)
    per_component = batch * method.ca_samples_per_batch
    steps, classes, seen = len(split.seen_classes(task - 1)), split.seen_classes(task), split.seen_mask(task)
    generator = torch.Generator().manual_seed(config.seed * 7919 + task)
    method.train()
    for _ in range(cfg.crct_epochs):
        features, labels = statistics.sample(classes, per_component, steps * per_component, generator)
        for chunk, targets in zip(features.split(per_component), labels.split(per_component)):
            loss = masked_cross_entropy(method.alignment_logits(chunk.to(ctx.device)), targets.to(ctx.device), seen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    for p in params:
        p.grad = None
        p.data = p.data.to(dtype)
    broadcast_tensors([p.data for p in params])


# -- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(method: ContinualMethod, seen_task: int, data: ContinualData, split: TaskSplit, config: RunConfig,
             ctx: DistContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy and task-identity accuracy (%) on the test set of each task 0..seen_task, and accuracy per class
    id (NaN for classes not evaluated)."""
    method.eval()
    counts = torch.zeros(seen_task + 1, 3, dtype=torch.float64)  # correct, task correct, total
    per_class = torch.zeros(2, split.num_classes, dtype=torch.float64)  # correct, total
    for task in range(seen_task + 1):
        indices = indices_of_classes(data.test_targets, split.task_classes[task])
        batches = reference_batches(indices, config, ctx) if batch_dependent(config) else \
            rank_batches(indices, config, ctx)
        loader = DataLoader(data.test, batch_sampler=batches, num_workers=config.data.num_workers)
        for x, y in loader:
            prediction = method.predict(x.to(ctx.device, model_dtype(method)), seen_task)
            logits = prediction.logits.float()
            if config.data.task_inc:
                logits = mask_logits(logits, split.task_mask(task))
            correct = logits.argmax(1).cpu() == y
            counts[task, 0] += correct.sum().item()
            per_class[0].index_add_(0, y, correct.double())
            per_class[1].index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
            routed = prediction.task_ids.reshape(len(y), -1).cpu()
            counts[task, 1] += (routed == task).any(dim=1).sum().item()
            counts[task, 2] += len(y)
    counts = all_reduce_sum(counts.to(ctx.device)).cpu()
    per_class = all_reduce_sum(per_class.to(ctx.device)).cpu()
    return ((100 * counts[:, 0] / counts[:, 2]).numpy(), (100 * counts[:, 1] / counts[:, 2]).numpy(),
            (100 * per_class[0] / per_class[1]).numpy())


# -- the run ----------------------------------------------------------------------------------------------
def run(config: RunConfig, ctx: DistContext) -> dict:
    """Train all tasks of `config` (resuming after the last completed one when asked); return the results."""
    log = RunLog(config.output_dir, ctx.is_main)
    seed_everything(config.seed)
    data = load_dataset(config.data, backbone_spec(config.backbone.model), config.output_dir if config.resume else None)
    if ctx.is_main:
        record_data_split(config.output_dir, data)  # ImageFolder: the train/test file lists, kept with the run
    split = run_split(data, config)
    backbone = load_backbone(config.backbone, ctx)
    method = build_method(method_key(config), config, backbone.vit, split).to(ctx.device)
    statistics = ClassStatistics(config.alignment.ca_storage_efficient_method, config.alignment.n_centroids)
    progress, start = Progress(split.num_tasks), 0
    last = checkpoint.latest_task(config.output_dir) if config.resume else None
    if last is not None:
        progress = _resume(method, statistics, config, last, backbone, log, split)
        start = last + 1
    log.event("start", f"{config.preset}: stage {config.stage}, method {method_key(config)}, "
              f"{split.num_tasks} tasks, {ctx.world_size} rank(s) on {ctx.device} "
              f"({torch.get_num_threads()} threads each)", config=config.to_dict())
    end = config.until_task or split.num_tasks
    for task in range(start, end):
        run_task(method, task, data, split, statistics, progress, config, ctx, backbone, log)
    return finish(progress, config, split, ctx, log, max(end, start), data)


def _resume(method, statistics, config, last, backbone: LoadedBackbone, log: RunLog, split: TaskSplit) -> Progress:
    """Load the last completed task; when the data now holds more tasks, grow into the model built for them."""
    saved = task_checkpoint(config.output_dir, last)
    check_method(saved, config.stage, config.method)
    check_backbone(saved, backbone, "resume it with the --model and --backbone_checkpoint it was trained with")
    old = saved.split
    check_grows(old, split, config.output_dir)
    sizes = growth_sizes(old, split, saved.config, config)
    method.load_state_dict(grown_state(method, saved.learned(), sizes), strict=False)
    statistics.load_state_dict(saved.statistics())
    checkpoint.restore_rng(saved.state["rng"])
    log.event("resume", f"resuming after task {last + 1} from {checkpoint.task_dir(config.output_dir, last)}"
              + (f", grown from {old.num_tasks} tasks / {old.num_classes} classes to {split.num_tasks} / "
                 f"{split.num_classes}" if sizes else ""))
    return Progress.from_dict(saved.state["progress"], split.num_tasks)


def run_task(method, task, data, split, statistics, progress: Progress, config: RunConfig, ctx: DistContext,
             backbone: LoadedBackbone, log: RunLog) -> None:
    identity = None
    if method.needs_task_identity:
        identity = checkpoint.load_task_identity(config.trained_original_model, task, backbone.identity())
    method.begin_task(task, statistics, identity)
    timing = train_task(method, task, data, split, config, ctx)
    method.end_task(task)
    started = time.time()
    if method.uses_statistics:
        collect_statistics(method, task, data, split, statistics, config, ctx)
    accuracy, identity_accuracy, class_accuracy = evaluate(method, task, data, split, config, ctx)
    progress.pre_alignment_accuracy[: task + 1, task] = accuracy
    if task > 0 and method.uses_statistics and not config.alignment.not_train_ca:
        align_classifier(method, task, split, statistics, config, ctx)
        accuracy, identity_accuracy, class_accuracy = evaluate(method, task, data, split, config, ctx)
    progress.accuracy[: task + 1, task] = accuracy
    progress.class_accuracy = class_accuracy.tolist()
    progress.task_identity[: task + 1, task] = identity_accuracy
    progress.timings.append({**timing, "statistics_alignment_evaluation_seconds": time.time() - started})
    mean = float(np.mean(accuracy))
    log.event("task", f"task {task + 1}/{split.num_tasks}: average accuracy {mean:.2f}% "
              f"(before alignment {np.mean(progress.pre_alignment_accuracy[: task + 1, task]):.2f}%), "
              f"Acc@task {np.mean(identity_accuracy):.2f}%, {timing['train_seconds']:.0f} s training",
              accuracy=accuracy.tolist(), task_identity=identity_accuracy.tolist(), **timing)
    if ctx.is_main:
        checkpoint.save_task(config.output_dir, task, method.learned_state(), statistics.state_dict(),
                             {"config": config.to_dict(), "backbone": backbone.identity(),
                              "progress": progress.to_dict(), "class_names": list(data.names()),
                              "task_names": list(data.task_names),
                              "task_classes": [list(c) for c in split.task_classes]})
    barrier()


def finish(progress: Progress, config: RunConfig, split: TaskSplit, ctx: DistContext, log: RunLog,
           tasks_trained: int, data: ContinualData) -> dict:
    """Results over the tasks trained so far (all of them unless the run stopped early with `until_task`)."""
    A = progress.accuracy[:tasks_trained, :tasks_trained]
    results = {
        "preset": config.preset,
        "stage": config.stage,
        "tasks_trained": tasks_trained,
        **summarize(A, progress.task_identity[:tasks_trained, :tasks_trained], config.forgetting),
        "forgetting_convention": config.forgetting,
        "accuracy_matrix": A.tolist(),
        "average_accuracy_per_task": average_accuracies(A).tolist(),
        "pre_alignment_accuracy_matrix": progress.pre_alignment_accuracy[:tasks_trained, :tasks_trained].tolist(),
        "task_identity_matrix": progress.task_identity[:tasks_trained, :tasks_trained].tolist(),
        "task_classes": [list(c) for c in split.task_classes],
        **named_results(data, split.task_classes, tasks_trained, A[:, -1] if len(A) else A, progress.class_accuracy),
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "train_seconds": float(sum(t["train_seconds"] for t in progress.timings)),
        "total_seconds": float(sum(t["train_seconds"] + t["statistics_alignment_evaluation_seconds"]
                                   for t in progress.timings)),
        "train_images_per_second": float(np.mean([t["train_images_per_second"] for t in progress.timings])),
        "timings": progress.timings,
        "config": config.to_dict(),
    }
    if ctx.is_main:
        write_results(config.output_dir, results)
        plot_accuracy_matrix(A, f"{config.output_dir}/accuracy_matrix.png",
                             f"{config.preset} ({config.stage}): FAA {results['final_average_accuracy']:.1f}%")
        log.event("finish", f"accuracy matrix (rows: task, columns: after task)\n"
                  f"{format_matrix(A, tasks_trained - 1)}\n"
                  f"FAA {results['final_average_accuracy']:.2f}%  CAA {results['cumulative_average_accuracy']:.2f}%  "
                  f"Acc@task {results['task_identity_accuracy']:.2f}%  forgetting {results['final_forgetting']:.2f} "
                  f"({config.forgetting})  BWT {results['backward_transfer']:.2f}  → {config.output_dir}/results.json",
                  **{k: v for k, v in results.items() if isinstance(v, float)})
    return results
