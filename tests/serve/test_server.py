"""In-process gRPC server on 127.0.0.1:0 serving synthetic bundles: the two-step pipeline against the bundle's
graphs run directly, every routing, task hints, images, metadata, health, batching, queue, deadlines."""

from __future__ import annotations

import concurrent.futures
import io
import shutil
import subprocess

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from serve.protos import load
from tests.helpers.bundles import IMG, MEAN, NUM_CLASSES, STD, class_to_task, write_bundle
from tests.helpers.servers import ServerThread, local_config, metric_value, oip_outputs, oip_request, wait_for

pb, pb_grpc = load("inference")
cpb, cpb_grpc = load("continual")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def roots_by_routing(tmp_path_factory):
    """One bundle root per routing, version 1 with 2 of 3 tasks learned."""
    roots = {}
    for routing in ("task", "prompt_set", "none"):
        roots[routing] = tmp_path_factory.mktemp(routing)
        write_bundle(roots[routing], 1, routing=routing)
    return roots


@pytest.fixture(scope="module")
def servers(roots_by_routing):
    running = {r: ServerThread(local_config(root, max_queue_delay_ms=1.0)) for r, root in roots_by_routing.items()}
    yield running
    for server in running.values():
        server.stop()


def stubs(target: str):
    channel = grpc.insecure_channel(target)
    return pb_grpc.GRPCInferenceServiceStub(channel), cpb_grpc.ContinualClassifierStub(channel)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, IMG, IMG)).astype(np.float32) * 2


def direct(folder, routing: str, x: np.ndarray, hints: np.ndarray | None = None) -> dict:
    """The bundle's graphs run directly with onnxruntime: what the pipeline must answer."""
    sessions = {p.stem: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for p in folder.glob("*.onnx")}
    run = lambda name, feeds: dict(zip([o.name for o in sessions[name].get_outputs()], sessions[name].run(None, feeds)))
    if routing == "task":
        routed = run("router", {"pixel_values": x})
        task = routed["task_id"] if hints is None else hints
        out = run("classifier", {"pixel_values": x, "task_id": task})
        confidence = routed["task_confidence"] if hints is None else np.ones(len(x), np.float32)
    elif routing == "prompt_set":
        routed = run("router", {"pixel_values": x})
        out = run("classifier", {"pixel_values": x, "prompt_ids": routed["prompt_ids"]})
        task = np.array(class_to_task())[out["probabilities"].argmax(1)] if hints is None else hints
        confidence = routed["task_confidence"] if hints is None else np.ones(len(x), np.float32)
    else:
        out = run("classifier", {"pixel_values": x})
        task = out["task_id"] if hints is None else hints
        confidence = out["task_confidence"] if hints is None else np.ones(len(x), np.float32)
    probs = out["probabilities"]
    if hints is not None:
        allowed = np.array(class_to_task())[None, :] == hints[:, None]
        logits = np.where(allowed, out["logits"], -np.inf)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs = probs / probs.sum(1, keepdims=True)
    return {"class_id": probs.argmax(1), "probabilities": probs, "task_id": task, "task_confidence": confidence}


@pytest.mark.parametrize("routing", ["task", "prompt_set", "none"])
@pytest.mark.parametrize("hinted", [False, True])
def test_pipeline_equals_the_bundles_graphs(servers, roots_by_routing, routing, hinted):
    oip, _ = stubs(servers[routing].target)
    x = pixels(6, seed=1)
    hints = np.array([0, 1, 0, 1, 1, 0], np.int64) if hinted else None
    inputs = {"pixel_values": x} | ({"task_id": hints} if hinted else {})
    response = oip.ModelInfer(oip_request(pb, "pipeline", inputs), timeout=30)
    got, want = oip_outputs(response), direct(roots_by_routing[routing] / "1", routing, x, hints)
    assert response.model_version == "1" and response.id == "t"
    assert [o.name for o in response.outputs] == ["class_id", "class_name", "probabilities", "task_id",
                                                  "task_confidence"]
    np.testing.assert_array_equal(got["class_id"], want["class_id"])
    assert got["class_name"] == [f"class_{c}".encode() for c in want["class_id"]]  # names from the manifest
    np.testing.assert_array_equal(got["task_id"], want["task_id"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["task_confidence"], want["task_confidence"], rtol=1e-5, atol=1e-6)
    if hinted:  # the prediction stays within the hinted task's classes
        assert all(class_to_task()[c] == h for c, h in zip(got["class_id"], hints))
        assert (got["probabilities"][np.array(class_to_task())[None, :] != hints[:, None]] == 0).all()


def test_router_skipped_and_mixed_tasks_in_one_batch(servers, roots_by_routing):
    """Concurrent requests with different hints (and none) share batches; each gets its own answer."""
    server = servers["task"]
    oip, _ = stubs(server.target)
    cases = [(pixels(2, seed=s), None if s % 3 == 0 else np.full(2, s % 2, np.int64)) for s in range(12)]

    def call(case):
        x, hints = case
        inputs = {"pixel_values": x} | ({} if hints is None else {"task_id": hints})
        return oip_outputs(oip.ModelInfer(oip_request(pb, "pipeline", inputs), timeout=30))

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, cases))
    for (x, hints), got in zip(cases, results):
        want = direct(roots_by_routing["task"] / "1", "task", x, hints)
        np.testing.assert_array_equal(got["class_id"], want["class_id"])
        np.testing.assert_array_equal(got["task_id"], want["task_id"])


def test_dynamic_batching_merges_concurrent_requests(roots_by_routing):
    """8 single-image requests queued while the batcher is held run as one batch of 8, each with its own answer."""
    server = ServerThread(local_config(roots_by_routing["task"], max_batch_size=8))
    try:
        oip, _ = stubs(server.target)
        queue = server.server.core.batchers["pipeline"]
        server.loop.call_soon_threadsafe(queue.pause)
        futures = [oip.ModelInfer.future(oip_request(pb, "pipeline", {"pixel_values": pixels(1, i)}), timeout=30)
                   for i in range(8)]
        wait_for(lambda: queue.depth == 8, what="8 queued requests")
        server.loop.call_soon_threadsafe(queue.resume)
        for i, future in enumerate(futures):
            got = oip_outputs(future.result())
            assert got["class_id"] == direct(roots_by_routing["task"] / "1", "task", pixels(1, i), None)["class_id"]
        text = server.metrics_text()
        assert metric_value(text, "hidecl_batch_size_sum", model="pipeline") == 8
        assert metric_value(text, "hidecl_batch_size_count", model="pipeline") == 1
    finally:
        server.stop()


def test_raw_graph_models(servers, roots_by_routing):
    oip, _ = stubs(servers["task"].target)
    x = pixels(3, seed=2)
    routed = oip_outputs(oip.ModelInfer(oip_request(pb, "router", {"pixel_values": x}), timeout=30))
    direct_router = ort.InferenceSession(str(roots_by_routing["task"] / "1" / "router.onnx"))
    np.testing.assert_array_equal(routed["task_id"], direct_router.run(["task_id"], {"pixel_values": x})[0])
    assert routed["router_logits"].shape == (3, NUM_CLASSES)
    tasks = np.array([1, 0, 1], np.int64)
    response = oip.ModelInfer(oip_request(pb, "classifier", {"pixel_values": x, "task_id": tasks},
                                          outputs=("probabilities",)), timeout=30)
    assert [o.name for o in response.outputs] == ["probabilities"]
    want = ort.InferenceSession(str(roots_by_routing["task"] / "1" / "classifier.onnx")).run(
        ["probabilities"], {"pixel_values": x, "task_id": tasks})[0]
    np.testing.assert_allclose(oip_outputs(response)["probabilities"], want, rtol=1e-6)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_are_preprocessed_per_the_manifest(servers, roots_by_routing):
    """Encoded PNGs (RGB and grayscale, already at the input size) equal (x/255 − mean)/std through the graphs."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (IMG, IMG), dtype=np.uint8)
    expected = np.stack([rgb.transpose(2, 0, 1), np.repeat(gray[None], 3, 0)]).astype(np.float32) / 255
    expected = (expected - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    oip, classifier = stubs(servers["task"].target)
    got = oip_outputs(oip.ModelInfer(oip_request(pb, "pipeline", {"images": [png(rgb), png(gray)]}), timeout=30))
    want = direct(roots_by_routing["task"] / "1", "task", expected.astype(np.float32))
    np.testing.assert_array_equal(got["class_id"], want["class_id"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)
    reply = classifier.Classify(cpb.ClassifyRequest(images=[png(rgb), png(gray)], top_k=2), timeout=30)
    assert reply.bundle_version == 1 and len(reply.predictions) == 2
    assert [p.top[0].class_id for p in reply.predictions] == list(want["class_id"])
    assert reply.predictions[0].top[0].name == f"class_{want['class_id'][0]}" and len(reply.predictions[0].top) == 2


def test_preprocess_resizes_the_shorter_side_and_center_crops():
    from export.manifest import Preprocessing
    from serve.preprocess import preprocess

    spec = Preprocessing(img_size=4, resize_size=5, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest",
                         crop_pct=0.8)
    image = np.arange(10 * 20, dtype=np.uint8).reshape(10, 20)
    x = preprocess([png(image)], spec, max_pixels=10**6)
    resized = np.asarray(Image.fromarray(image).convert("RGB").resize((10, 5), Image.Resampling.NEAREST))
    np.testing.assert_allclose(x[0], resized[0:4, 3:7].transpose(2, 0, 1) / 255.0, rtol=1e-6)


def test_classify_with_a_task_hint_and_model_info(servers):
    _, classifier = stubs(servers["prompt_set"].target)
    reply = classifier.Classify(cpb.ClassifyRequest(images=[png(np.zeros((IMG, IMG, 3), np.uint8))], task_hint=1,
                                                    top_k=10), timeout=30)
    prediction = reply.predictions[0]
    assert prediction.task_id == 1 and prediction.task_from_hint and len(prediction.top) == NUM_CLASSES
    assert {s.class_id for s in prediction.top if s.probability > 0} <= {2, 3}
    info = classifier.ModelInfo(cpb.ModelInfoRequest(), timeout=30)
    assert (info.bundle_version, info.routing, info.tasks_learned, info.num_tasks) == (1, "prompt_set", 2, 3)
    assert list(info.input_shape) == [-1, 3, IMG, IMG] and list(info.providers) == ["CPUExecutionProvider"]
    assert list(info.tasks[2].class_ids) == [4, 5] and not info.tasks[2].learned


def test_metadata_liveness_readiness_health(servers):
    oip, _ = stubs(servers["task"].target)
    assert oip.ServerLive(pb.ServerLiveRequest()).live and oip.ServerReady(pb.ServerReadyRequest()).ready
    assert oip.ServerMetadata(pb.ServerMetadataRequest()).name == "hide-cl"
    meta = oip.ModelMetadata(pb.ModelMetadataRequest(name="pipeline"))
    assert meta.versions == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("pixel_values", "FP32", [-1, 3, IMG, IMG]), ("images", "BYTES", [-1]), ("task_id", "INT64", [-1])]
    assert [(t.name, list(t.shape)) for t in meta.outputs][1:3] == [("class_name", [-1]),
                                                                    ("probabilities", [-1, NUM_CLASSES])]
    router = oip.ModelMetadata(pb.ModelMetadataRequest(name="router", version="1"))
    assert router.platform == "onnxruntime_onnx" and [t.name for t in router.outputs][0] == "task_id"
    assert oip.ModelReady(pb.ModelReadyRequest(name="classifier")).ready
    assert not oip.ModelReady(pb.ModelReadyRequest(name="classifier", version="7")).ready
    single, _ = stubs(servers["none"].target)
    assert not single.ModelReady(pb.ModelReadyRequest(name="router")).ready
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(servers["task"].target))
    for service in ("", "inference.GRPCInferenceService", "hidecl.v1.ContinualClassifier"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_full_queue_is_resource_exhausted_and_deadlines_and_cancellations(roots_by_routing):
    """Queue of 1, batcher held: a second request is refused, the first still answers; a request whose deadline
    passes in the queue gets DEADLINE_EXCEEDED; a cancelled one is dropped from its batch."""
    server = ServerThread(local_config(roots_by_routing["task"], max_batch_size=64, max_queue_size=1))
    try:
        oip, _ = stubs(server.target)
        request = oip_request(pb, "pipeline", {"pixel_values": pixels(1)})
        queue = server.server.core.batchers["pipeline"]
        hold, release = (lambda: server.loop.call_soon_threadsafe(queue.pause),
                         lambda: server.loop.call_soon_threadsafe(queue.resume))
        hold()
        first = oip.ModelInfer.future(request, timeout=30)
        wait_for(lambda: queue.depth == 1, what="the first request to be queued")
        with pytest.raises(grpc.RpcError) as error:
            oip.ModelInfer(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-queue-size" in error.value.details()
        release()
        assert first.result().model_version == "1"
        hold()
        with pytest.raises(grpc.RpcError) as error:  # gRPC's own deadline fires on the client
            oip.ModelInfer(request, timeout=0.2)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        release()
        wait_for(lambda: queue.depth == 0, what="the expired request to leave the queue")
        hold()
        cancelled = oip.ModelInfer.future(request, timeout=30)
        wait_for(lambda: queue.depth == 1, what="the request to be queued")
        cancelled.cancel()
        wait_for(lambda: metric_value(server.metrics_text(), "hidecl_requests_total", code="CANCELLED") >= 2,
                 what="the server to see the cancellation")
        release()
        wait_for(lambda: metric_value(server.metrics_text(), "hidecl_batch_dropped_requests_total") >= 2,
                 what="the expired and the cancelled requests to be dropped")
        assert oip.ModelInfer(request, timeout=30).model_version == "1"  # still serving
    finally:
        server.stop()


def test_metrics_page_names_and_promtool(roots_by_routing):
    server = ServerThread(local_config(roots_by_routing["task"], metrics_port=0))
    try:
        oip, _ = stubs(server.target)
        oip.ModelInfer(oip_request(pb, "pipeline", {"images": [png(np.zeros((IMG, IMG, 3), np.uint8))]}), timeout=30)
        with pytest.raises(grpc.RpcError):
            oip.ModelInfer(oip_request(pb, "nope", {"pixel_values": pixels(1)}), timeout=30)
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10).read()
        text = text.decode()
        assert metric_value(text, "hidecl_requests_total", model="pipeline", version="1", code="OK") == 1
        assert metric_value(text, "hidecl_requests_total", model="unknown", code="NOT_FOUND") == 1
        for stage in ("queue", "preprocess", "router", "classifier", "total"):
            assert metric_value(text, "hidecl_request_stage_duration_seconds_count", stage=stage) >= 1, stage
        assert metric_value(text, "hidecl_routed_samples_total", source="router") == 1
        assert metric_value(text, "hidecl_router_confidence_count") == 1
        assert metric_value(text, "hidecl_bundle_info", version="1", routing="task") == 1
        assert metric_value(text, "hidecl_execution_provider_info", provider="CPUExecutionProvider") == 1
        for name in ("hidecl_queue_depth", "hidecl_in_flight_requests", "hidecl_batch_size_bucket"):
            assert name in text
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        server.stop()


def test_uploads_decode_as_training_reads_files():
    """EXIF orientation, transparency and 16-bit grayscale: the server's decode is training's (contract.images)."""
    from export.manifest import Preprocessing
    from serve.preprocess import decode

    spec = Preprocessing(img_size=8, resize_size=8, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear",
                         crop_pct=1.0)
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (40, 20), (200, 10, 10)).save(rotated, "JPEG", exif=exif)
    assert decode(rotated.getvalue(), 0, spec, 10**6).size == (20, 40)
    clear = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(clear, "PNG")
    assert np.asarray(decode(clear.getvalue(), 0, spec, 10**6)).min() == 255  # transparent → white, not black
    deep = io.BytesIO()
    Image.fromarray(np.array([[0, 32896, 65535]], np.uint16)).save(deep, "PNG")
    assert np.asarray(decode(deep.getvalue(), 0, spec, 10**6))[0, :, 0].tolist() == [0, 128, 255]
