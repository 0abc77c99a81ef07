"""One bundle version on onnxruntime: load → warm → execute(batch) → close. Synchronous numpy in, numpy out.

The sessions and the graphs' execution are export's runner (export/runtime.py `TwoStep`: the session options,
one copy of shared weights); what is the server's lives here: router → validated per-sample task id
(onnxruntime silently wraps −1, so ids are checked before they reach a graph) → task-conditioned classifier →
restricted to a hinted task's classes where the caller gave a hint; leases, and which errors are the caller's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument

from export.manifest import (
    LOGITS,
    PIXEL_VALUES,
    PROBABILITIES,
    PROMPT_IDS,
    TASK_CONFIDENCE,
    TASK_ID,
    GraphSpec,
    Manifest,
    load_manifest,
)
from export.runtime import TwoStep

from .errors import BundleBroken, InvalidArgument

NO_HINT = -1  # internal marker in a merged batch; callers' hints are validated before they get here
CLASS_ID = "class_id"
_NUMPY = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_,
          "UINT8": np.uint8}


def numpy_dtype(datatype: str) -> np.dtype:
    return np.dtype(_NUMPY[datatype])


@dataclass
class Timings:
    router: float = 0.0
    classifier: float = 0.0


@dataclass
class BundleRuntime:
    folder: Path
    manifest: Manifest
    runner: TwoStep
    requested_providers: tuple[str, ...]
    _leases: int = 0
    _retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- lifecycle -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: Path, providers: tuple[str, ...], threads: int = 0) -> BundleRuntime:
        """Validate the manifest (and file hashes) and open one onnxruntime session per graph."""
        manifest = load_manifest(folder)
        return cls(Path(folder), manifest, TwoStep.of_bundle(Path(folder), manifest, None, providers, threads),
                   tuple(providers))

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def sessions(self) -> dict:
        """The open onnxruntime sessions by graph ({} once closed)."""
        return self.runner.sessions

    @property
    def providers(self) -> list[str]:
        """What onnxruntime really uses (a requested GPU provider without a GPU falls back silently)."""
        return self.runner.sessions["classifier"].get_providers()

    def warm(self) -> None:
        """Run the pipeline once at batch 1 and 2 so the first request pays no allocation or kernel choice."""
        for n in (1, 2):
            self.execute(np.zeros((n, *self.input_shape[1:]), np.float32), np.full(n, NO_HINT, np.int64))

    def acquire(self) -> BundleRuntime:
        with self._lock:
            self._leases += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            done = self._retired and self._leases == 0
        if done:
            self.close()

    def retire(self) -> None:
        """No new requests: close once the last in-flight one has released it."""
        with self._lock:
            self._retired = True
            done = self._leases == 0
        if done:
            self.close()

    def close(self) -> None:
        self.runner.close()

    # -- shapes and checks ---------------------------------------------------------------------------------
    @property
    def input_shape(self) -> list[int]:
        size = self.manifest.preprocessing.img_size
        return [-1, 3, size, size]

    @property
    def pixel_bytes(self) -> int:
        """Bytes of one image's `pixel_values` (FP32 [3, H, W])."""
        return 4 * 3 * self.manifest.preprocessing.img_size ** 2

    @property
    def num_classes(self) -> int:
        return len(self.manifest.class_names)

    def graph(self, name: str) -> GraphSpec:
        return self.manifest.graphs[name]

    def check_pixels(self, pixels: np.ndarray) -> None:
        expected = self.input_shape
        if pixels.ndim != 4 or list(pixels.shape[1:]) != expected[1:]:
            raise InvalidArgument(f"{PIXEL_VALUES} has shape {list(pixels.shape)}; this bundle takes "
                                  f"[N, {', '.join(map(str, expected[1:]))}] (preprocessed per the manifest).")
        if pixels.shape[0] == 0:
            raise InvalidArgument(f"{PIXEL_VALUES} is an empty batch: send at least one image.")
        if not np.isfinite(pixels).all():
            raise InvalidArgument(f"{PIXEL_VALUES} holds NaN or infinite values.")

    def check_tasks(self, ids: np.ndarray, what: str, error: type[Exception] = InvalidArgument) -> None:
        """0 ≤ id < tasks_learned for every id (onnxruntime would wrap −1 to the last task)."""
        learned = self.manifest.tasks_learned
        bad = ids[(ids < 0) | (ids >= learned)]
        if bad.size:
            raise error(f"{what} {int(bad[0])} is out of range: this bundle (version {self.version}) has learned "
                        f"tasks 0..{learned - 1}.")

    # -- execution -----------------------------------------------------------------------------------------
    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One graph, outputs by name."""
        return self.runner.run(name, feeds)

    def check_graph_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        """What a graph's shape and dtype checks cannot see: task ids learned, prompt ids non-negative."""
        if TASK_ID in feeds:
            self.check_tasks(feeds[TASK_ID], "task_id")
        if PROMPT_IDS in feeds and (feeds[PROMPT_IDS] < 0).any():
            raise InvalidArgument(f"{PROMPT_IDS} must be non-negative prompt indices.")

    def run_graph(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A graph as an OIP model (`feeds` were checked per request before batching; checked again here)."""
        self.check_graph_inputs(feeds)
        try:
            return self.run(name, feeds)
        except OrtInvalidArgument as error:  # e.g. a prompt id beyond the pool: the caller's input
            raise InvalidArgument(f"model '{name}' refused the inputs: {str(error)[:300]}") from None

    def execute(self, pixels: np.ndarray, hints: np.ndarray, timings: Timings | None = None) -> dict[str, np.ndarray]:
        """The two-step pipeline on a batch; `hints[i]` is sample i's task or NO_HINT."""
        timings = timings or Timings()
        hinted = hints != NO_HINT
        routing = self.manifest.routing
        if routing == "task":
            task, confidence = self._route_tasks(pixels, hints, hinted, timings)
            out = self._timed(timings, "classifier", "classifier", {PIXEL_VALUES: pixels, TASK_ID: task})
        elif routing == "prompt_set":
            routed = self._timed(timings, "router", "router", {PIXEL_VALUES: pixels})
            out = self._timed(timings, "classifier", "classifier",
                              {PIXEL_VALUES: pixels, PROMPT_IDS: routed[PROMPT_IDS]})
            confidence = routed[TASK_CONFIDENCE]
            task = np.asarray(self.manifest.class_to_task, np.int64)[out[PROBABILITIES].argmax(axis=1)]
        else:
            out = self._timed(timings, "classifier", "classifier", {PIXEL_VALUES: pixels})
            task, confidence = out[TASK_ID], out[TASK_CONFIDENCE]
            self.check_tasks(task[~hinted], "the bundle's graph returned task_id", BundleBroken)
        probabilities = self._restrict(out[LOGITS], out[PROBABILITIES], hints, hinted)
        task = np.where(hinted, hints, task).astype(np.int64)
        confidence = np.where(hinted, np.float32(1.0), confidence).astype(np.float32)
        return {CLASS_ID: probabilities.argmax(axis=1).astype(np.int64), PROBABILITIES: probabilities,
                TASK_ID: task, TASK_CONFIDENCE: confidence, LOGITS: out[LOGITS]}

    def _timed(self, timings: Timings, stage: str, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.run(graph, feeds)
        setattr(timings, stage, getattr(timings, stage) + time.perf_counter() - start)
        return out

    def _route_tasks(self, pixels, hints, hinted, timings) -> tuple[np.ndarray, np.ndarray]:
        """Router on the samples without a hint (skipped when all have one); ids validated."""
        task = hints.copy()
        confidence = np.ones(len(hints), np.float32)
        if not hinted.all():
            routed = self._timed(timings, "router", "router", {PIXEL_VALUES: np.ascontiguousarray(pixels[~hinted])})
            self.check_tasks(routed[TASK_ID], "the router returned task_id", BundleBroken)
            task[~hinted] = routed[TASK_ID]
            confidence[~hinted] = routed[TASK_CONFIDENCE]
        return task, confidence

    def _restrict(self, logits, probabilities, hints, hinted) -> np.ndarray:
        """Hinted samples: softmax over the hinted task's classes only (the others 0)."""
        if not hinted.any():
            return probabilities
        rows = np.flatnonzero(hinted)
        class_task = np.asarray(self.manifest.class_to_task, np.int64)
        masked = np.where(class_task[None, :] == hints[rows, None], logits[rows], -np.inf)
        masked = np.exp(masked - masked.max(axis=1, keepdims=True))
        restricted = probabilities.copy()
        restricted[rows] = masked / masked.sum(axis=1, keepdims=True)
        return restricted
