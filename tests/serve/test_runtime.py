"""One bundle version on onnxruntime, alone (serve.runtime.BundleRuntime on synthetic bundles' real graphs):
task hints, the checks that keep bad ids away from the graphs, a broken bundle's answers, leases."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from export.manifest import LOGITS, PROBABILITIES, PROMPT_IDS, TASK_CONFIDENCE, TASK_ID
from serve.errors import BundleBroken, InvalidArgument
from serve.runtime import CLASS_ID, NO_HINT, BundleRuntime
from tests.helpers.bundles import IMG, TOP_K, class_to_task, write_bundle

CPU = ("CPUExecutionProvider",)
ROUTINGS = ("task", "prompt_set", "none")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, object]:
    """Version 1 of one bundle root per routing (2 of 3 tasks learned)."""
    return {r: write_bundle(tmp_path_factory.mktemp(r), 1, routing=r) for r in ROUTINGS}


@pytest.fixture
def runtime(folders, request) -> BundleRuntime:
    loaded = BundleRuntime.load(folders[getattr(request, "param", "task")], CPU)
    yield loaded
    loaded.close()


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, IMG, IMG)).astype(np.float32) * 2


def no_hints(n: int) -> np.ndarray:
    return np.full(n, NO_HINT, np.int64)


@pytest.mark.parametrize("runtime", ROUTINGS, indirect=True)
def test_unhinted_answers_are_the_classifiers_and_hinted_rows_leave_the_others_alone(runtime):
    x = pixels(6)
    plain = runtime.execute(x, no_hints(6))
    assert np.array_equal(plain[CLASS_ID], plain[PROBABILITIES].argmax(axis=1))
    hints = np.array([1, NO_HINT, 0, NO_HINT, 1, NO_HINT], np.int64)
    mixed = runtime.execute(x, hints)
    free = hints == NO_HINT
    for name in (CLASS_ID, TASK_ID):
        assert np.array_equal(mixed[name][free], plain[name][free])
    for name in (TASK_CONFIDENCE, PROBABILITIES):  # the router may have run on fewer rows: float rounding only
        np.testing.assert_allclose(mixed[name][free], plain[name][free], atol=1e-6)


@pytest.mark.parametrize("runtime", ROUTINGS, indirect=True)
def test_a_hint_restricts_the_answer_to_that_tasks_classes(runtime):
    hints = np.array([0, 1, 1, 0], np.int64)
    out = runtime.execute(pixels(4, seed=3), hints)
    outside = np.array(class_to_task())[None, :] != hints[:, None]
    assert (out[PROBABILITIES][outside] == 0).all()
    np.testing.assert_allclose(out[PROBABILITIES].sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(np.array(class_to_task())[out[CLASS_ID]], hints)
    assert np.array_equal(out[TASK_ID], hints) and (out[TASK_CONFIDENCE] == 1.0).all()


def test_the_router_runs_only_on_the_unhinted_rows(runtime):
    x = pixels(5, seed=1)
    router = ort.InferenceSession(str(runtime.folder / "router.onnx"), providers=list(CPU))
    hints = np.array([NO_HINT, 0, NO_HINT, 1, NO_HINT], np.int64)
    routed_alone = router.run([TASK_ID], {"pixel_values": x[hints == NO_HINT]})[0]
    assert np.array_equal(runtime.execute(x, hints)[TASK_ID][hints == NO_HINT], routed_alone)
    assert runtime.execute(x, np.zeros(5, np.int64))[LOGITS].shape == (5, len(class_to_task()))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3, IMG, IMG + 1), np.float32), "has shape"),
    (np.zeros((2, 3 * IMG * IMG), np.float32), "has shape"),
    (np.zeros((0, 3, IMG, IMG), np.float32), "empty batch"),
    (np.full((1, 3, IMG, IMG), np.inf, np.float32), "NaN or infinite")])
def test_pixels_that_no_graph_should_see_are_refused(runtime, bad, message):
    with pytest.raises(InvalidArgument, match=message):
        runtime.check_pixels(bad)


def test_task_ids_outside_the_learned_tasks_are_refused_before_a_graph_wraps_them(runtime):
    runtime.check_tasks(np.array([0, 1]), "task hint")
    for bad in (-1, 2):  # onnxruntime would read -1 as the last task; 2 is a task not learned yet
        with pytest.raises(InvalidArgument, match=f"task hint {bad} is out of range.*tasks 0..1"):
            runtime.check_tasks(np.array([0, bad]), "task hint")
        with pytest.raises(InvalidArgument, match="task_id"):
            runtime.run_graph("classifier", {"pixel_values": pixels(2), TASK_ID: np.array([0, bad], np.int64)})


@pytest.mark.parametrize("runtime", ["prompt_set"], indirect=True)
def test_prompt_ids_are_the_callers_error_below_zero_and_beyond_the_pool(runtime):
    x = pixels(1)
    with pytest.raises(InvalidArgument, match="non-negative"):
        runtime.run_graph("classifier", {"pixel_values": x, PROMPT_IDS: np.full((1, TOP_K), -1, np.int64)})
    with pytest.raises(InvalidArgument, match="refused the inputs"):
        runtime.run_graph("classifier", {"pixel_values": x, PROMPT_IDS: np.full((1, TOP_K), 99, np.int64)})


def test_a_router_answering_a_task_not_learned_is_the_bundles_fault(runtime):
    x = pixels(32, seed=2)
    assert (runtime.execute(x, no_hints(32))[TASK_ID] == 1).any()  # the router does pick task 1
    one_task = runtime.manifest.model_copy(update={"tasks_learned": 1})
    broken = BundleRuntime(runtime.folder, one_task, runtime.runner, CPU)
    with pytest.raises(BundleBroken, match="the router returned task_id 1"):
        broken.execute(x, no_hints(32))


def test_a_retired_version_closes_when_its_last_lease_ends(runtime):
    runtime.warm()
    assert runtime.providers == list(CPU)
    first, second = runtime.acquire(), runtime.acquire()
    runtime.retire()
    first.release()
    assert runtime.sessions, "closed while a request still held it"
    assert runtime.execute(pixels(1), no_hints(1))[CLASS_ID].shape == (1,)
    second.release()
    assert runtime.sessions == {}


def test_retiring_an_idle_version_closes_it_at_once(runtime):
    runtime.retire()
    assert runtime.sessions == {}
