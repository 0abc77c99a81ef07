"""The bundle root as the server and export read it: which names are versions, what is ignored, and when a
failed version is worth another try (unit tests of export.manifest's scan and serve.versions' retry rule)."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from export.manifest import MAX_VERSION, ManifestError, scan_bundle_root, version_of
from serve.config import ServeConfig
from serve.versions import ModelRegistry, fingerprint
from tests.helpers.bundles import write_bundle


@pytest.mark.parametrize("name, version", [
    ("1", 1), ("42", 42), (str(MAX_VERSION), MAX_VERSION), (str(MAX_VERSION + 1), None), ("0", None),
    ("007", None), ("-3", None), ("+4", None), (" 5", None), ("5 ", None), ("³", None), ("١٢", None),
    ("1e3", None), ("", None), ("9" * 400, None), ("decisions.jsonl", None)])
def test_version_names(name, version):
    assert version_of(name) == version


def test_scan_lists_complete_versions_and_ignored_entries(tmp_path):
    root = tmp_path / "root"
    write_bundle(root, 1)
    write_bundle(root, 3)
    (root / "2").mkdir()  # no manifest yet: not complete, not ignored either
    (root / "0042").mkdir()
    (root / "notes.txt").write_text("x")
    (root / "decisions.jsonl").write_text("")
    (root / ".3.partial-123").mkdir()  # export's staging folder
    (root / "7").symlink_to(write_bundle(tmp_path / "elsewhere", 7), target_is_directory=True)
    (root / "8").write_text("a file, not a folder")
    assert scan_bundle_root(root) == ([1, 3], ["0042", "7", "8", "notes.txt"])
    assert scan_bundle_root(tmp_path / "missing") == ([], [])


def test_a_failed_version_is_retried_only_when_its_files_change_within_the_window(tmp_path):
    root = tmp_path / "root"
    write_bundle(root, 1)
    folder = root / "2"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")

    async def scenario():
        registry = ModelRegistry(ServeConfig(root, poll_interval_s=0, load_retry_window_s=60), ThreadPoolExecutor(1))
        with pytest.raises(ManifestError):
            await registry.load(2)
        assert not registry._worth_trying(2)  # nothing changed
        (folder / "router.onnx").write_bytes(b"arriving")
        assert registry._worth_trying(2)  # a file arrived: try again
        with pytest.raises(ManifestError):
            await registry.load(2)
        assert not registry._worth_trying(2)
        registry._failed[2].first = time.monotonic() - 61  # the window has passed
        os.utime(folder / "router.onnx", ns=(1, 1))
        assert not registry._worth_trying(2)

    asyncio.run(scenario())


def test_fingerprint_sees_size_and_time_changes(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    before = fingerprint(tmp_path)
    (tmp_path / "a").write_bytes(b"12")
    assert fingerprint(tmp_path) != before and fingerprint(tmp_path / "missing") == ()
