"""Per-task checkpoints holding only what was learned, in safe formats, written atomically.

`<output_dir>/checkpoints/task{t+1}/`: `learned.safetensors` (prompts, heads, TII network),
`statistics.safetensors` (class statistics), `state.json` (config, backbone identity, metrics so
far, RNG state). A task folder appears only when complete, so a killed run never leaves a broken one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import UserError

LEARNED, STATISTICS, STATE = "learned.safetensors", "statistics.safetensors", "state.json"


def task_dir(output_dir: str | Path, task: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"task{task + 1}"


def save_task(output_dir: str | Path, task: int, learned: dict, statistics: dict, state: dict) -> Path:
    final = task_dir(output_dir, task)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in learned.items()}, str(partial / LEARNED))
    save_file(statistics, str(partial / STATISTICS))
    (partial / STATE).write_text(json.dumps({**state, "rng": rng_state()}, indent=1))
    if final.exists():  # re-running a finished task: replace it only now that the new one is whole
        shutil.rmtree(final)
    partial.rename(final)
    return final


def latest_task(output_dir: str | Path) -> int | None:
    """Index of the last completed task, or None."""
    done = [int(p.name[4:]) - 1 for p in (Path(output_dir) / "checkpoints").glob("task*")
            if p.name[4:].isdigit() and (p / STATE).is_file()]
    return max(done) if done else None


def load_task(output_dir: str | Path, task: int) -> tuple[dict, dict, dict]:
    """(learned tensors, statistics tensors, state) of a completed task."""
    folder = task_dir(output_dir, task)
    return load_file(str(folder / LEARNED)), load_file(str(folder / STATISTICS)), json.loads(
        (folder / STATE).read_text())


def check_stage1_run(tii_dir: str | Path, num_tasks: int) -> None:
    """Fail early, with the fix, when `--trained_original_model` does not hold a full stage-1 run."""
    missing = [t + 1 for t in range(num_tasks) if not (task_dir(tii_dir, t) / LEARNED).is_file()]
    if missing:
        raise UserError(
            f"--trained_original_model '{tii_dir}' is not a finished stage-1 run: no checkpoint for "
            f"task(s) {missing} under {Path(tii_dir) / 'checkpoints'}. Run stage 1 there with "
            "--train_inference_task_only, or leave --trained_original_model out to run both stages."
        )


def load_task_identity(tii_dir: str | Path, task: int, backbone: dict) -> dict[str, torch.Tensor]:
    """The stage-1 task-identity network after task `task`, checked against our backbone.

    A HiDe stage-1 run gives its whole network (`tii.*`). A Continual-LoRA run (the reference's stage 1
    for HiDe-LoRA on CIFAR) gives only its classifier (`head.*`) on the frozen features: its LoRA is
    dropped, as the reference's non-strict loading drops it.
    """
    learned, _, state = load_task(tii_dir, task)
    if state["backbone"] != backbone:
        raise UserError(
            f"stage-1 run '{tii_dir}' was trained on backbone {state['backbone']}, this run uses {backbone}: "
            "train stage 1 with the same --model and weights."
        )
    network = {k.removeprefix("tii."): v for k, v in learned.items() if k.startswith("tii.")}
    return network or {k: v for k, v in learned.items() if k.startswith("head.")}


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
