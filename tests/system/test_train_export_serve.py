"""End to end: a quick Split-Digits run → `export.bundle.export_bundle` → the server → served accuracy equals the
training run's (the demo's claim, on a random backbone and one epoch so it stays fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.bundles import ServerThread
from tests.helpers.runs import FAST, run_main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_served_accuracy_equals_the_trained_models(tmp_path, random_backbone):
    from export.bundle import export_bundle
    from export.manifest import load_manifest
    from serve.client import Client, evaluate
    from serve.config import ServeConfig
    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
    from train.data.digits import digits_arrays
    from train.data.transforms import grayscale_to_input

    run = tmp_path / "run"
    done = run_main(["digits_hideprompt", "--output_dir", str(run), f"backbone.checkpoint={random_backbone}", *FAST])
    assert done.returncode == 0, done.stderr[-2000:]
    folder = export_bundle(run, tmp_path / "bundles", variants=(), backbone_checkpoint=str(random_backbone),
                           log=lambda message: None)
    manifest = load_manifest(folder)
    _, x_test, _, y_test = digits_arrays()
    pixels = grayscale_to_input(x_test, backbone_spec(EMBEDDED_BACKBONE)).numpy()
    server = ServerThread(ServeConfig(tmp_path / "bundles", host="127.0.0.1", port=0, metrics_port=None,
                                      poll_interval_s=0))
    try:
        served = evaluate(Client.connect(server.target), pixels.astype(np.float32), np.asarray(y_test, np.int64))
    finally:
        server.stop()
    trained = json.loads((run / "results.json").read_text())["final_average_accuracy"]
    assert served.version == manifest.version == 5 and served.images == len(y_test)
    assert served.average_task_accuracy == pytest.approx(trained, abs=0.005)
    assert served.accuracy == pytest.approx(manifest.measurement.accuracy, abs=0.005)
