"""The server against hostile and careless clients: each case of the attack review, one test each.

One caller never fails another's request, work is bounded per request and in total, and a bundle root with
odd names, broken versions or escaping paths never breaks the server. Memory is checked on a real server
process (its peak RSS from /proc), the rest on an in-process server.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from serve.protos import load
from tests.helpers.bundles import IMG, write_bundle
from tests.helpers.runs import REPO
from tests.helpers.servers import (
    ServerThread,
    local_config,
    metric_value,
    oip_request,
    start_server_process,
    wait_for,
)

pb, pb_grpc = load("inference")
cpb, cpb_grpc = load("continual")
pytestmark = pytest.mark.timeout(300)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
GOOD_PIXELS = np.zeros((2, 3, IMG, IMG), np.float32)


def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, "PNG")
    return buffer.getvalue()


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) so far, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


@pytest.fixture(scope="module")
def server(bundle_root):
    running = ServerThread(local_config(bundle_root, max_queue_delay_ms=20.0))
    yield running
    running.stop()


@pytest.fixture
def oip(server):
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))


# -- 1. images whose decoded or resized size is a bomb ----------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1_000_000), (1_000_000, 1), (4000, 4000)])
def test_image_bombs_are_refused_by_their_resize_plan(oip, size):
    """A 1×10⁶ strip is 2 KB and 1 MP, but the resize step would make it 8 × 8·10⁶: refused before decoding."""
    request = oip_request(pb, "pipeline", {"images": [png(*size)]})
    with pytest.raises(grpc.RpcError) as error:
        oip.ModelInfer(request, timeout=30)
    assert error.value.code() == INVALID and "--max-image-pixels" in error.value.details()


def test_a_pillow_bomb_header_is_invalid_argument(oip):
    """A PNG header declaring 50000×50000 (Pillow's DecompressionBombError) is the caller's error."""
    data = bytearray(png(8, 8))
    data[16:24] = (50000).to_bytes(4, "big") * 2  # IHDR width and height, with a matching CRC
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    with pytest.raises(grpc.RpcError) as error:
        oip.ModelInfer(oip_request(pb, "pipeline", {"images": [bytes(data)]}), timeout=30)
    assert error.value.code() == INVALID and "image 0" in error.value.details()


@pytest.mark.parametrize("kind", ["EPS", "PPM", "ICO"])
def test_only_listed_formats_are_decoded(oip, kind):
    """Formats outside JPEG/PNG/WebP/BMP/TIFF/GIF are refused even where Pillow reads them (EPS → Ghostscript)."""
    data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n" if kind == "EPS" else None
    if data is None:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buffer, kind)
        data = buffer.getvalue()
    with pytest.raises(grpc.RpcError) as error:
        oip.ModelInfer(oip_request(pb, "pipeline", {"images": [data]}), timeout=30)
    assert error.value.code() == INVALID and "JPEG/PNG/WEBP/BMP/TIFF/GIF" in error.value.details()


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_listed_formats_are_decoded(oip, kind):
    buffer = io.BytesIO()
    Image.new("RGB", (20, 12), (10, 200, 30)).save(buffer, kind)
    response = oip.ModelInfer(oip_request(pb, "pipeline", {"images": [buffer.getvalue()]}), timeout=30)
    assert response.model_version == "1"


# -- 2. one caller's bad task id never fails another's request -----------------------------------------------
def test_a_bad_task_id_fails_only_its_own_request(server):
    """Six callers send valid classifier requests while one sends task_id -1 into the same batches (20 ms)."""
    stop, failures, bad_codes = threading.Event(), [], []

    def good(seed: int) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
        x = np.random.default_rng(seed).standard_normal((2, 3, IMG, IMG)).astype(np.float32)
        for _ in range(15):
            code = code_of(lambda: stub.ModelInfer(oip_request(pb, "classifier", {"pixel_values": x,
                                                   "task_id": np.array([0, 1])}), timeout=30))
            if code != grpc.StatusCode.OK:
                failures.append(code)

    def bad() -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
        while not stop.is_set():
            bad_codes.append(code_of(lambda: stub.ModelInfer(oip_request(pb, "classifier", {
                "pixel_values": GOOD_PIXELS[:1], "task_id": np.array([-1])}), timeout=30)))

    attacker = threading.Thread(target=bad)
    attacker.start()
    workers = [threading.Thread(target=good, args=(seed,)) for seed in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    attacker.join()
    assert failures == [] and bad_codes and set(bad_codes) == {INVALID}


# -- 3. request size --------------------------------------------------------------------------------------------
def test_too_many_images_in_one_request(oip):
    images = [png(2, 2)] * 5000  # 5,000 tiny PNGs fit in a few hundred KB
    with pytest.raises(grpc.RpcError) as error:
        oip.ModelInfer(oip_request(pb, "pipeline", {"images": images}), timeout=30)
    assert error.value.code() == INVALID and "--max-images-per-request" in error.value.details()


def test_a_request_above_the_batch_size_runs_in_parts(bundle_root):
    """70 rows with --max-batch-size 32: executed as 32 + 32 + 6, answered as one, same outputs as one batch."""
    server = ServerThread(local_config(bundle_root, max_batch_size=32))
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
        x = np.random.default_rng(3).standard_normal((70, 3, IMG, IMG)).astype(np.float32)
        whole = stub.ModelInfer(oip_request(pb, "pipeline", {"pixel_values": x}), timeout=60)
        parts = [stub.ModelInfer(oip_request(pb, "pipeline", {"pixel_values": x[i:i + 10]}), timeout=60)
                 for i in range(0, 70, 10)]
        text = server.metrics_text()
        assert metric_value(text, "hidecl_batch_size_bucket", model="pipeline", le="32.0") == \
            metric_value(text, "hidecl_batch_size_count", model="pipeline")  # no executed batch above 32
        assert whole.raw_output_contents[0] == b"".join(p.raw_output_contents[0] for p in parts)  # class ids
    finally:
        server.stop()


def test_work_beyond_the_memory_budget_waits_and_never_fails(bundle_root):
    """With a budget of two requests, eight concurrent ones all succeed (they wait their turn)."""
    server = ServerThread(local_config(bundle_root, max_message_bytes=1 << 20, max_inflight_bytes=2 << 20))
    try:
        x = np.zeros((128, 3, IMG, IMG), np.float32)  # ≈ 0.2 MiB of pixels + 0.2 MiB on the wire

        def call(_):
            stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
            return code_of(lambda: stub.ModelInfer(oip_request(pb, "pipeline", {"pixel_values": x}), timeout=60))

        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(call, range(16)))
        assert set(codes) == {grpc.StatusCode.OK}
        assert server.server.core.admission.used == 0
    finally:
        server.stop()


# -- 4-6. the bundle root --------------------------------------------------------------------------------------
ODD_NAMES = ["³", "١٢", "99999999999999999999", "007", "-3", "+4", " 5", "notes"]


def test_odd_folder_names_are_ignored_once_and_counted(tmp_path, caplog):
    root = tmp_path / "bundles"
    write_bundle(root, 1)
    for name in ODD_NAMES:
        (root / name).mkdir()
        shutil.copy(root / "1" / "manifest.json", root / name / "manifest.json")
    caplog.set_level(logging.WARNING, logger="serve.versions")
    server = ServerThread(local_config(root, poll_interval_s=0.05, metrics_port=0))
    try:
        time.sleep(0.5)  # several polls
        warnings = [r for r in caplog.records if "ignoring" in r.getMessage()]
        assert len(warnings) == len(ODD_NAMES)  # one each, not one per poll
        assert metric_value(server.metrics_text(), "hidecl_bundle_root_ignored_entries") == len(ODD_NAMES)
        info = cpb_grpc.ContinualClassifierStub(grpc.insecure_channel(server.target)).ModelInfo(
            cpb.ModelInfoRequest(), timeout=10)
        assert info.bundle_version == 1 and list(info.available_versions) == [1]
        write_bundle(root, 2)  # polling is alive: the next version is picked up
        wait_for(lambda: server.server.registry.current.version == 2, 20, "version 2 to be served")
    finally:
        server.stop()


def test_polling_survives_errors_and_counts_them(tmp_path, monkeypatch):
    root = tmp_path / "bundles"
    write_bundle(root, 1)
    server = ServerThread(local_config(root, poll_interval_s=0.05))
    try:
        registry = server.server.registry
        original = registry.poll_once

        async def failing():
            raise OSError("root unreadable for a moment")

        registry.poll_once = failing
        deadline = time.time() + 20
        while metric_value(server.metrics_text(), "hidecl_bundle_poll_errors_total") < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert metric_value(server.metrics_text(), "hidecl_bundle_poll_errors_total") >= 2
        registry.poll_once = original
        write_bundle(root, 2)
        deadline = time.time() + 20
        while registry.current.version != 2 and time.time() < deadline:
            time.sleep(0.05)
        assert registry.current.version == 2
    finally:
        server.stop()


def test_start_up_takes_the_newest_version_that_loads(tmp_path):
    root = tmp_path / "bundles"
    write_bundle(root, 1)
    write_bundle(root, 2)
    (root / "2" / "classifier.onnx").write_bytes(b"truncated")  # its hash no longer matches
    process, port, _ = start_server_process(root, "--poll-interval-s", "0")
    try:
        skipped = process.stdout.readline()  # printed right after the line that says it serves
        info = cpb_grpc.ContinualClassifierStub(grpc.insecure_channel(f"127.0.0.1:{port}")).ModelInfo(
            cpb.ModelInfoRequest(), timeout=10)
        assert info.bundle_version == 1
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert "skipped bundle version 2" in skipped and "SHA-256" in skipped


def test_a_version_published_manifest_first_is_retried_until_complete(tmp_path):
    root = tmp_path / "bundles"
    write_bundle(root, 1)
    staging = write_bundle(tmp_path / "staging", 2)
    (root / "2").mkdir()
    shutil.copy(staging / "manifest.json", root / "2" / "manifest.json")  # graphs still to come
    server = ServerThread(local_config(root, poll_interval_s=0.05))
    try:
        time.sleep(0.3)
        assert server.server.registry.current.version == 1
        for graph in ("router.onnx", "classifier.onnx"):
            shutil.copy(staging / graph, root / "2" / graph)
        wait_for(lambda: server.server.registry.current.version == 2, 20, "version 2 to be served")
    finally:
        server.stop()


def _edit_manifest(folder: Path, **changes) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    for key, value in changes.items():
        if key == "classifier_file":
            data["graphs"]["classifier"]["file"] = value
        else:
            data[key] = value
    (folder / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlinked graph", "version mismatch"])
def test_a_version_whose_files_leave_its_folder_is_not_served(tmp_path, case):
    root = tmp_path / "bundles"
    write_bundle(root, 1)
    folder = write_bundle(root, 2)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(folder / "classifier.onnx", outside)
    if case == "dotdot":
        _edit_manifest(folder, classifier_file="../../elsewhere.onnx")
    elif case == "absolute":
        _edit_manifest(folder, classifier_file=str(outside))
    elif case == "symlinked graph":
        (folder / "classifier.onnx").unlink()
        (folder / "classifier.onnx").symlink_to(outside)
    else:
        _edit_manifest(folder, version=7)
    server = ServerThread(local_config(root))
    try:
        assert server.server.registry.current.version == 1
        assert [v for v, _ in server.server.registry.skipped] == [2]
    finally:
        server.stop()


def test_a_version_folder_linking_outside_the_root_is_ignored(tmp_path):
    root = tmp_path / "bundles"
    write_bundle(root, 1)
    elsewhere = write_bundle(tmp_path / "other", 2)
    (root / "2").symlink_to(elsewhere, target_is_directory=True)
    server = ServerThread(local_config(root))
    try:
        assert server.server.registry.current.version == 1 and server.server.registry.versions() == [1]
    finally:
        server.stop()


# -- 7. metrics endpoint ---------------------------------------------------------------------------------------
def _scrape(port: int, token: str | None = None, host: str = "127.0.0.1") -> tuple[int, str]:
    request = urllib.request.Request(f"http://{host}:{port}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_metrics_bind_to_the_grpc_host_and_can_require_a_token(bundle_root):
    server = ServerThread(local_config(bundle_root, metrics_port=0, metrics_tokens=("m3trics",)))
    try:
        assert server.server._metrics_endpoint._server.sockets[0].getsockname()[0] == "127.0.0.1"
        assert _scrape(server.server.metrics_port)[0] == 401
        assert _scrape(server.server.metrics_port, "wrong")[0] == 401
        status, text = _scrape(server.server.metrics_port, "m3trics")
        assert status == 200 and "hidecl_in_flight_requests" in text
    finally:
        server.stop()


def test_idle_connections_do_not_block_scrapes(bundle_root):
    server = ServerThread(local_config(bundle_root, metrics_port=0))
    idle = [socket.create_connection(("127.0.0.1", server.server.metrics_port)) for _ in range(8)]
    try:
        for connection in idle:
            connection.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never finish the request
        assert _scrape(server.server.metrics_port)[0] == 200
        assert threading.active_count() < 40  # no thread per connection
    finally:
        for connection in idle:
            connection.close()
        server.stop()


def test_a_malformed_decisions_line_is_skipped_and_counted(tmp_path):
    root = tmp_path / "bundles"
    write_bundle(root, 1)
    good = {"accepted": True, "time": 1.0, "old_tasks_accuracy_before": 90.0, "old_tasks_accuracy_after": 91.0}
    lines = [json.dumps(good), "[1, 2]", '"text"', '{"accepted": true, "time": "yesterday"}', "{broken", ""]
    (root / "decisions.jsonl").write_text("\n".join(lines))
    server = ServerThread(local_config(root, metrics_port=0))
    try:
        status, text = _scrape(server.server.metrics_port)
        assert status == 200
        assert metric_value(text, "hidecl_bundle_decisions_malformed_lines") == 4
        assert metric_value(text, "hidecl_bundle_decisions_total", decision="accepted") == 1
    finally:
        server.stop()


# -- 8. ports ---------------------------------------------------------------------------------------------------
def test_a_taken_grpc_port_is_one_clear_error(bundle_root):
    first, port, metrics_port = start_server_process(bundle_root, "--poll-interval-s", "0")
    try:
        for flags in (["--port", str(port), "--metrics-port", "-1"], ["--port", "0", "--metrics-port",
                                                                       str(metrics_port)]):
            second = subprocess.run([sys.executable, "-m", "serve", "--bundle", str(bundle_root), "--host", "127.0.0.1",
                                     *flags], cwd=REPO, capture_output=True, text=True, timeout=60)
            assert second.returncode == 2, second.stderr
            assert "Traceback" not in second.stderr and second.stderr.count("error:") == 1
            assert "in use" in second.stderr or "Address already in use" in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=60)


# -- 9. malformed inputs: INVALID_ARGUMENT, no traceback in the log ----------------------------------------------
def _bytes_as(name: str, model: str = "pipeline"):
    request = oip_request(pb, model, {"pixel_values": GOOD_PIXELS} if name == "task_id" else {})
    request.inputs.add(name=name, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x01\x00\x00\x00x")
    return request


def _shape(shape: list[int], contents: bytes = b""):
    request = pb.ModelInferRequest(model_name="pipeline", raw_input_contents=[contents])
    request.inputs.add(name="pixel_values", datatype="FP32", shape=shape)
    return request


MALFORMED_OIP = {
    "pixel_values as BYTES": lambda: _bytes_as("pixel_values"),
    "task_id as BYTES": lambda: _bytes_as("task_id"),
    "100 dimensions": lambda: _shape([1] * 100, b"\0" * 4),  # one value: the size matches
    "overflowing shape": lambda: _shape([2**32, 2**32, 3, 32]),
}
MALFORMED_CLASSIFY = {
    "empty tensor": cpb.Tensor(),
    "100 dimensions": cpb.Tensor(shape=[1] * 100, data=b"\0" * 4),
    "overflowing shape": cpb.Tensor(shape=[2**32, 2**32, 3, 32]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_OIP))
def test_malformed_oip_inputs_are_invalid_argument(oip, case, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.RpcError) as error:
        oip.ModelInfer(MALFORMED_OIP[case](), timeout=30)
    assert error.value.code() == INVALID, error.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("case", sorted(MALFORMED_CLASSIFY))
def test_malformed_classify_inputs_are_invalid_argument(server, case, caplog):
    caplog.set_level(logging.INFO)
    stub = cpb_grpc.ContinualClassifierStub(grpc.insecure_channel(server.target))
    with pytest.raises(grpc.RpcError) as error:
        stub.Classify(cpb.ClassifyRequest(pixel_values=MALFORMED_CLASSIFY[case]), timeout=30)
    assert error.value.code() == INVALID, error.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("method", ["/inference.GRPCInferenceService/ModelInfer",
                                    "/hidecl.v1.ContinualClassifier/Classify"])
def test_garbage_bytes_are_invalid_argument_without_a_traceback(server, method, caplog):
    caplog.set_level(logging.INFO)
    call = grpc.insecure_channel(server.target).unary_unary(method, request_serializer=lambda x: x,
                                                            response_deserializer=lambda x: x)
    with pytest.raises(grpc.RpcError) as error:
        call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert error.value.code() == INVALID
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_deadline_flood_logs_no_traceback(oip, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(30):
        code_of(lambda: oip.ModelInfer(oip_request(pb, "pipeline", {"pixel_values": GOOD_PIXELS}), timeout=0.001))
    time.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- 10. the smaller points -----------------------------------------------------------------------------------
def test_drain_says_not_serving_before_it_stops(bundle_root):
    """While a request is in flight after SIGTERM: health NOT_SERVING (still answering), new calls UNAVAILABLE."""
    server = ServerThread(local_config(bundle_root, grace_s=30))
    channel = grpc.insecure_channel(server.target)
    health = health_pb2_grpc.HealthStub(channel)
    server.server.core.active += 1  # an in-flight request holds the drain open
    stopping = asyncio.run_coroutine_threadsafe(server.server.stop(), server.loop)
    try:
        time.sleep(0.2)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(oip_request(pb, "pipeline", {"pixel_values": GOOD_PIXELS}), timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE and "draining" in error.value.details()
    finally:
        server.loop.call_soon_threadsafe(lambda: setattr(server.server.core, "active", 0))
        stopping.result(30)
        server.server = None
        server.stop()


def test_bearer_scheme_is_case_insensitive_and_one_header_only(bundle_root):
    server = ServerThread(local_config(bundle_root, auth_tokens=("s3cret",)))
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
        request = oip_request(pb, "pipeline", {"pixel_values": GOOD_PIXELS})
        assert stub.ModelInfer(request, timeout=30, metadata=[("authorization", "bearer s3cret")]).model_version
        two = [("authorization", "Bearer wrong"), ("authorization", "Bearer s3cret")]
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(request, timeout=30, metadata=two)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED and "exactly one" in error.value.details()
    finally:
        server.stop()


def test_tokens_without_tls_and_a_readable_key_are_warned_about(bundle_root, tmp_path, caplog):
    from serve.server import warn_about_secrets

    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_text("certificate")
    key.write_text("key")
    os.chmod(key, 0o644)
    caplog.set_level(logging.WARNING, logger="serve")
    warn_about_secrets(local_config(bundle_root, auth_tokens=("t",)))
    warn_about_secrets(local_config(bundle_root, tls_cert=cert, tls_key=key))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unencrypted" in messages and "readable by other users" in messages


def test_a_reload_with_a_mistyped_version_is_refused(bundle_root):
    server = ServerThread(local_config(bundle_root, admin_tokens=("adm1n",)))
    try:
        call = grpc.insecure_channel(server.target).unary_unary(
            "/hidecl.v1.ContinualAdmin/Reload", request_serializer=lambda x: x, response_deserializer=lambda x: x)
        with pytest.raises(grpc.RpcError) as error:  # field 1 as a string "abc" instead of an int64
            call(b"\x0a\x03abc", timeout=10, metadata=[("authorization", "Bearer adm1n")])
        assert error.value.code() == INVALID and "fields" in error.value.details()
    finally:
        server.stop()


def test_a_huge_model_name_is_not_echoed(oip):
    with pytest.raises(grpc.RpcError) as error:
        oip.ModelInfer(oip_request(pb, "x" * 100_000, {"pixel_values": GOOD_PIXELS}), timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and len(error.value.details()) < 300


# -- acceptance: 8 good clients + 1 attacker, default limits ---------------------------------------------------
def _attacks(stub) -> None:
    """Every request kind of the review once, as one hostile client would send them."""
    x = GOOD_PIXELS
    requests = [
        oip_request(pb, "pipeline", {"images": [png(1, 1_000_000)]}),
        oip_request(pb, "classifier", {"pixel_values": x[:1], "task_id": np.array([-1])}),
        oip_request(pb, "pipeline", {"images": [png(2, 2)] * 5000}),
        _bytes_as("pixel_values"), _shape([1] * 100, b"\0" * 4), _shape([2**32, 2**32, 3, 32]),
        oip_request(pb, "pipeline", {"pixel_values": np.zeros((128, 3, IMG, IMG), np.float32)}),
        oip_request(pb, "pipeline", {"images": [png(3000, 3000)] * 10}),  # 10 × 9 MP, each under the limit
        oip_request(pb, "pipeline", {"pixel_values": np.zeros((5000, 3, IMG, IMG), np.float32)}),  # 3.8 MB, too many
        oip_request(pb, "pipeline", {"pixel_values": np.zeros((24_000, 3, IMG, IMG), np.float32)}),  # > 16 MiB
    ]
    for request in requests:
        code_of(lambda r=request: stub.ModelInfer(r, timeout=60))


def test_good_clients_never_fail_under_attack_and_memory_stays_bounded(bundle_root):
    process, port, _ = start_server_process(bundle_root, "--poll-interval-s", "0")
    target, failures, answered, done = f"127.0.0.1:{port}", [], [], threading.Event()
    try:
        def good(seed: int) -> None:
            stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
            x = np.random.default_rng(seed).standard_normal((2, 3, IMG, IMG)).astype(np.float32)
            while not done.is_set():
                code = code_of(lambda: stub.ModelInfer(oip_request(pb, "pipeline", {"pixel_values": x}), timeout=60))
                (answered if code == grpc.StatusCode.OK else failures).append(code)

        def attacker() -> None:
            stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
            threads = [threading.Thread(target=_attacks, args=(stub,)) for _ in range(16)]  # 16 attacks at once
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        goods = [threading.Thread(target=good, args=(seed,)) for seed in range(8)]
        for thread in goods:
            thread.start()
        attack = threading.Thread(target=attacker)
        attack.start()
        attack.join(240)
        done.set()
        for thread in goods:
            thread.join(60)
        peak = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.communicate(timeout=60)
    print(f"server peak RSS under attack: {peak:.0f} MiB; {len(answered)} good requests answered")
    assert failures == [] and len(answered) > 100
    assert peak < 1024, f"server peak RSS {peak:.0f} MiB"
