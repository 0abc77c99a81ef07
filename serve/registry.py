"""Which bundle version answers: initial load, hot swap (polling the root or an admin call), leases.

A new version is loaded and warmed in a background thread while the old one keeps serving; the switch is
one assignment on the event loop. Requests lease the version they started on, so in-flight requests finish
on the old one, which is closed when its last lease is released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from export.manifest import bundle_versions

from .config import PROVIDERS, ServeConfig
from .errors import NotFound, Unavailable
from .runtime import BundleRuntime

log = logging.getLogger("serve.registry")


class ModelRegistry:
    def __init__(self, config: ServeConfig, loader: Executor,
                 on_swap: Callable[[BundleRuntime], None] = lambda runtime: None,
                 on_failure: Callable[[int, Exception], None] = lambda version, error: None) -> None:
        self.root = Path(config.bundle_root)
        self._config = config
        self._loader = loader
        self._on_swap, self._on_failure = on_swap, on_failure
        self._current: BundleRuntime | None = None
        self._lock = asyncio.Lock()
        self._failed: dict[int, int] = {}  # version → manifest mtime when it failed (retried once rewritten)
        self._high_water = 0  # newest version ever served: polling follows only versions above it

    @property
    def current(self) -> BundleRuntime | None:
        return self._current

    def acquire(self) -> BundleRuntime:
        """Lease the serving version for one request (release it when done)."""
        if self._current is None:
            raise Unavailable("no bundle version is loaded yet: the server is starting, retry shortly.")
        return self._current.acquire()

    def versions(self) -> list[int]:
        return bundle_versions(self.root)

    def newest(self) -> int:
        versions = self.versions()
        if not versions:
            raise NotFound(f"no bundle version under '{self.root}': export one first "
                           "(python -m export RUN_DIR --out ROOT writes ROOT/<version>/).")
        return versions[-1]

    async def load(self, version: int | None = None) -> tuple[int | None, int]:
        """Load + warm `version` (None: the newest) off the event loop, then switch; returns (old, new)."""
        async with self._lock:
            version = version or self.newest()
            old = self._current
            if old is not None and old.version == version:
                return version, version
            folder = self.root / str(version)
            if not (folder / "manifest.json").is_file():
                raise NotFound(f"bundle version {version} not found under '{self.root}' "
                               f"(complete versions: {self.versions()}).")
            try:
                runtime = await asyncio.get_running_loop().run_in_executor(self._loader, self._load_and_warm, folder)
            except Exception as error:  # ManifestError, onnxruntime, OSError: counted, old version kept
                self._failed[version] = self._mtime(version)
                self._on_failure(version, error)
                raise
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

    def _mtime(self, version: int) -> int:
        try:
            return (self.root / str(version) / "manifest.json").stat().st_mtime_ns
        except OSError:
            return 0

    async def poll_once(self) -> bool:
        """Swap to a version newer than any served so far, if one appeared (an admin reload to an older version
        sticks until a newer one is published; a version that failed is retried once its manifest is rewritten)."""
        versions = self.versions()
        current = self._current.version if self._current else 0
        candidates = [v for v in versions if v > self._high_water and self._failed.get(v) != self._mtime(v)]
        if not candidates:
            return False
        try:
            await self.load(candidates[-1])
        except Exception as error:  # keep serving the old version; the failure is logged and counted
            log.error("bundle version %d failed to load, still serving %s: %s", candidates[-1], current, error)
            return False
        return True

    async def watch(self, interval_s: float) -> None:
        """Poll the bundle root every `interval_s` seconds, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            await self.poll_once()

    def close(self) -> None:
        if self._current is not None:
            self._current.retire()
            self._current = None
