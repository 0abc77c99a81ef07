"""Hot swap under concurrent load with zero failed requests; a broken version never replaces a good one; admin
reload; SIGTERM under load completes the in-flight requests."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from serve.protos import load
from tests.helpers.bundles import IMG, write_bundle
from tests.helpers.servers import ServerThread, local_config, metric_value, oip_request, start_server_process, wait_for

pb, pb_grpc = load("inference")
cpb, cpb_grpc = load("continual")
pytestmark = pytest.mark.timeout(180)
PIXELS = np.random.default_rng(0).standard_normal((2, 3, IMG, IMG)).astype(np.float32)


class Load:
    """Threads that classify until stopped, recording the answering versions and any failure."""

    def __init__(self, target: str, threads: int = 4) -> None:
        self.stub = cpb_grpc.ContinualClassifierStub(grpc.insecure_channel(target))
        self.versions: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        request = cpb.ClassifyRequest(pixel_values=cpb.Tensor(shape=list(PIXELS.shape), data=PIXELS.tobytes()))
        for _ in range(100_000):  # bounded
            if self.stop.is_set():
                return
            try:
                self.versions.append(self.stub.Classify(request, timeout=30).bundle_version)
            except grpc.RpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def publish(root, version: int, staging, corrupt: bool = False, **kwargs) -> None:
    """Write a version next to the root and move it in whole, as the exporter does."""
    folder = write_bundle(staging, version, **kwargs)
    if corrupt:
        with open(folder / "classifier.onnx", "ab") as f:
            f.write(b"tampered")
    os.replace(folder, root / str(version))


def test_hot_swap_under_load_and_broken_versions(tmp_path):
    root, staging = tmp_path / "root", tmp_path / "staging"
    write_bundle(root, 1, tasks_learned=1)
    server = ServerThread(local_config(root, poll_interval_s=0.1, max_queue_delay_ms=1.0))
    load = Load(server.target)
    try:
        wait_for(lambda: len(load.versions) > 20, what="traffic on version 1")
        old = server.server.registry.current
        publish(root, 2, staging, tasks_learned=3, seed=1)
        wait_for(lambda: load.versions and load.versions[-1] == 2, what="the swap to version 2")
        wait_for(lambda: old.sessions == {}, what="version 1 to close after its last request")
        publish(root, 3, staging, corrupt=True, tasks_learned=3, seed=2)
        wait_for(lambda: metric_value(server.metrics_text(), "hidecl_bundle_load_failures_total") == 1,
                 what="version 3 to fail")
        count = len(load.versions)
        wait_for(lambda: len(load.versions) > count + 20, what="more traffic after the failed version")
    finally:
        load.finish()
    try:
        assert load.failures == []
        assert set(load.versions) == {1, 2} and load.versions[-1] == 2
        assert load.versions.index(2) > 0 and 1 not in load.versions[load.versions.index(2):][10:]
        text = server.metrics_text()
        assert metric_value(text, "hidecl_bundle_swaps_total") == 1
        assert metric_value(text, "hidecl_bundle_version") == 2
        assert metric_value(text, "hidecl_requests_total", version="1", code="OK") > 0
        assert metric_value(text, "hidecl_requests_total", version="2", code="OK") > 0
        oip = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
        hinted = oip_request(pb, "pipeline", {"pixel_values": PIXELS, "task_id": np.array([2, 2])})
        assert oip.ModelInfer(hinted, timeout=30).model_version == "2"  # task 2 is learned in version 2
        assert oip.ModelMetadata(pb.ModelMetadataRequest(name="pipeline")).versions == ["2"]
    finally:
        server.stop()


def test_admin_reload_switches_versions_and_sticks(tmp_path):
    root = tmp_path / "root"
    write_bundle(root, 1, tasks_learned=1)
    write_bundle(root, 2, tasks_learned=2, seed=1)
    server = ServerThread(local_config(root, poll_interval_s=0.1, admin_tokens=("adm1n",)))
    try:
        admin = cpb_grpc.ContinualAdminStub(grpc.insecure_channel(server.target))
        token = [("authorization", "Bearer adm1n")]
        assert server.server.registry.current.version == 2
        reply = admin.Reload(cpb.ReloadRequest(version=1), timeout=60, metadata=token)
        assert (reply.previous_version, reply.version) == (2, 1)
        time.sleep(0.5)  # several polls: an explicit older version is not undone by polling
        assert server.server.registry.current.version == 1
        with pytest.raises(grpc.RpcError) as error:
            admin.Reload(cpb.ReloadRequest(version=7), timeout=60, metadata=token)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND and "[1, 2]" in error.value.details()
        assert admin.Reload(cpb.ReloadRequest(), timeout=60, metadata=token).version == 2
    finally:
        server.stop()


def test_sigterm_under_load_completes_in_flight_requests(tmp_path):
    write_bundle(tmp_path, 1)
    process, port, metrics_port = start_server_process(tmp_path, "--max-queue-delay-ms", "600000",
                                                       "--max-batch-size", "64", "--poll-interval-s", "0")
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        request = oip_request(pb, "pipeline", {"pixel_values": PIXELS})
        in_flight = [stub.ModelInfer.future(request, timeout=60) for _ in range(6)]

        def queued() -> float:
            page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            return metric_value(page, "hidecl_queue_depth", model="pipeline")

        wait_for(lambda: queued() == 6, what="6 requests waiting in the batch queue")  # for 10 minutes unless…
        process.send_signal(signal.SIGTERM)  # …the drain runs them at once
        assert [f.result().model_version for f in in_flight] == ["1"] * 6
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert "draining" in output and "stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_missing_bundle_root_is_one_clear_error(tmp_path):
    import subprocess
    import sys

    from tests.helpers.runs import REPO

    result = subprocess.run([sys.executable, "-m", "serve", "--bundle", str(tmp_path / "nothing"), "--port", "0",
                             "--metrics-port", "-1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no bundle version under" in result.stderr and "Traceback" not in result.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)
