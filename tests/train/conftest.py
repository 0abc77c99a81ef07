"""Fixtures of the train/ tests."""

from __future__ import annotations

import pytest

from tests.helpers.vit import tiny_vit as build_tiny_vit


@pytest.fixture(scope="module")
def tiny_vit():
    """A frozen random tiny ViT (tests.helpers.vit.tiny_vit), one per test module."""
    return build_tiny_vit().requires_grad_(False)
