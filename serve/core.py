"""What every servicer delegates to: lease the serving version, check inputs, preprocess, batch, measure.

Models (the Open Inference Protocol names): `router` and `classifier` run one graph of the bundle as it
is; `pipeline` is the two-step path (router → task-conditioned classifier) as one model. Servicers only
translate protobuf ⇄ numpy and call `request()` + `pipeline()` / `graph()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager

import grpc
import numpy as np

from export.manifest import PIXEL_VALUES, TASK_CONFIDENCE, TASK_ID

from .admission import Admission
from .batcher import Batcher, BatchStats, Result
from .config import ServeConfig
from .errors import InvalidArgument, NotFound, ServeError, Unavailable
from .metrics import Metrics
from .preprocess import ImageError, preprocess
from .runtime import NO_HINT, BundleRuntime, numpy_dtype
from .versions import ModelRegistry

log = logging.getLogger("serve.requests")
PIPELINE, ROUTER, CLASSIFIER = "pipeline", "router", "classifier"
MODELS = (PIPELINE, ROUTER, CLASSIFIER)
IMAGES = "images"
HINTS = "hints"


def models_of(runtime: BundleRuntime) -> list[str]:
    return [m for m in MODELS if m == PIPELINE or m in runtime.manifest.graphs]


def shown(name: str, limit: int = 64) -> str:
    """A caller-supplied name as it may appear in an error message (never kilobytes of it)."""
    return name if len(name) <= limit else f"{name[:limit]}… ({len(name)} characters)"


class InferenceCore:
    def __init__(self, config: ServeConfig, registry: ModelRegistry, metrics: Metrics, executor: Executor,
                 decoder: Executor) -> None:
        self.registry, self.metrics, self.config, self._decoder = registry, metrics, config, decoder
        self.admission = Admission(config.max_inflight_bytes, config.max_queue_size)
        self.draining = False  # set by the server's stop(): new requests get UNAVAILABLE
        self.active = 0  # requests being handled (the drain waits for them)
        execute = {PIPELINE: lambda rt, x, t: rt.execute(x[PIXEL_VALUES], x[HINTS], t),
                   ROUTER: lambda rt, x, t: rt.run_graph(ROUTER, x),
                   CLASSIFIER: lambda rt, x, t: rt.run_graph(CLASSIFIER, x)}
        self.batchers = {name: Batcher(name, fn, executor, config.max_batch_size, config.max_queue_delay_ms / 1000,
                                       config.max_queue_size, self._on_batch) for name, fn in execute.items()}
        for name, batcher in self.batchers.items():
            metrics.queue_depth.labels(name).set_function(lambda b=batcher: b.depth)
        metrics.in_flight.set_function(lambda: self.active)
        metrics.inflight_bytes.set_function(lambda: self.admission.used)

    def start(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()

    def drain(self) -> None:
        """New requests get UNAVAILABLE; queued ones run at once."""
        self.draining = True
        for batcher in self.batchers.values():
            batcher.flush()

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.batchers.values()))

    # -- one request -------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def request(self, model: str, version: str = "") -> AsyncIterator[BundleRuntime]:
        """Lease the serving version for a request on `model`; counts it by status code when it ends."""
        start, runtime, code = time.perf_counter(), None, grpc.StatusCode.OK
        self.active += 1
        try:
            if self.draining:
                raise Unavailable("the server is draining: retry on another replica.")
            runtime = self.registry.acquire()
            self.check_model(runtime, model, version)
            yield runtime
        except ServeError as error:
            code = error.code
            log.debug("%s request refused (%s): %s", shown(model), code.name, error)
            raise
        except asyncio.CancelledError:  # the caller went away or its deadline passed
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            raise
        finally:
            self.active -= 1
            label = model if model in MODELS else "unknown"
            self.metrics.requests.labels(label, str(runtime.version) if runtime else "none", code.name).inc()
            if code == grpc.StatusCode.OK:
                self.metrics.stage_seconds.labels(label, "total").observe(time.perf_counter() - start)
            if runtime is not None:
                runtime.release()

    def check_model(self, runtime: BundleRuntime, model: str, version: str) -> None:
        if model not in models_of(runtime):
            raise NotFound(f"model '{shown(model)}' not found: this server has {models_of(runtime)}.")
        if version not in ("", str(runtime.version)):
            raise NotFound(f"model '{model}' version '{shown(version)}' is not served: version {runtime.version} is "
                           f"(leave the version empty for the current one; versions on disk: "
                           f"{self.registry.versions()}).")

    async def pipeline(self, runtime: BundleRuntime, pixels: np.ndarray | None, images: list[bytes] | None,
                       hints: np.ndarray | None, timeout_s: float | None, wire_bytes: int = 0) -> Result:
        """Two-step classification of preprocessed pixels or encoded images, with optional per-sample hints."""
        if (pixels is None) == (images is None):
            raise InvalidArgument(f"send exactly one of '{PIXEL_VALUES}' (FP32 [N,3,H,W]) or '{IMAGES}' "
                                  "(encoded JPEG/PNG bytes).")
        if images is not None and not images:
            raise InvalidArgument(f"'{IMAGES}' is an empty batch: send at least one image.")
        if pixels is not None:
            runtime.check_pixels(pixels)
        count = len(images) if images is not None else len(pixels)
        self._check_count(count)
        hints = self._hints(runtime, hints, count)
        async with self.admission.hold(wire_bytes + count * runtime.pixel_bytes, timeout_s):
            prep_s = 0.0
            if images is not None:
                start = time.perf_counter()
                pixels = await self._decode(images, runtime)
                prep_s = time.perf_counter() - start
            inputs = {PIXEL_VALUES: np.ascontiguousarray(pixels, np.float32), HINTS: hints}
            result = await self.batchers[PIPELINE].submit(runtime, inputs, self._deadline(timeout_s))
        self._observe(PIPELINE, result, prep_s)
        self._observe_routing(result, hints)
        return result

    async def graph(self, runtime: BundleRuntime, name: str, inputs: dict[str, np.ndarray],
                    timeout_s: float | None, wire_bytes: int = 0) -> Result:
        """One graph of the bundle, inputs checked against the manifest's tensor specs (and task ids against
        the tasks learned) before they can share a batch with anyone else's."""
        spec = runtime.graph(name)
        expected = {t.name: t for t in spec.inputs}
        if set(inputs) != set(expected):
            raise InvalidArgument(f"model '{name}' takes inputs {sorted(expected)}, got "
                                  f"{sorted(shown(k) for k in inputs)[:8]}.")
        sizes = set()
        for key, array in inputs.items():
            want = expected[key]
            if not isinstance(array, np.ndarray) or array.dtype != numpy_dtype(want.datatype):
                raise InvalidArgument(f"input '{key}' must be {want.datatype} {want.shape}.")
            if array.ndim != len(want.shape) or any(w not in (-1, d) for w, d in zip(want.shape, array.shape)):
                raise InvalidArgument(f"input '{key}' has shape {list(array.shape)}; model '{name}' takes "
                                      f"{want.shape}.")
            sizes.add(array.shape[0])
        if len(sizes) != 1 or 0 in sizes:
            raise InvalidArgument(f"inputs of model '{name}' need one non-empty batch size, got {sorted(sizes)}.")
        runtime.check_pixels(inputs[PIXEL_VALUES])
        runtime.check_graph_inputs(inputs)
        self._check_count(sizes.pop())
        async with self.admission.hold(wire_bytes + sum(a.nbytes for a in inputs.values()), timeout_s):
            result = await self.batchers[name].submit(runtime, inputs, self._deadline(timeout_s))
        self._observe(name, result, 0.0)
        return result

    # -- helpers -----------------------------------------------------------------------------------------------
    def _check_count(self, count: int) -> None:
        limit = self.config.max_images_per_request
        if count > limit:
            raise InvalidArgument(f"the request holds {count} images; at most {limit} per request are accepted "
                                  "(--max-images-per-request): split it into several requests.")

    async def _decode(self, images: list[bytes], runtime: BundleRuntime) -> np.ndarray:
        """Images → pixels on the decode workers (bounded: at most `decode_threads` images decode at once)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._decoder, preprocess, images, runtime.manifest.preprocessing,
                                              self.config.max_image_pixels)
        except ImageError as error:
            raise InvalidArgument(str(error)) from None

    @staticmethod
    def _hints(runtime: BundleRuntime, hints: np.ndarray | None, n: int) -> np.ndarray:
        if hints is None:
            return np.full(n, NO_HINT, np.int64)
        hints = np.asarray(hints).reshape(-1)
        if hints.shape != (n,):
            raise InvalidArgument(f"task hints have {hints.size} entries for {n} images: give one per image.")
        runtime.check_tasks(hints, "task hint")
        return hints.astype(np.int64)

    @staticmethod
    def _deadline(timeout_s: float | None) -> float | None:
        return None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s

    def _observe(self, model: str, result: Result, prep_s: float) -> None:
        stages = self.metrics.stage_seconds
        stages.labels(model, "queue").observe(result.queue_s)
        if prep_s:
            stages.labels(model, "preprocess").observe(prep_s)
        if result.timings.router:
            stages.labels(model, "router").observe(result.timings.router)
        if result.timings.classifier:
            stages.labels(model, "classifier").observe(result.timings.classifier)

    def _observe_routing(self, result: Result, hints: np.ndarray) -> None:
        """Routed-task counters by task and source, one increment per (task, source) of the batch."""
        routed = hints == NO_HINT
        for source, rows in (("router", routed), ("hint", ~routed)):
            counts = np.bincount(result.outputs[TASK_ID][rows])  # ids are checked: 0 ≤ id < tasks learned
            for task in np.flatnonzero(counts).tolist():  # (np.unique: 14 µs a call here, bincount 4 µs)
                self.metrics.routed.labels(str(task), source).inc(int(counts[task]))
        for confidence in result.outputs[TASK_CONFIDENCE][routed].tolist():
            self.metrics.confidence.observe(confidence)

    def _on_batch(self, stats: BatchStats) -> None:
        if stats.size:
            self.metrics.batch_size.labels(stats.model).observe(stats.size)
        if stats.dropped:
            self.metrics.dropped.labels(stats.model).inc(stats.dropped)
