"""The dynamic batcher alone: merging, splitting large requests, and a failed batch failing only its culprit."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve.batcher import Batcher
from serve.errors import InvalidArgument

RUNTIME = object()  # the batcher only compares runtimes by identity


def run(coroutine):
    return asyncio.run(coroutine)


async def _batched(execute, sizes: list[int], max_batch_size: int = 8, delay_s: float = 0.2):
    """Submit requests of `sizes` rows at once (row values: the request's index) and gather the outcomes."""
    batcher = Batcher("m", execute, ThreadPoolExecutor(1), max_batch_size, delay_s, 64)
    batcher.start()
    requests = [{"x": np.full(n, i, np.int64)} for i, n in enumerate(sizes)]
    outcomes = await asyncio.gather(*(batcher.submit(RUNTIME, r, None) for r in requests), return_exceptions=True)
    await batcher.close()
    return outcomes


def test_a_failing_merged_batch_is_rerun_request_by_request():
    calls = []

    def execute(runtime, inputs, timings):
        calls.append(inputs["x"].tolist())
        if (inputs["x"] == 1).any():
            raise InvalidArgument("request 1 is bad")
        return {"y": inputs["x"] * 10}

    outcomes = run(_batched(execute, [2, 1, 3]))
    assert calls[0] == [0, 0, 1, 2, 2, 2]  # first merged, then each alone
    assert sorted(map(tuple, calls[1:])) == [(0, 0), (1,), (2, 2, 2)]
    assert outcomes[0].outputs["y"].tolist() == [0, 0] and outcomes[2].outputs["y"].tolist() == [20, 20, 20]
    assert isinstance(outcomes[1], InvalidArgument)


def test_a_request_larger_than_the_batch_size_runs_in_parts():
    sizes = []

    def execute(runtime, inputs, timings):
        sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] + 1}

    (outcome,) = run(_batched(execute, [19], max_batch_size=8, delay_s=0.0))
    assert sizes == [8, 8, 3] and outcome.outputs["y"].tolist() == [1] * 19


@pytest.mark.parametrize("error", [RuntimeError("onnxruntime: out of memory"), InvalidArgument("bad")])
def test_a_lone_failing_request_gets_its_error(error):
    def execute(runtime, inputs, timings):
        raise error

    (outcome,) = run(_batched(execute, [2]))
    assert isinstance(outcome, Exception) and str(error) in str(outcome)
