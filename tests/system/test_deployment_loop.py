"""The continual deployment loop: a served model learns new tasks while it keeps serving, behind guard rails."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from benchmarks.digits import digits_test_inputs
from export.manifest import bundle_versions, load_manifest
from serve.client import Client
from tests.helpers.runs import FAST, REPO, child_env, run_main
from tests.helpers.servers import metric_value, start_server_process

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]


def python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=600)


def test_next_task_config_refuses_a_run_without_tasks_and_a_finished_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    done = python("train/next_task.py", str(tmp_path))
    assert done.returncode == 2 and "no completed task" in done.stderr


class Load:
    """One client thread sending 8-image batches until stopped; every answer's version is recorded."""

    def __init__(self, target: str, pixels: np.ndarray):
        self.client, self.pixels = Client.connect(target), pixels
        self.versions: list[int] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i in range(100_000):  # bounded
            if self.stop.is_set():
                return
            start = (8 * i) % (len(self.pixels) - 8)
            try:
                self.versions.append(self.client.classify(pixels=self.pixels[start:start + 8]).bundle_version)
            except grpc.RpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")
            time.sleep(0.05)  # light load: training shares the cores

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


def served_classes(client: Client, pixels: np.ndarray) -> set[int]:
    return {p.top[0].class_id for start in range(0, len(pixels), 64)
            for p in client.classify(pixels=pixels[start:start + 64], top_k=1).predictions}


def test_served_model_learns_the_next_task_without_a_failed_request(tmp_path, random_backbone):
    """Serve after task 3; learn task 4 under load → version 4 is picked up; learn task 5 with a guard rail
    it cannot pass → refused, the server keeps version 4; the decisions are in the server's metrics."""
    run, root = tmp_path / "run", tmp_path / "bundles"
    done = run_main(["digits_hideprompt", "--output_dir", str(run), f"backbone.checkpoint={random_backbone}",
                     "--until_task", "3", *FAST])
    assert done.returncode == 0, done.stderr[-2000:]
    assert python("-m", "export.promote", str(run), "--bundle", str(root)).returncode == 0
    pixels, labels = digits_test_inputs()

    server, port, metrics_port = start_server_process(root, "--poll-interval-s", "0.5")
    try:
        client = Client.connect(f"127.0.0.1:{port}")
        assert client.info().bundle_version == 3
        assert served_classes(client, pixels) <= set(range(6))  # only tasks 1-3's classes exist yet
        load = Load(f"127.0.0.1:{port}", pixels)

        learned = python("train/next_task.py", str(run))
        assert learned.returncode == 0, learned.stderr[-2000:]
        assert python("-m", "export.promote", str(run), "--bundle", str(root)).returncode == 0
        deadline = time.monotonic() + 60
        while client.info().bundle_version != 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.info().bundle_version == 4
        task4 = np.isin(labels, [6, 7])  # task 4's classes are served now, as well as the export measured
        served = np.array([p.top[0].class_id for p in client.classify(pixels=pixels[task4], top_k=1).predictions])
        measured = load_manifest(root / "4").measurement.accuracy_per_task[3]
        assert 100 * np.mean(served == labels[task4]) == pytest.approx(measured, abs=1e-6) and measured > 0

        assert python("train/next_task.py", str(run)).returncode == 0
        refused = python("-m", "export.promote", str(run), "--bundle", str(root), "--max-drop", "-1000")
        assert refused.returncode == 3 and "more than --max-drop" in refused.stdout
        load.finish()
        assert load.failures == [] and {3, 4} <= set(load.versions) and len(load.versions) > 10
        assert bundle_versions(root) == [3, 4] and client.info().bundle_version == 4
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert metric_value(page, "hidecl_bundle_decisions_total", decision="accepted") == 2
        assert metric_value(page, "hidecl_bundle_decisions_total", decision="refused") == 1
        assert metric_value(page, "hidecl_bundle_last_decision_accepted") == 0
    finally:
        server.terminate()
        server.wait(60)
    decisions = [json.loads(line) for line in (root / "decisions.jsonl").read_text().splitlines()]
    assert [d["accepted"] for d in decisions] == [True, True, False]
    last = decisions[-1]
    assert last["tasks_learned"] == 5 and last["previous_version"] == 4 and len(last["accuracy_per_task"]) == 5
    manifest = load_manifest(root / "4")
    assert last["old_tasks_accuracy_before"] == pytest.approx(np.mean(manifest.measurement.accuracy_per_task))


def test_other_backbone_is_refused_against_the_served_version(tmp_path, random_backbone):
    """A candidate trained on other weights never replaces the served version."""
    import torch
    from safetensors.torch import save_file

    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
    from train.backbones.vit import create_vit

    root = tmp_path / "bundles"
    torch.manual_seed(7)
    other = tmp_path / "other.safetensors"
    save_file(create_vit(backbone_spec(EMBEDDED_BACKBONE)).state_dict(), str(other))
    for name, weights, tasks in (("a", random_backbone, "1"), ("b", other, "2")):
        done = run_main(["digits_l2p", "--output_dir", str(tmp_path / name), f"backbone.checkpoint={weights}",
                         "--until_task", tasks, *FAST])
        assert done.returncode == 0, done.stderr[-2000:]
    assert python("-m", "export.promote", str(tmp_path / "a"), "--bundle", str(root)).returncode == 0
    refused = python("-m", "export.promote", str(tmp_path / "b"), "--bundle", str(root))
    assert refused.returncode == 3 and "backbone differs" in refused.stdout
    assert bundle_versions(root) == [1]


@pytest.mark.parametrize("after, refused", [([80.0, 70.0, 60.0], False), ([80.0, 64.0, 60.0], False),
                                            ([90.0, 50.0, 95.0], False), ([74.0, 62.0, 60.0], True),
                                            ([90.0, 48.0, 95.0], True)])
def test_the_accuracy_guard_rail_refuses_a_real_drop(tmp_path, after, refused):
    """Served version: tasks 1-2 at 80% and 70% (mean 75). --max-drop 5: a candidate whose mean on those tasks
    is 72 or exactly 70 passes; 68, or 69 with one task collapsing while the other improves, is refused."""
    from export.bundle import Refused
    from export.manifest import load_manifest as load
    from export.promote import Decision, guard
    from tests.helpers.bundles import write_bundle

    previous = load(write_bundle(tmp_path, 1, tasks_learned=2))
    previous = previous.model_copy(update={"measurement": previous.measurement.model_copy(
        update={"accuracy_per_task": [80.0, 70.0]})})
    candidate = previous.model_copy(update={"measurement": previous.measurement.model_copy(
        update={"accuracy_per_task": after})})
    decision = Decision("run", 3, 1)
    check = guard(previous, 5.0, decision)
    if refused:
        with pytest.raises(Refused, match="would drop"):
            check(candidate)
    else:
        check(candidate)
    assert decision.old_tasks_accuracy_before == 75.0
    assert decision.old_tasks_accuracy_after == pytest.approx(np.mean(after[:2]))
