"""Admission control: a byte budget for all work in flight, so memory stays bounded whatever callers send.

A request holds its cost (wire bytes + the pixels it will decode to) from before decoding until its answer is
built. One that does not fit waits until enough is released or its deadline passes; when `max_waiting`
requests already wait, it is refused at once. A small request that fits goes ahead of a large one that waits,
so a caller sending huge requests slows itself first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import DeadlineExceeded, QueueFull

MiB = 1 << 20


class Admission:
    def __init__(self, budget_bytes: int, max_waiting: int) -> None:
        self.budget, self.max_waiting = budget_bytes, max_waiting
        self.used = 0
        self._waiting = 0
        self._released = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, cost: int, timeout_s: float | None) -> AsyncIterator[None]:
        """Hold `cost` bytes of the budget for the body of the `async with`."""
        if cost > self.budget:
            raise QueueFull(f"the request needs {cost / MiB:.1f} MiB to run, more than the server's whole budget "
                            f"(--max-inflight-mb {self.budget // MiB}): send fewer or smaller images per request.")
        if self.used + cost > self.budget:
            await self._wait_for(cost, timeout_s)
        self.used += cost
        try:
            yield
        finally:
            self.used -= cost
            async with self._released:
                self._released.notify_all()

    async def _wait_for(self, cost: int, timeout_s: float | None) -> None:
        if self._waiting >= self.max_waiting:
            raise QueueFull(f"{self._waiting} requests already wait for memory (--max-inflight-mb "
                            f"{self.budget // MiB}, --max-queue-size {self.max_waiting}): retry with backoff.")
        self._waiting += 1
        try:
            async with self._released, asyncio.timeout(timeout_s):
                await self._released.wait_for(lambda: self.used + cost <= self.budget)
        except TimeoutError:
            raise DeadlineExceeded("the request's deadline passed while it waited for the server's memory budget "
                                   f"(--max-inflight-mb {self.budget // MiB}).") from None
        finally:
            self._waiting -= 1
