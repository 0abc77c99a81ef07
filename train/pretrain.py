"""Pretrain the embedded backbone on rendered glyphs (letters and symbols, no digits), once, cached.

`python -m train.pretrain` (or under `deepspeed`) trains it through the same DeepSpeed engine as the
continual runs; the weights land in the cache keyed by the pretraining config's hash and are reused
by the demo, the presets on the embedded benchmark and the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .backbones.registry import EMBEDDED_BACKBONE, backbone_spec
from .backbones.vit import create_vit
from .data.glyphs import GLYPHS, render_glyph_dataset
from .data.transforms import grayscale_to_input
from .distributed import DistContext, all_reduce_sum, barrier, build_engine, init_distributed, load_ds_config
from .errors import UserError
from .paths import cache_root


@dataclass(frozen=True)
class PretrainConfig:
    backbone: str = EMBEDDED_BACKBONE
    images: int = 20000
    epochs: int = 10
    global_batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.1
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "arch": backbone_spec(self.backbone).to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def weights_path(config: PretrainConfig) -> Path:
    return cache_root() / "backbones" / f"{config.backbone}-{config.key()}.safetensors"


def cached_weights(config: PretrainConfig) -> Path:
    """The cached weights, without pretraining (no process group): a UserError naming the fix when missing."""
    path = weights_path(config)
    if not path.is_file():
        raise UserError(f"the embedded backbone's weights are not cached at '{path}': pretrain them with "
                        "`python -m train.pretrain` (the same cache: set HIDECL_CACHE as the training run had it).")
    return path


def _one_cycle(optimizer: torch.optim.Optimizer, config: PretrainConfig, total_steps: int):
    warmup = max(1, int(config.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def pretrain(config: PretrainConfig, ctx: DistContext, log=print) -> dict[str, torch.Tensor]:
    """Supervised glyph classification; the global batch is split over the ranks (same result for any
    world size up to float summation order). Returns the backbone's state dict without the head."""
    spec = backbone_spec(config.backbone)
    torch.manual_seed(config.seed)
    images, labels = render_glyph_dataset(config.images, spec.img_size, config.seed)
    inputs, targets = grayscale_to_input(images, spec), torch.as_tensor(labels)
    model = create_vit(spec, num_classes=len(GLYPHS)).to(ctx.device)
    steps_per_epoch = len(inputs) // config.global_batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    micro = config.global_batch // ctx.world_size
    engine = build_engine(model, optimizer, load_ds_config("fp32", micro, 1.0))
    scheduler = _one_cycle(optimizer, config, steps_per_epoch * config.epochs)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        started, total = time.time(), 0.0
        for step in range(steps_per_epoch):
            batch = order[step * config.global_batch : (step + 1) * config.global_batch]
            mine = batch[ctx.rank :: ctx.world_size]
            x, y = inputs[mine].to(ctx.device), targets[mine].to(ctx.device)
            loss = F.cross_entropy(engine(x), y, label_smoothing=config.label_smoothing)
            engine.backward(loss)
            engine.step()
            scheduler.step()
            total += loss.item()
        log(f"pretrain epoch {epoch + 1}/{config.epochs}: loss {total / steps_per_epoch:.3f} "
            f"({time.time() - started:.0f} s)")
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("head.")}


def ensure_pretrained(config: PretrainConfig, ctx: DistContext, log=print) -> Path:
    """The cached weights, pretraining them (on all ranks together) when any rank lacks them.

    The decision is collective, so nodes with their own caches never disagree about joining in; each
    node's first rank writes its cache.
    """
    path = weights_path(config)
    missing = all_reduce_sum(torch.tensor([float(not path.is_file())], device=ctx.device)).item() > 0
    if missing:
        if ctx.is_main:
            log(f"embedded backbone not cached: pretraining {config.backbone} on glyphs → {path}")
        state = pretrain(config, ctx, log if ctx.is_main else (lambda *_: None))
        if ctx.local_rank == 0 and not path.is_file():
            _save_atomically(state, config, path)
        barrier()
    return path


def _save_atomically(state: dict[str, torch.Tensor], config: PretrainConfig, path: Path) -> None:
    """Write beside the target and rename: a killed run never leaves a half-written cache entry."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    save_file(state, str(partial), metadata={"config": json.dumps(asdict(config))})
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=PretrainConfig.images)
    parser.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    parser.add_argument("--lr", type=float, default=PretrainConfig.lr)
    parser.add_argument("--seed", type=int, default=PretrainConfig.seed)
    parser.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = PretrainConfig(images=args.images, epochs=args.epochs, lr=args.lr, seed=args.seed)
    ctx = init_distributed()
    path = ensure_pretrained(config, ctx)
    if ctx.is_main:
        print(f"embedded backbone weights: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
