"""Which bundle version answers, alone (serve.versions.ModelRegistry on synthetic bundles): the start-up choice,
hot swaps and leases, polling, and what a broken or missing version does. (The retry rule for a version that
failed is in test_bundle_root.py.)"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from export.manifest import ManifestError
from serve.errors import NotFound, Unavailable
from serve.runtime import NO_HINT
from serve.versions import ModelRegistry
from tests.helpers.bundles import IMG, write_bundle
from tests.helpers.servers import local_config


class Events:
    """What the registry reports to the server: swaps, failures, ignored-entry counts."""

    def __init__(self) -> None:
        self.swaps: list[int] = []
        self.failures: list[int] = []
        self.ignored: list[int] = []

    def registry(self, root: Path) -> ModelRegistry:
        return ModelRegistry(local_config(root), ThreadPoolExecutor(1), lambda rt: self.swaps.append(rt.version),
                             lambda version, error: self.failures.append(version), self.ignored.append)


def break_version(root: Path, version: int) -> None:
    write_bundle(root, version)
    (root / str(version) / "classifier.onnx").write_bytes(b"truncated")  # its SHA-256 no longer matches


def answers(registry: ModelRegistry) -> int:
    """Serve one request on the leased version; returns that version."""
    runtime = registry.acquire()
    try:
        runtime.execute(np.zeros((1, 3, IMG, IMG), np.float32), np.full(1, NO_HINT, np.int64))
        return runtime.version
    finally:
        runtime.release()


def test_no_version_is_served_before_start_and_an_empty_root_says_what_to_do(tmp_path):
    registry = Events().registry(tmp_path)
    with pytest.raises(Unavailable, match="retry shortly"):
        registry.acquire()
    with pytest.raises(NotFound, match="export one first"):
        asyncio.run(registry.start(None))


def test_start_serves_the_newest_version_that_loads_and_reports_the_ones_skipped(tmp_path):
    write_bundle(tmp_path, 1)
    write_bundle(tmp_path, 2)
    break_version(tmp_path, 3)
    events = Events()
    registry = events.registry(tmp_path)
    asyncio.run(registry.start(None))
    assert answers(registry) == 2 and events.swaps == [2] and events.failures == [3]
    assert [version for version, _ in registry.skipped] == [3] and "SHA-256" in registry.skipped[0][1]
    registry.close()


def test_start_fails_with_every_reason_when_no_version_loads(tmp_path):
    break_version(tmp_path, 1)
    break_version(tmp_path, 2)
    with pytest.raises(NotFound, match=r"none of the bundle versions \[1, 2\].* loads: 2: .*SHA-256.*; 1: .*SHA-256"):
        asyncio.run(Events().registry(tmp_path).start(None))


def test_a_swap_keeps_the_old_version_open_for_the_requests_that_leased_it(tmp_path):
    write_bundle(tmp_path, 1)
    events = Events()
    registry = events.registry(tmp_path)

    async def scenario():
        await registry.start(None)
        old = registry.acquire()  # a request in flight on version 1
        write_bundle(tmp_path, 2)
        assert await registry.load(None) == (1, 2)
        assert answers(registry) == 2 and old.sessions, "version 1 closed under its in-flight request"
        old.release()
        assert old.sessions == {}
        assert await registry.load(2) == (2, 2)  # already serving: nothing happens

    asyncio.run(scenario())
    assert events.swaps == [1, 2]
    registry.close()


def test_a_version_that_fails_to_load_leaves_the_serving_one_in_place(tmp_path):
    write_bundle(tmp_path, 1)
    events = Events()
    registry = events.registry(tmp_path)

    async def scenario():
        await registry.start(None)
        break_version(tmp_path, 2)
        with pytest.raises(ManifestError):
            await registry.load(2)
        with pytest.raises(NotFound, match=r"version 7 not found.*complete versions: \[1, 2\]"):
            await registry.load(7)
        assert await registry.poll_once() is False  # failed, files unchanged: not retried

    asyncio.run(scenario())
    assert answers(registry) == 1 and events.failures == [2] and events.swaps == [1]
    registry.close()


def test_polling_follows_only_versions_newer_than_any_served(tmp_path):
    write_bundle(tmp_path, 1)
    registry = Events().registry(tmp_path)

    async def scenario():
        await registry.start(None)
        assert await registry.poll_once() is False
        write_bundle(tmp_path, 2)
        assert await registry.poll_once() is True and answers(registry) == 2
        await registry.load(1)  # an operator's rollback sticks ...
        assert await registry.poll_once() is False and answers(registry) == 1
        write_bundle(tmp_path, 3)  # ... until a newer version is published
        assert await registry.poll_once() is True and answers(registry) == 3

    asyncio.run(scenario())
    registry.close()


def test_a_pinned_version_is_served_even_when_newer_ones_exist(tmp_path):
    write_bundle(tmp_path, 1)
    write_bundle(tmp_path, 2)
    registry = Events().registry(tmp_path)
    asyncio.run(registry.start(1))
    assert answers(registry) == 1
    registry.close()


def test_entries_that_are_no_version_are_counted_every_scan_and_warned_about_once(tmp_path, caplog):
    write_bundle(tmp_path, 1)
    (tmp_path / "latest").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    events = Events()
    registry = events.registry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="serve.versions"):
        assert registry.versions() == [1] and registry.versions() == [1]
    assert events.ignored == [2, 2]
    warned = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(warned) == 2 and any("'latest'" in w for w in warned) and any("'notes.txt'" in w for w in warned)
