"""The task loop end to end on Split-Digits with a random backbone: outputs, checkpoints, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers.runs import FAST, REPO, child_env, results, run_main


def fast_args(out, backbone) -> list[str]:
    return ["digits_hideprompt", "--output_dir", str(out), f"backbone.checkpoint={backbone}", *FAST]


def test_pipeline_writes_results_checkpoints_and_plot(tmp_path, random_backbone):
    done = run_main(fast_args(tmp_path / "run", random_backbone))
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "run"
    r = results(out)
    A = np.array(r["accuracy_matrix"])
    assert A.shape == (5, 5)
    assert np.all(A[np.triu_indices(5)] >= 0) and np.all(A[np.tril_indices(5, -1)] == 0)
    for key in ("final_average_accuracy", "cumulative_average_accuracy", "final_forgetting",
                "backward_transfer", "task_identity_accuracy", "train_images_per_second", "config"):
        assert key in r
    assert r["final_average_accuracy"] == pytest.approx(A[:, -1].mean())
    assert r["stage"] == "wtp" and r["config"]["trained_original_model"].endswith("tii")
    assert (out / "tii" / "results.json").is_file()  # stage 1 ran first, into <output_dir>/tii
    assert (out / "accuracy_matrix.png").stat().st_size > 1000
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events.count("task") == 5 and events[-1] == "finish"
    for task in range(1, 6):
        folder = out / "checkpoints" / f"task{task}"
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["learned.safetensors", "state.json", "statistics.safetensors"]
    from safetensors.torch import load_file

    learned = load_file(str(out / "checkpoints" / "task5" / "learned.safetensors"))
    assert set(learned) == {"prompts.prompt", "head.weight", "head.bias"}  # no backbone copy
    state = json.loads((out / "checkpoints" / "task5" / "state.json").read_text())
    assert len(state["backbone"]["sha256"]) == 64


def test_killed_run_resumes_to_the_same_results(tmp_path, random_backbone):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_main(fast_args(whole, random_backbone)).returncode == 0
    child = subprocess.Popen([sys.executable, "train/main.py", *fast_args(broken, random_backbone)], cwd=REPO,
                             env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (broken / "checkpoints" / "task2" / "state.json").exists():  # stage 2, task 2 done
        assert child.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (broken / "results.json").exists()
    resumed = run_main([*fast_args(broken, random_backbone), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after task" in resumed.stdout
    a, b = results(whole), results(broken)
    np.testing.assert_allclose(b["accuracy_matrix"], a["accuracy_matrix"], atol=1e-9)
    np.testing.assert_allclose(b["task_identity_matrix"], a["task_identity_matrix"], atol=1e-9)
