"""Growth through the real entry points: a built-in run trains as it did before growth existed; a finished run
learns a folder of new classes (`train/next_task.py --task-data`, 2 DeepSpeed ranks), resumes across the grown
head, and is published with the new classes' names; bad folders are refused with nothing written."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from export.manifest import load_manifest
from tests.helpers.runs import FAST, REPO, child_env, free_port, results, run_main
from train.data.digits import DIGIT_NAMES, write_digit_folders

pytestmark = pytest.mark.multiprocess


def next_task(run: Path, *args: str, ranks: int = 0) -> subprocess.CompletedProcess:
    """`train/next_task.py RUN ARGS` in one process, or under the DeepSpeed launcher with `ranks` ranks."""
    launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks), "--master_port",
                str(free_port())] if ranks else [sys.executable]
    return subprocess.run([*launcher, "train/next_task.py", str(run), *args], cwd=REPO,
                          env=child_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)


def promote(run: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export.promote", str(run), "--bundle", str(root)], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=600)


def fingerprint(path: Path) -> str:
    tensors, digest = load_file(str(path)), hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def letters_folder(folder: Path, letters: str = "xyz") -> Path:
    """A task folder of three new classes drawn as letters: PNG and JPEG files, mixed sizes and modes."""
    from PIL import ImageDraw

    for c, letter in enumerate(letters):
        for i in range(10):
            mode, size = ("L", 24) if i % 3 == 0 else ("RGB", 40) if i % 3 == 1 else ("RGBA", 32)
            image = Image.new(mode, (size, size))
            ImageDraw.Draw(image).text((size // 3 + i % 4, size // 4), letter * (1 + c), fill="white")
            target = folder / f"class_{letter}" / (f"{i}.jpg" if mode == "RGB" else f"{i}.png")
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target)
    return folder


# digits_hideprompt, random backbone, FAST, one process with one thread: tasks 1-2 on the commit before growth
# (the run to task 1, then train/next_task.py: the straight run to task 2 gives the same). Accuracy matrices and
# the task-2 checkpoints' tensors (sha256 over names and float32 bytes).
BEFORE_GROWTH = {
    "accuracy_matrix": [[35.16483516483517, 0.0], [0.0, 70.0]],
    "pre_alignment_accuracy_matrix": [[35.16483516483517, 17.582417582417584], [0.0, 43.333333333333336]],
    "task_identity_matrix": [[100.0, 0.0], [0.0, 100.0]],
    "checkpoints/task2/learned.safetensors": "7dc09a809ca44867",
    "checkpoints/task2/statistics.safetensors": "5ac49b8b1a61db21",
    "tii/checkpoints/task2/learned.safetensors": "2b43f789d9d514f9",
    "tii/checkpoints/task2/statistics.safetensors": "f5d59fad414debc8",
}


def test_built_in_run_is_bit_identical_to_before_growth(tmp_path, random_backbone):
    run = tmp_path / "run"
    done = run_main(["digits_hideprompt", "--output_dir", str(run), f"backbone.checkpoint={random_backbone}",
                     "--until_task", "1", *FAST], OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-2000:]
    learned = next_task(run)
    assert learned.returncode == 0, learned.stderr[-2000:]
    r = results(run)
    measured = {k: r[k] for k in ("accuracy_matrix", "pre_alignment_accuracy_matrix", "task_identity_matrix")}
    measured |= {name: fingerprint(run / name) for name in BEFORE_GROWTH if name.endswith(".safetensors")}
    assert measured == BEFORE_GROWTH


def test_finished_run_learns_a_folder_on_two_ranks_and_is_published_with_its_names(tmp_path, random_backbone):
    """Split-Digits in 2 tasks, published; then a folder of three letters as task 3 (2 ranks), grown and published
    with names; then a Split-Digits folder as task 4, resumed from the grown checkpoint."""
    run, root = tmp_path / "run", tmp_path / "bundles"
    done = run_main(["digits_hideprompt", "--output_dir", str(run), f"backbone.checkpoint={random_backbone}",
                     "data.num_tasks=2", "adapter.slots=2", *FAST], ranks=2, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert promote(run, root).returncode == 0

    letters = letters_folder(tmp_path / "letters")
    learned = next_task(run, "--task-data", str(letters), ranks=2)
    assert learned.returncode == 0, learned.stderr[-3000:]
    assert "grown from 2 tasks / 10 classes to 3 / 13" in learned.stdout
    before, after = (load_file(str(run / f"checkpoints/task{t}/learned.safetensors")) for t in (2, 3))
    assert before["head.weight"].shape[0] == 10 and after["head.weight"].shape[0] == 13
    assert before["prompts.prompt"].shape[2] == 2 and after["prompts.prompt"].shape[2] == 3
    assert np.array_equal(after["prompts.prompt"][:, :, :2], before["prompts.prompt"])  # old tasks' prompts kept
    assert load_file(str(run / "tii/checkpoints/task3/learned.safetensors"))["tii.head.weight"].shape[0] == 13
    r = results(run)
    names = [*map(str, range(10)), "class_x", "class_y", "class_z"]
    assert r["world_size"] == 2 and np.array(r["accuracy_matrix"]).shape == (3, 3)
    assert r["class_names"] == names and r["task_classes"][2] == [10, 11, 12]
    assert r["config"]["data"]["extra_task_dirs"] == [str(letters.resolve())] and r["config"]["data"]["num_tasks"] == 3

    published = promote(run, root)
    assert published.returncode == 0, published.stdout + published.stderr
    manifest = load_manifest(root / "3")
    assert manifest.class_names == names and manifest.num_tasks == 3 and manifest.tasks_learned == 3
    assert manifest.tasks[2].name == "letters" and manifest.tasks[2].class_names == names[10:]
    assert manifest.graphs["classifier"].output("logits").shape[1:] == [13]
    assert load_manifest(root / "2").class_names == names[:10]

    digits = write_digit_folders(tmp_path / "more digits", (3, 4))
    again = next_task(run, "--task-data", str(digits), ranks=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "grown from 3 tasks / 13 classes to 4 / 15" in again.stdout
    r = results(run)
    assert r["class_names"][13:] == sorted([DIGIT_NAMES[3], DIGIT_NAMES[4]])  # a task's classes in name order
    assert np.array(r["accuracy_matrix"]).shape == (4, 4) and r["tasks_trained"] == 4
    assert json.loads((run / "checkpoints/task4/state.json").read_text())["config"]["adapter"]["slots"] == 4


def test_next_task_refuses_bad_task_folders_and_writes_nothing(tmp_path, random_backbone):
    run = tmp_path / "run"
    done = run_main(["digits_l2p", "--output_dir", str(run), f"backbone.checkpoint={random_backbone}",
                     "data.num_tasks=2", "--until_task", "1", *FAST], OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-2000:]
    letters = letters_folder(tmp_path / "letters")
    early = next_task(run, "--task-data", str(letters))
    assert early.returncode == 2 and "has learned 1 of its 2 tasks: learn those first" in early.stderr
    assert next_task(run).returncode == 0
    grown = next_task(run, "--task-data", str(letters))
    assert grown.returncode == 0 and results(run)["class_names"][10:] == ["class_x", "class_y", "class_z"]
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    clash = letters_folder(tmp_path / "clash", "q")
    (clash / "class_q").rename(clash / "7")  # a digit's name: that class is learned already
    empty = letters_folder(tmp_path / "empty", "e")
    (empty / "class_f").mkdir()
    refusals = {
        "is not a folder": tmp_path / "missing",
        "class '7' of": clash,
        "class 'class_f' has 0": empty,
        "is task 3 of": letters,
    }
    for expected, folder in refusals.items():
        refused = next_task(run, "--task-data", str(folder))
        assert refused.returncode == 2 and expected in refused.stderr, refused.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == files


def test_folder_run_learns_one_more_folder(tmp_path, random_backbone):
    """An ImageFolder run (S-Prompt++: a key and a prompt per task, the pool as small as the tasks) takes a third
    folder as task 3."""
    root = tmp_path / "root"
    for index, letters in enumerate(("ab", "cd")):
        letters_folder(root / f"task{index + 1}", letters)
    run = tmp_path / "run"
    done = run_main(["folder_sprompt", "--data-path", str(root), "--output_dir", str(run), "adapter.slots=2",
                     f"backbone.checkpoint={random_backbone}", *FAST], OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-2000:]
    learned = next_task(run, "--task-data", str(letters_folder(tmp_path / "more", "ef")))
    assert learned.returncode == 0, learned.stderr[-2000:]
    assert "grown from 2 tasks / 4 classes to 3 / 6" in learned.stdout
    state = load_file(str(run / "checkpoints/task3/learned.safetensors"))
    assert (state["keys"].shape[0], state["e_prompts.prompt"].shape[2], state["head.weight"].shape[0]) == (3, 3, 6)
    r = results(run)
    assert r["class_names"] == [f"class_{c}" for c in "abcdef"] and r["task_classes"] == [[0, 1], [2, 3], [4, 5]]
    assert r["config"]["data"]["num_tasks"] == 3 and r["config"]["adapter"]["slots"] == 3
    earlier = subprocess.run([sys.executable, "-m", "export", str(run), "--out", str(tmp_path / "bundles"), "--task",
                              "2", "--variants", ""], cwd=REPO, env=child_env(), capture_output=True, text=True,
                             timeout=600)
    assert earlier.returncode == 0, earlier.stderr[-2000:]  # task 2 as it was: the smaller model, its own classes
    assert load_manifest(tmp_path / "bundles" / "2").class_names == [f"class_{c}" for c in "abcd"]
