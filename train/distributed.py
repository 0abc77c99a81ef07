"""Process group, DeepSpeed engines, cross-rank gathers: everything that knows about ranks."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from contract.ports import free_port

DS_CONFIG_DIR = Path(__file__).resolve().parent.parent / "ds_configs"
SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _default_single_process_env() -> None:
    """Let plain `python train/main.py` run as a world of one, as the launcher would set it up."""
    if "RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def _unlink_cpu_allreduce_buffer() -> None:
    """DeepSpeed's CPU all-reduce (its shm comm op, used when every rank is on this machine) creates one
    /dev/shm/deepspeed_allreduce_buffer_* file of 66 MiB per rank and never removes it: each run would keep that
    RAM until reboot. Once every rank has mapped every rank's file (all have passed init: the barrier), this rank
    removes its own; the mappings stay valid and the memory goes back when the last rank exits, even if killed."""
    if dist.get_world_size() > 1:
        dist.barrier()
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{dist.get_rank()}")
    (SHM_DIR / name).unlink(missing_ok=True)


def _limit_cpu_threads(world_size: int) -> None:
    """Ranks sharing the CPU split its cores instead of oversubscribing them."""
    if "OMP_NUM_THREADS" in os.environ:  # the user decided
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))


def init_distributed() -> DistContext:
    """Initialise (once) the process group: NCCL on GPUs, gloo on CPU."""
    import deepspeed  # here and in build_engine only: loading a trained run never needs it

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    _default_single_process_env()
    use_cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo", verbose=False)
        if not use_cuda:
            _unlink_cpu_allreduce_buffer()
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        _limit_cpu_threads(world)
        device = torch.device("cpu")
    return DistContext(rank, world, local_rank, device)


def load_ds_config(name_or_path: str, micro_batch: int, clip_grad: float | None) -> dict:
    """A DeepSpeed config from `ds_configs/` (by name) or a path, with the run's batch and clipping."""
    path = Path(name_or_path)
    if not path.suffix:
        path = DS_CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in DS_CONFIG_DIR.glob("*.json")))
        raise FileNotFoundError(f"DeepSpeed config '{name_or_path}' not found. Known: {known}, or a path.")
    config = json.loads(path.read_text())
    config.pop("_comment", None)
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = 1
    config.pop("train_batch_size", None)
    if clip_grad:
        config["gradient_clipping"] = clip_grad
    config.setdefault("steps_per_print", 10**9)
    return config


def build_engine(module: torch.nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict):
    """A DeepSpeed engine around `module` driving `optimizer` (a torch optimizer: no op compilation)."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config)
    return engine


def engine_dtype(engine) -> torch.dtype:
    if engine.bfloat16_enabled():
        return torch.bfloat16
    return torch.float16 if engine.fp16_enabled() else torch.float32


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (rank order); gloo needs equal sizes, so pad and trim."""
    if world_size() == 1:
        return tensor
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(parts, counts)])


def broadcast_tensors(tensors: list[torch.Tensor]) -> None:
    """Make every rank hold rank 0's values (after work done outside DeepSpeed)."""
    if world_size() > 1:
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This rank's share of `indices`, without the padding duplicates of DistributedSampler."""
    return indices[rank::world]
