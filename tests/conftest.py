"""Fixtures shared by every test folder, and which tests are slow. Helpers live in tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# `make test-fast` (= -m "not slow") leaves out what takes minutes: every test that trains a run (they are the
# ones that need the random backbone file), the container builds, and the attack load test.
SLOW_FIXTURES = {"random_backbone"}
SLOW_MODULES = {"deploy/test_deploy.py"}  # paths under tests/
SLOW_TESTS = {"test_good_clients_never_fail_under_attack_and_memory_stays_bounded"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        module = item.path.relative_to(TESTS).as_posix() if item.path.is_relative_to(TESTS) else ""
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SLOW_MODULES
                or item.originalname in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


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
