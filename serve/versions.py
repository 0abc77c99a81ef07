"""Which bundle version answers: initial load, hot swap (polling the root or an admin call), leases.

A new version is loaded and warmed in a background thread while the old one keeps serving; the switch is
one assignment on the event loop. Requests lease the version they started on, so in-flight requests finish
on the old one, which is closed when its last lease is released.

The bundle root is read as untrusted input: entries that are no version folder are ignored (one warning
each, counted), a version that fails to load is retried whenever its files change (a publisher still
copying) until `retry_window_s` has passed, and the polling task survives any error (logged, counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from export.manifest import scan_bundle_root

from .config import PROVIDERS, ServeConfig
from .errors import NotFound, Unavailable
from .runtime import BundleRuntime

log = logging.getLogger("serve.versions")
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass
class Failure:
    first: float  # monotonic time of the first failure
    fingerprint: Fingerprint  # the folder's files when it last failed


def fingerprint(folder: Path) -> Fingerprint:
    """(name, size, mtime) of every file in a version folder: changes while a publisher is still writing."""
    try:
        return tuple(sorted((str(p.relative_to(folder)), s.st_size, s.st_mtime_ns)
                            for p in folder.rglob("*") if (s := p.stat()) and p.is_file()))
    except OSError:
        return ()


class ModelRegistry:
    def __init__(self, config: ServeConfig, loader: Executor,
                 on_swap: Callable[[BundleRuntime], None] = lambda runtime: None,
                 on_failure: Callable[[int, Exception], None] = lambda version, error: None,
                 on_ignored: Callable[[int], None] = lambda count: None) -> None:
        self.root = Path(config.bundle_root)
        self._config = config
        self._loader = loader
        self._on_swap, self._on_failure, self._on_ignored = on_swap, on_failure, on_ignored
        self._current: BundleRuntime | None = None
        self._lock = asyncio.Lock()
        self._failed: dict[int, Failure] = {}
        self._warned: set[str] = set()  # ignored entries already reported (one warning each, not one per poll)
        self._high_water = 0  # newest version ever served: polling follows only versions above it
        self.skipped: list[tuple[int, str]] = []  # versions passed over at start-up, and why

    @property
    def current(self) -> BundleRuntime | None:
        return self._current

    def acquire(self) -> BundleRuntime:
        """Lease the serving version for one request (release it when done)."""
        if self._current is None:
            raise Unavailable("no bundle version is loaded yet: the server is starting, retry shortly.")
        return self._current.acquire()

    def versions(self) -> list[int]:
        versions, ignored = scan_bundle_root(self.root)
        for name in sorted(set(ignored) - self._warned):
            log.warning("ignoring '%s' in bundle root '%s': version folders are named 1, 2, ... (ASCII digits, "
                        "below 2^63, inside the root)", name[:80], self.root)
        self._warned |= set(ignored)
        self._on_ignored(len(ignored))
        return versions

    async def start(self, version: int | None) -> None:
        """Serve `version`, or the newest version that loads (the ones that don't are skipped and reported)."""
        if version is not None:
            await self.load(version)
            return
        candidates = self.versions()
        if not candidates:
            raise NotFound(f"no bundle version under '{self.root}': export one first "
                           "(python -m export RUN_DIR --out ROOT writes ROOT/<version>/).")
        for candidate in reversed(candidates):
            try:
                await self.load(candidate)
            except Exception as error:  # noqa: BLE001 - any broken version is skipped, the reason kept
                self.skipped.append((candidate, str(error)))
                log.warning("skipping bundle version %d at start-up: %s", candidate, error)
                continue
            return
        raise NotFound(f"none of the bundle versions {candidates} under '{self.root}' loads: "
                       + "; ".join(f"{v}: {why}" for v, why in self.skipped))

    async def load(self, version: int | None = None) -> tuple[int | None, int]:
        """Load + warm `version` (None: the newest) off the event loop, then switch; returns (old, new)."""
        async with self._lock:
            versions = self.versions()
            if version is None:
                if not versions:
                    raise NotFound(f"no bundle version under '{self.root}'.")
                version = versions[-1]
            old = self._current
            if old is not None and old.version == version:
                return version, version
            if version not in versions:
                raise NotFound(f"bundle version {version} not found under '{self.root}' "
                               f"(complete versions: {versions}).")
            folder = self.root / str(version)
            try:
                runtime = await asyncio.get_running_loop().run_in_executor(self._loader, self._load_and_warm, folder)
            except Exception as error:  # ManifestError, onnxruntime, OSError: counted, old version kept
                failure = self._failed.setdefault(version, Failure(time.monotonic(), ()))
                failure.fingerprint = fingerprint(folder)
                self._on_failure(version, error)
                raise
            self._failed.pop(version, None)
            self._current = runtime
            self._high_water = max(self._high_water, version)
            if old is not None:
                old.retire()
            self._on_swap(runtime)
            log.info("serving bundle version %d (%s, providers %s)", version, folder, runtime.providers)
            return (old.version if old else None), version

    def _load_and_warm(self, folder: Path) -> BundleRuntime:
        runtime = BundleRuntime.load(folder, PROVIDERS[self._config.provider], self._config.intra_op_threads)
        runtime.warm()
        return runtime

    def _worth_trying(self, version: int) -> bool:
        """Never tried, or failed but its files changed since, within the retry window."""
        failure = self._failed.get(version)
        if failure is None:
            return True
        if time.monotonic() - failure.first > self._config.load_retry_window_s:
            return False
        return fingerprint(self.root / str(version)) != failure.fingerprint

    async def poll_once(self) -> bool:
        """Swap to a version newer than any served so far, if one appeared (an admin reload to an older version
        sticks until a newer one is published; a version that failed is retried while its files change)."""
        candidates = [v for v in self.versions() if v > self._high_water and self._worth_trying(v)]
        if not candidates:
            return False
        current = self._current.version if self._current else None
        try:
            await self.load(candidates[-1])
        except Exception as error:  # noqa: BLE001 - keep serving the old version; logged and counted
            log.warning("bundle version %d failed to load, still serving %s (retried when its files change): %s",
                        candidates[-1], current, error)
            return False
        return True

    async def watch(self, interval_s: float, on_error: Callable[[], None] = lambda: None) -> None:
        """Poll the bundle root every `interval_s` seconds until cancelled; an error never ends the loop."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - e.g. the root unreadable for a moment: say so, poll again
                on_error()
                log.exception("polling bundle root '%s' failed; polling goes on", self.root)

    def close(self) -> None:
        if self._current is not None:
            self._current.retire()
            self._current = None
