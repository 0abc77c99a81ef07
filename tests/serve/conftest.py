"""Fixtures of the serve/ tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.bundles import write_bundle


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory) -> Path:
    """A bundle root holding version 1 (synthetic, routing by task, 2 of 3 tasks learned), one per test module."""
    root = tmp_path_factory.mktemp("bundle")
    write_bundle(root, 1, tasks_learned=2)
    return root
