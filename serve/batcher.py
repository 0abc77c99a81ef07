"""Dynamic batching across concurrent requests, on the event loop; inference runs in a worker thread.

Requests wait in a bounded queue (full → RESOURCE_EXHAUSTED, never unbounded memory). A batch starts when
it holds `max_batch_size` samples or when its first request has waited `max_queue_delay`; it merges only
requests leased to the same bundle version (so a hot swap never mixes versions), drops requests whose
caller cancelled, and fails those whose deadline passed before they ran. Mixed tasks share a batch.

A batch is a convenience, never a shared fate: requests are checked before they are queued, a request
larger than `max_batch_size` is queued as several parts (others' requests run between them), and when a
merged batch fails each of its requests is run again alone, so only the one that caused it fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from .errors import DeadlineExceeded, QueueFull, ServeError, Unavailable
from .runtime import BundleRuntime, Timings

log = logging.getLogger("serve.batcher")
Arrays = dict[str, np.ndarray]
ExecuteFn = Callable[[BundleRuntime, Arrays, Timings], Arrays]


@dataclass
class Job:
    runtime: BundleRuntime
    inputs: Arrays  # batch-first arrays, all with `size` rows
    size: int
    deadline: float | None  # loop time
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class Result:
    outputs: Arrays
    queue_s: float
    timings: Timings
    batch_size: int

    @staticmethod
    def joined(parts: list[Result]) -> Result:
        """One request's result from the results of its parts, in order."""
        if len(parts) == 1:
            return parts[0]
        outputs = {k: np.concatenate([p.outputs[k] for p in parts]) for k in parts[0].outputs}
        timings = Timings(sum(p.timings.router for p in parts), sum(p.timings.classifier for p in parts))
        return Result(outputs, sum(p.queue_s for p in parts), timings, max(p.batch_size for p in parts))


@dataclass
class BatchStats:
    """What a batch reports to metrics (called once per executed batch)."""

    model: str
    size: int
    dropped: int


class Batcher:
    def __init__(self, name: str, execute: ExecuteFn, executor: Executor, max_batch_size: int,
                 max_queue_delay_s: float, max_queue_size: int,
                 on_batch: Callable[[BatchStats], None] = lambda stats: None) -> None:
        self.name, self._execute, self._executor = name, execute, executor
        self.max_batch_size, self.max_queue_delay_s, self.max_queue_size = (
            max_batch_size, max_queue_delay_s, max_queue_size)
        self._on_batch = on_batch
        self._jobs: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._running = asyncio.Event()  # cleared by pause(): nothing is taken from the queue
        self._running.set()
        self._flushing = False  # draining: batches start at once, without waiting for company
        self._closed = False
        self._worker: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def submit(self, runtime: BundleRuntime, inputs: Arrays, deadline: float | None) -> Result:
        """Queue a request (in parts of at most `max_batch_size` rows) and wait for its rows of the outputs."""
        size, step = len(next(iter(inputs.values()))), self.max_batch_size
        parts = []
        for start in range(0, size, step):
            part = inputs if size <= step else {k: v[start:start + step] for k, v in inputs.items()}
            parts.append(await self._submit_part(runtime, part, deadline))
        return Result.joined(parts)

    async def _submit_part(self, runtime: BundleRuntime, inputs: Arrays, deadline: float | None) -> Result:
        if self._closed:
            raise Unavailable("the server is draining: retry on another replica.")
        if len(self._jobs) >= self.max_queue_size:
            raise QueueFull(f"model '{self.name}' has {len(self._jobs)} requests queued (--max-queue-size "
                            f"{self.max_queue_size}): retry with backoff or add replicas.")
        size = len(next(iter(inputs.values())))
        job = Job(runtime, inputs, size, deadline, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._wakeup.set()
        return await job.future  # a cancelled caller cancels the future: the batcher then skips the job

    def pause(self) -> None:
        """Hold every queued request until `resume()` (operators draining a queue by hand; deterministic tests)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def flush(self) -> None:
        """From now on run queued requests at once (a draining server does not wait for batches to fill)."""
        self._flushing = True
        self._running.set()
        self._wakeup.set()

    async def close(self) -> None:
        """Refuse new requests, finish the queued ones, stop the worker."""
        self._closed = True
        self._running.set()
        while self._jobs:
            self._wakeup.set()
            await asyncio.sleep(0.005)
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    # -- worker --------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            batch, dropped = await self._next_batch()
            if batch:
                await self._execute_batch(batch)
            self._on_batch(BatchStats(self.name, sum(j.size for j in batch), dropped))

    async def _next_batch(self) -> tuple[list[Job], int]:
        while not self._jobs:
            self._wakeup.clear()
            await self._wakeup.wait()
        await self._running.wait()
        first = self._jobs[0]
        while self._ready_samples(first) < self.max_batch_size:
            remaining = first.enqueued + self.max_queue_delay_s - time.perf_counter()
            if remaining <= 0 or self._closed or self._flushing:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return self._take(first)

    def _ready_samples(self, first: Job) -> int:
        return sum(j.size for j in self._jobs if j.runtime is first.runtime)

    def _take(self, first: Job) -> tuple[list[Job], int]:
        """Pop the leading jobs of `first`'s bundle version up to the batch size; drop dead ones."""
        batch, size, dropped = [], 0, 0
        now = asyncio.get_running_loop().time()
        while self._jobs and self._jobs[0].runtime is first.runtime:
            job = self._jobs[0]
            if batch and size + job.size > self.max_batch_size:
                break
            self._jobs.popleft()
            if job.future.done():  # cancelled by its caller
                dropped += 1
            elif job.deadline is not None and now >= job.deadline:
                job.future.set_exception(DeadlineExceeded(f"the request's deadline passed after "
                                                          f"{time.perf_counter() - job.enqueued:.3f} s in the queue."))
                dropped += 1
            else:
                batch.append(job)
                size += job.size
        return batch, dropped

    async def _execute_batch(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        merged = {k: np.concatenate([j.inputs[k] for j in batch]) if len(batch) > 1 else batch[0].inputs[k]
                  for k in batch[0].inputs}
        timings = Timings()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._execute, batch[0].runtime, merged, timings)
        except Exception as error:
            if len(batch) > 1:  # whose request caused it? each alone: only that one fails
                for job in batch:
                    await self._execute_batch([job])
                return None
            if not isinstance(error, ServeError):  # a bug or an onnxruntime failure: INTERNAL, keep serving
                log.warning("inference failed for one request: %s: %s", type(error).__name__, error)
                error = ServeError(f"inference failed: {type(error).__name__}: {error}")
            return self._fail(batch, error)
        total = sum(j.size for j in batch)
        bounds = np.cumsum([j.size for j in batch])[:-1]
        parts = {k: np.split(v, bounds) for k, v in outputs.items()}
        for i, job in enumerate(batch):
            if not job.future.done():
                job.future.set_result(Result({k: v[i] for k, v in parts.items()}, start - job.enqueued, timings, total))

    @staticmethod
    def _fail(batch: list[Job], error: Exception) -> None:
        for job in batch:
            if not job.future.done():
                job.future.set_exception(error)
