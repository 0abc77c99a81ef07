"""What every servicer delegates to, alone (serve.core.InferenceCore with a real registry, batchers and
onnxruntime on a synthetic bundle, no gRPC): leases and per-status counts, draining, the checks a request
passes before it may share a batch, and the routing metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from export.manifest import PIXEL_VALUES, PROBABILITIES, TASK_ID
from serve.core import CLASSIFIER, PIPELINE, ROUTER, InferenceCore
from serve.errors import InvalidArgument, NotFound, Unavailable
from serve.metrics import Metrics
from serve.runtime import CLASS_ID, NO_HINT
from serve.versions import ModelRegistry
from tests.helpers.bundles import IMG
from tests.helpers.servers import local_config, metric_value

TIMEOUT_S = 30.0


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, IMG, IMG)).astype(np.float32) * 2


@asynccontextmanager
async def serving(root: Path, **overrides) -> AsyncIterator[InferenceCore]:
    """An InferenceCore over `root`'s newest version, its batchers running on this event loop."""
    config = local_config(root, max_queue_delay_ms=1.0, **overrides)
    with ThreadPoolExecutor(1) as loader, ThreadPoolExecutor(2) as executor, ThreadPoolExecutor(1) as decoder:
        registry = ModelRegistry(config, loader)
        await registry.start(None)
        core = InferenceCore(config, registry, Metrics(), executor, decoder)
        core.start()
        try:
            yield core
        finally:
            await core.close()
            registry.close()


def count(core: InferenceCore, name: str, **labels: str) -> float:
    return metric_value(generate_latest(core.metrics.registry).decode(), name, **labels)


async def classify(core: InferenceCore, x: np.ndarray, hints: np.ndarray | None = None):
    async with core.request(PIPELINE) as runtime:
        return await core.pipeline(runtime, x, None, hints, TIMEOUT_S)


def test_a_pipeline_request_answers_as_the_runtime_and_is_counted_once_done(bundle_root):
    async def scenario():
        async with serving(bundle_root) as core:
            x = pixels(3)
            result = await classify(core, x)
            want = core.registry.current.execute(x, np.full(3, NO_HINT, np.int64))
            assert np.array_equal(result.outputs[CLASS_ID], want[CLASS_ID])
            np.testing.assert_allclose(result.outputs[PROBABILITIES], want[PROBABILITIES], atol=1e-6)
            assert count(core, "hidecl_requests_total", model=PIPELINE, version="1", code="OK") == 1
            assert core.active == 0
            runtime = core.registry.current
            core.registry.close()  # retired: closes at once only if the request gave its lease back
            assert runtime.sessions == {}

    asyncio.run(scenario())


def test_unknown_models_and_versions_are_not_found_and_counted_as_such(bundle_root):
    async def scenario():
        async with serving(bundle_root) as core:
            with pytest.raises(NotFound, match=r"model 'resnet' not found: this server has \['pipeline', 'router'"):
                async with core.request("resnet"):
                    pass
            with pytest.raises(NotFound, match=r"version '7' is not served: version 1 is.*on disk: \[1\]"):
                async with core.request(PIPELINE, "7"):
                    pass
            async with core.request(ROUTER, "1"):  # the serving version by its number is fine
                pass
            assert count(core, "hidecl_requests_total", model="unknown", code="NOT_FOUND") == 1
            assert count(core, "hidecl_requests_total", model=PIPELINE, code="NOT_FOUND") == 1
            assert count(core, "hidecl_requests_total", model=ROUTER, code="OK") == 1

    asyncio.run(scenario())


def test_a_draining_server_refuses_new_requests_as_unavailable(bundle_root):
    async def scenario():
        async with serving(bundle_root) as core:
            core.drain()
            with pytest.raises(Unavailable, match="draining"):
                await classify(core, pixels(1))
            assert count(core, "hidecl_requests_total", version="none", code="UNAVAILABLE") == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("x, images, hints, message", [
    (None, None, None, "exactly one of"),
    (pixels(1), [b"png"], None, "exactly one of"),
    (None, [], None, "empty batch"),
    (pixels(2), None, np.array([0]), "1 entries for 2 images"),
    (pixels(2), None, np.array([0, 2]), "task hint 2 is out of range"),
    (pixels(3), None, None, "holds 3 images; at most 2"),
])
def test_pipeline_requests_are_checked_before_they_join_a_batch(bundle_root, x, images, hints, message):
    async def scenario():
        async with serving(bundle_root, max_images_per_request=2) as core:
            with pytest.raises(InvalidArgument, match=message):
                async with core.request(PIPELINE) as runtime:
                    await core.pipeline(runtime, x, images, hints, TIMEOUT_S)
            assert count(core, "hidecl_batch_size_count") == 0  # nothing reached a graph

    asyncio.run(scenario())


def test_routed_samples_are_counted_by_task_and_source(bundle_root):
    async def scenario():
        async with serving(bundle_root) as core:
            routed = (await classify(core, pixels(4, seed=5))).outputs[TASK_ID]
            await classify(core, pixels(2), hints=np.array([1, 1]))
            for task in (0, 1):
                assert count(core, "hidecl_routed_samples_total", task=str(task), source="router") == \
                    (routed == task).sum()
            assert count(core, "hidecl_routed_samples_total", task="1", source="hint") == 2
            assert count(core, "hidecl_router_confidence_count") == 4  # the router's samples only

    asyncio.run(scenario())


def test_a_graph_request_answers_as_the_graph(bundle_root):
    async def scenario():
        async with serving(bundle_root) as core:
            x = pixels(2)
            async with core.request(CLASSIFIER) as runtime:
                inputs = {PIXEL_VALUES: x, TASK_ID: np.array([1, 0], np.int64)}
                result = await core.graph(runtime, CLASSIFIER, inputs, TIMEOUT_S)
                want = runtime.run(CLASSIFIER, inputs)
            assert result.outputs.keys() == want.keys()
            for name, value in want.items():
                np.testing.assert_allclose(result.outputs[name], value, atol=1e-6)

    asyncio.run(scenario())


@pytest.mark.parametrize("inputs, message", [
    ({PIXEL_VALUES: pixels(1)}, r"takes inputs \['pixel_values', 'task_id'\]"),
    ({PIXEL_VALUES: pixels(1).astype(np.float64), TASK_ID: np.zeros(1, np.int64)}, "must be FP32"),
    ({PIXEL_VALUES: pixels(1), TASK_ID: np.zeros(1, np.int32)}, "must be INT64"),
    ({PIXEL_VALUES: pixels(1), TASK_ID: np.zeros((1, 1), np.int64)}, "has shape"),
    ({PIXEL_VALUES: pixels(2), TASK_ID: np.zeros(1, np.int64)}, "one non-empty batch size"),
    ({PIXEL_VALUES: pixels(1), TASK_ID: np.full(1, 5, np.int64)}, "task_id 5 is out of range"),
])
def test_graph_inputs_are_checked_against_the_manifest_before_they_join_a_batch(bundle_root, inputs, message):
    async def scenario():
        async with serving(bundle_root) as core:
            with pytest.raises(InvalidArgument, match=message):
                async with core.request(CLASSIFIER) as runtime:
                    await core.graph(runtime, CLASSIFIER, inputs, TIMEOUT_S)
            assert count(core, "hidecl_batch_size_count") == 0

    asyncio.run(scenario())
