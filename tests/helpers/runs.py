"""Running the entry points as users do: the repo root, quick-run settings, a clean child environment,
`train/main.py` (plain or under the deepspeed launcher) and its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from contract.ports import free_port  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[2]
# Quick settings for runs that test the machinery rather than accuracy.
FAST = ["optim.epochs=1", "tii_optim.epochs=1", "alignment.crct_epochs=2", "data.batch_size=64"]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without the DeepSpeed rank variables (a child starts its own ranks)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(extra)
    return env


def run_main(args: list[str], ranks: int = 0, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """`python train/main.py ARGS` (ranks=0) or `deepspeed --num_gpus RANKS train/main.py ARGS`."""
    if ranks:
        launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks),
                    "--master_port", str(free_port())]
    else:
        launcher = [sys.executable]
    return subprocess.run(launcher + ["train/main.py", *args], cwd=REPO, env=child_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def results(output_dir: Path) -> dict:
    return json.loads((output_dir / "results.json").read_text())
