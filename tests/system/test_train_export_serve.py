"""End to end: a quick Split-Digits run → `export.bundle.export_bundle` → the server → served accuracy equals the
training run's (the demo's claim, on a random backbone and one epoch so it stays fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.digits import digits_test_inputs
from tests.helpers.runs import FAST, run_main
from tests.helpers.servers import ServerThread, local_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.parametrize("routing", [[], ["--router", "ensemble", "--answer_scope", "routed_task"]],
                         ids=["reference", "ensemble-routed-task"])
def test_served_accuracy_equals_the_trained_models(tmp_path, random_backbone, routing):
    from export.bundle import export_bundle
    from export.manifest import load_manifest
    from serve.client import Client, evaluate

    run = tmp_path / "run"
    done = run_main(["digits_hideprompt", "--output_dir", str(run), f"backbone.checkpoint={random_backbone}", *FAST,
                     *routing])
    assert done.returncode == 0, done.stderr[-2000:]
    folder = export_bundle(run, tmp_path / "bundles", variants=(), backbone_checkpoint=str(random_backbone),
                           log=lambda message: None)
    manifest = load_manifest(folder)
    pixels, y_test = digits_test_inputs()
    server = ServerThread(local_config(tmp_path / "bundles"))
    try:
        served = evaluate(Client.connect(server.target), pixels.astype(np.float32), np.asarray(y_test, np.int64))
    finally:
        server.stop()
    trained = json.loads((run / "results.json").read_text())["final_average_accuracy"]
    assert served.version == manifest.version == 5 and served.images == len(y_test)
    assert manifest.answer_scope == ("routed_task" if routing else "seen")
    assert served.average_task_accuracy == pytest.approx(trained, abs=0.005)
    assert served.accuracy == pytest.approx(manifest.measurement.accuracy, abs=0.005)
