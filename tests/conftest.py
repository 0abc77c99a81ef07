"""Shared fixtures: the repo root, a random embedded-architecture backbone file, and run helpers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Quick settings for runs that test the machinery rather than accuracy.
FAST = ["optim.epochs=1", "tii_optim.epochs=1", "alignment.crct_epochs=2", "data.batch_size=64"]


# `make test-fast` (= -m "not slow") leaves out what takes minutes: every test that trains a run (they are the
# ones that need the random backbone file), the container builds, and the attack load test.
SLOW_FIXTURES = {"random_backbone"}
SLOW_MODULES = {"test_deploy.py"}
SLOW_TESTS = {"test_good_clients_never_fail_under_attack_and_memory_stays_bounded"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_MODULES
                or item.originalname in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
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


@pytest.fixture(scope="session")
def random_backbone(tmp_path_factory) -> Path:
    """Randomly initialised weights of the embedded architecture (no pretraining needed)."""
    import torch
    from safetensors.torch import save_file

    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
    from train.backbones.vit import create_vit

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "random.safetensors"
    save_file(create_vit(backbone_spec(EMBEDDED_BACKBONE)).state_dict(), str(path))
    return path
