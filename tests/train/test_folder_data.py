"""ImageFolder: the user's own classes from real image files (PNG, JPEG, BMP, WebP, TIFF; mixed sizes and modes),
both layouts, the recorded split, every bad-data answer, and class names through training, export and Triton."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contract.images import to_rgb
from tests.helpers.runs import FAST, results, run_main
from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
from train.cli import parse_invocation
from train.config import DataConfig, RunConfig
from train.data import folder_scan
from train.data.folder import folder_data
from train.data.folder_scan import SPLIT_FILE, folder_tasks, load_folder_task, summary
from train.data.registry import load_dataset
from train.errors import UserError
from train.main import main
from train.presets import FOLDER_METHODS, preset

SPEC = backbone_spec(EMBEDDED_BACKBONE)
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "white": (240, 240, 240),
           "black": (15, 15, 15), "yellow": (230, 220, 30)}
ORIENTATION = 0x0112  # EXIF tag


def colour_image(colour: tuple[int, int, int], size: tuple[int, int], seed: int) -> Image.Image:
    noise = np.random.default_rng(seed).normal(0, 12, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8))


def write_class(folder: Path, colour: tuple[int, int, int], count: int, seed: int = 0, prefix: str = "") -> list[Path]:
    """`count` images of one colour in every format and mode a user may have, in mixed sizes and suffix cases."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = colour_image(colour, (24 + 7 * (i % 4), 20 + 5 * (i % 3)), seed * 1000 + i)
        kind, stem = i % 8, f"{prefix}{i}"
        if kind == 0:
            path = folder / f"{stem}.png"
            image.save(path)
        elif kind == 1:  # JPEG, upper-case suffix, with an EXIF rotation
            exif = Image.Exif()
            exif[ORIENTATION] = 6
            path = folder / f"{stem}.JPG"
            image.save(path, quality=95, exif=exif)
        elif kind == 2:
            path = folder / f"{stem}.Png"
            image.convert("L").save(path)
        elif kind == 3:
            path = folder / f"{stem}.png"
            rgba = image.convert("RGBA")
            rgba.putalpha(200)
            rgba.save(path)
        elif kind == 4:
            path = folder / f"{stem}.gif.png"  # palette image
            image.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
        elif kind == 5:  # 16-bit grayscale
            path = folder / f"{stem}.png"
            grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
            Image.fromarray(grey).save(path)  # mode I;16
        elif kind == 6:
            path = folder / f"{stem}.jpeg"
            image.save(path, quality=90)
        else:
            path = folder / f"{stem}.{('bmp', 'webp', 'TIFF')[i // 8 % 3]}"
            image.save(path)
        paths.append(path)
    return paths


def write_task(folder: Path, classes: list[str], count: int = 8, seed: int = 0) -> Path:
    for c, name in enumerate(classes):
        write_class(folder / name, COLOURS.get(name, (128, 128, 128)), count, seed + c)
    return folder


@pytest.fixture
def root(tmp_path) -> Path:
    """Two tasks of two colour classes, with the debris of real folders (.DS_Store, Thumbs.db, notes)."""
    data = tmp_path / "data"
    write_task(data / "task1", ["red", "green"])
    write_task(data / "task2", ["blue", "white"], seed=10)
    (data / "task1" / ".DS_Store").write_bytes(b"\0\1junk")
    (data / "task2" / "white" / "Thumbs.db").write_bytes(b"junk")
    (data / "task2" / "notes.txt").write_text("photos from the shop")
    return data


def folder_config(root: Path, **changes) -> DataConfig:
    return DataConfig(dataset="ImageFolder", data_path=str(root), **changes)


def check(argv: list[str], capsys) -> str:
    """train/main.py's answer to a run that must be refused before any training: the message (exit 2)."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # refused while parsing
        code = exit_.code
    assert code == 2
    return capsys.readouterr().err


# -- decoding ---------------------------------------------------------------------------------------------
def test_every_mode_becomes_upright_8_bit_rgb(tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # rotate 90° clockwise to display
    colour_image((200, 10, 10), (40, 20), 0).save(tmp_path / "r.jpg", exif=exif)
    with Image.open(tmp_path / "r.jpg") as image:
        assert image.size == (40, 20) and to_rgb(image).size == (20, 40)
    deep = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))  # mode I;16
    assert np.asarray(to_rgb(deep))[0, :, 0].tolist() == [0, 128, 255]  # scaled, not clipped to white
    clear = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert np.asarray(to_rgb(clear)).min() == 255  # transparent → white, not black
    palette = Image.new("P", (2, 2), 0)
    palette.info["transparency"] = 0
    assert to_rgb(palette).mode == "RGB" and np.asarray(to_rgb(palette)).min() == 255
    grey = to_rgb(Image.new("L", (3, 3), 77))
    assert grey.mode == "RGB" and np.asarray(grey).reshape(-1, 3).tolist()[0] == [77, 77, 77]


# -- layouts and the split ------------------------------------------------------------------------------------
def test_task_and_class_folders_with_a_seeded_stratified_split(root):
    tasks = folder_tasks(folder_config(root))
    assert [t.name for t in tasks] == ["task1", "task2"]
    assert [t.classes for t in tasks] == [("green", "red"), ("blue", "white")]  # sorted class folders
    for task in tasks:
        for c, name in enumerate(task.classes):
            train, test = set(task.train[c]), set(task.test[c])
            on_disk = {p.relative_to(task.source).as_posix() for p in (task.source / name).iterdir()
                       if p.name != "Thumbs.db"}
            assert not train & test and train | test == on_disk  # every image of every case of suffix, once
            assert len(test) == 2 and len(train) == 6  # 20% of 8, rounded
    assert tasks == folder_tasks(folder_config(root))  # same files, same split
    assert folder_tasks(folder_config(root, split_seed=1))[0].test != tasks[0].test
    assert sorted(i for t in tasks for i in t.ignored) == [".DS_Store", "notes.txt", "white/Thumbs.db"]
    assert "ignored 3 entries that are not images" in "\n".join(summary(tasks))


def test_datasets_follow_the_backbone_spec_and_number_classes_in_task_order(root):
    data = load_dataset(folder_config(root), SPEC)
    assert data.names() == ("green", "red", "blue", "white") and data.task_classes == ((0, 1), (2, 3))
    assert data.task_names == ("task1", "task2") and data.num_classes == 4
    assert sorted(data.test_targets.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    for dataset in (data.train, data.test):
        for i in range(len(dataset)):  # every file, whatever its mode or size, decodes to the backbone's input
            x, y = dataset[i]
            assert x.shape == (3, SPEC.img_size, SPEC.img_size) and 0 <= int(y) < 4
    green = [data.train_eval[i][0] for i in range(len(data.train_eval)) if int(data.train_targets[i]) == 0]
    assert torch.stack(green).mean(dim=(0, 2, 3)).argmax() == 1  # the colour survives decoding (RGB order kept)


def test_a_given_train_test_split_is_used_as_it_is_and_overlap_is_counted(tmp_path):
    task = tmp_path / "data" / "shop"
    write_task(task / "train", ["red", "blue"], count=4)
    write_task(task / "val", ["red", "blue"], count=2, seed=5)
    shutil.copy(task / "train" / "red" / "0.png", task / "val" / "red" / "copy.png")  # same content, new name
    (task / "README.md").write_text("layout notes")
    tasks = folder_tasks(folder_config(tmp_path / "data"))
    assert tasks[0].given_split and tasks[0].classes == ("blue", "red")
    assert tasks[0].train[1] == tuple(f"train/red/{p.name}" for p in sorted((task / "train" / "red").iterdir()))
    assert len(tasks[0].test[1]) == 3 and tasks[0].duplicates == 1
    assert "1 test image(s) have the same content as a train image" in "\n".join(summary(tasks))


def test_the_split_is_recorded_and_read_back_instead_of_recomputed(root, tmp_path):
    run = tmp_path / "run"
    folder_scan.write_split_record(run, folder_data(folder_config(root), SPEC).record)
    recorded = json.loads((run / SPLIT_FILE).read_text())
    assert [t["source"] for t in recorded["tasks"]] == ["task1", "task2"]
    assert all(not Path(p).is_absolute() for t in recorded["tasks"] for ps in t["train"].values() for p in ps)
    write_class(root / "task1" / "red", COLOURS["red"], 12, seed=99, prefix="new")  # a fresh split would differ
    assert folder_tasks(folder_config(root), run) != folder_tasks(folder_config(root))
    again = folder_tasks(folder_config(root), run)
    assert [list(map(list, t.test)) for t in again] == [list(t["test"].values()) for t in recorded["tasks"]]
    extra = write_task(tmp_path / "later", ["black", "yellow"])  # the run grows by a folder task
    grown = folder_data(folder_config(root, extra_task_dirs=(str(extra),)), SPEC, run).record
    folder_scan.write_split_record(run, grown)
    assert [t["source"] for t in json.loads((run / SPLIT_FILE).read_text())["tasks"]] == ["task1", "task2", str(extra)]
    folder_scan.write_split_record(run, recorded)  # a rerun with an earlier task's config: the record only grows
    assert json.loads((run / SPLIT_FILE).read_text()) == json.loads(json.dumps(grown))
    earlier = folder_tasks(folder_config(root), run)  # export of an earlier task reads its share of the record
    assert [list(map(list, t.test)) for t in earlier] == [list(t["test"].values()) for t in recorded["tasks"]]
    (root / "task0").mkdir()  # a task folder sorting before the recorded ones
    write_task(root / "task0", ["black"])
    with pytest.raises(UserError, match="tasks can only be added after the last one"):
        folder_tasks(folder_config(root), run)


def test_a_damaged_or_stale_split_record_is_refused(root, tmp_path):
    run = tmp_path / "run"
    record = folder_data(folder_config(root), SPEC).record
    folder_scan.write_split_record(run, {**record, "tasks": [{"source": "task1"}]})
    with pytest.raises(UserError, match="is not a valid split record"):
        folder_tasks(folder_config(root), run)
    escaping = json.loads(json.dumps(record))
    escaping["tasks"][0]["test"]["red"] = ["../../task2/blue/0.png"]
    folder_scan.write_split_record(run, escaping)
    with pytest.raises(UserError, match="a path leaves its task folder"):
        folder_tasks(folder_config(root), run)
    folder_scan.write_split_record(run, record)
    (root / "task2" / "blue" / record["tasks"][1]["test"]["blue"][0].split("/")[1]).unlink()
    with pytest.raises(UserError, match="1 image.s. of the run's recorded split are gone"):
        folder_tasks(folder_config(root), run)


def test_an_extra_task_folder_after_a_builtin_benchmark_gets_the_next_class_ids(root):
    data = load_dataset(DataConfig(extra_task_dirs=(str(root / "task2"),), num_tasks=6), SPEC)
    assert data.num_classes == 12 and data.names()[9:] == ("9", "blue", "white")
    assert data.task_classes == ((10, 11),) and data.task_names == ("task2",)
    assert sorted(set(data.test_targets[-4:].tolist())) == [10, 11]
    x, y = data.train[len(data.train) - 1]
    assert x.shape == (3, SPEC.img_size, SPEC.img_size) and int(y) == 11
    clash = root.parent / "more"
    write_task(clash, ["3", "orange"])
    with pytest.raises(UserError, match="class '3' of .* is already a class of Split-Digits"):
        load_dataset(DataConfig(extra_task_dirs=(str(clash),), num_tasks=6), SPEC)


def test_load_folder_task_reads_one_folder(root):
    task = load_folder_task(root / "task2")
    assert task.name == "task2" and task.classes == ("blue", "white") and not task.given_split


# -- bad data: one answer before any training, nothing written ------------------------------------------------
def test_a_class_already_used_by_an_earlier_task_is_named_with_that_task(root, tmp_path, capsys):
    write_task(root / "task3", ["red", "yellow"])
    err = check(["folder_hideprompt", "--data-path", str(root), "--output_dir", str(tmp_path / "run")], capsys)
    assert "class 'red' of task 3" in err and "already a class of task 1 ('task1'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("count, expected", [(0, "has 0 readable image(s), needs at least 2"),
                                             (1, "has 1 readable image(s), needs at least 2")])
def test_a_class_with_too_few_images_says_how_many_it_has_and_needs(root, tmp_path, capsys, count, expected):
    (root / "task2" / "empty").mkdir()
    write_class(root / "task2" / "empty", (1, 2, 3), count)
    err = check(["folder_l2p", "--data-path", str(root), "--output_dir", str(tmp_path / "run")], capsys)
    assert f"class 'empty' {expected}" in err and "task2" in err
    assert not (tmp_path / "run").exists()


def test_covariance_statistics_need_two_training_images_per_class(root, tmp_path, capsys):
    write_class(root / "task2" / "pair", (1, 2, 3), 2)
    err = check(["folder_hideprompt", "--data-path", str(root), "--output_dir", str(tmp_path / "run"),
                 "--ca_storage_efficient_method", "covariance"], capsys)
    assert "class 'pair' has 2 readable image(s), needs at least 3 (2 to train on and 1 to test" in err


def test_a_given_split_needs_every_class_in_train_and_test(tmp_path, capsys):
    task = tmp_path / "data" / "t1"
    write_task(task / "train", ["red", "blue"], count=3)
    write_task(task / "test", ["red"], count=2)
    err = check(["folder_hideprompt", "--data-path", str(tmp_path / "data"), "--output_dir", str(tmp_path / "r")],
                capsys)
    assert "class 'blue' has 0 readable test image(s), needs at least 1" in err


def test_unreadable_images_are_all_listed_or_skipped_and_reported(root, tmp_path, capsys):
    truncated = root / "task1" / "red" / "cut.jpg"
    truncated.write_bytes((root / "task1" / "red" / "6.jpeg").read_bytes()[:300])
    garbage = root / "task2" / "blue" / "fake.PNG"
    garbage.write_bytes(b"not an image at all")
    run = tmp_path / "run"
    err = check(["folder_hideprompt", "--data-path", str(root), "--output_dir", str(run)], capsys)
    assert "2 image file(s) cannot be read" in err and str(truncated) in err and str(garbage) in err
    assert "--skip-bad-images" in err and not run.exists()
    data = folder_config(root, skip_bad_images=True)
    tasks = folder_tasks(data)
    assert [len(t.skipped) for t in tasks] == [1, 1]
    assert tasks[0].skipped[0].startswith("red/cut.jpg: unreadable")
    assert tasks[1].skipped[0] == "blue/fake.PNG: not an image Pillow can read"
    assert all("cut.jpg" not in p for p in tasks[0].train[1] + tasks[0].test[1])
    assert "skipped 2 unreadable image(s) (--skip-bad-images)" in "\n".join(summary(tasks))
    assert parse_invocation(["folder_hideprompt", "--data-path", str(root), "--skip-bad-images"]
                            ).config.data.skip_bad_images


def test_an_image_over_the_pixel_limit_is_a_bad_file(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(folder_scan, "MAX_PIXELS", 32 * 32)
    err = check(["folder_hideprompt", "--data-path", str(root), "--output_dir", str(tmp_path / "run")], capsys)
    assert "more than 1024 pixels (decompression-bomb limit)" in err


def test_folders_without_class_sub_folders_or_tasks_are_refused(tmp_path, capsys):
    flat = tmp_path / "flat"
    (flat / "task1").mkdir(parents=True)
    colour_image((1, 2, 3), (8, 8), 0).save(flat / "task1" / "a.png")
    err = check(["folder_hideprompt", "--data-path", str(flat), "--output_dir", str(tmp_path / "r")], capsys)
    assert "has no class sub-folders" in err and "task1/cat/1.jpg" in err
    (tmp_path / "empty").mkdir()
    err = check(["folder_hideprompt", "--data-path", str(tmp_path / "empty")], capsys)
    assert "holds no task folder" in err
    assert "needs --data-path ROOT" in check(["folder_hideprompt"], capsys)


def test_a_data_path_one_level_too_deep_is_named(root, capsys):
    err = check(["folder_hideprompt", "--data-path", str(root / "task1")], capsys)
    assert "has no class sub-folders" in err and f"is '{root / 'task1'}' one level too deep?" in err


def test_folder_names_from_outside_are_bounded(root, tmp_path, capsys):
    long = root / "task2" / ("x" * 101)
    write_class(long, (1, 2, 3), 2)
    assert "is longer than 100 characters" in check(["folder_hideprompt", "--data-path", str(root)], capsys)
    shutil.rmtree(long)
    write_class(root / "task2" / "bell\x07", (1, 2, 3), 2)
    assert "not printable" in check(["folder_hideprompt", "--data-path", str(root)], capsys)


def test_the_task_count_comes_from_the_folders(root, capsys):
    config = parse_invocation(["folder_dualprompt", "--data-path", str(root)]).config
    assert config.data.num_tasks == 2 and config.data.dataset == "ImageFolder"
    assert "leave --num_tasks out" in check(["folder_hideprompt", "--data-path", str(root), "--num_tasks", "3"],
                                            capsys)
    joint = parse_invocation(["folder_joint", "--data-path", str(root)]).config
    assert joint.data.num_tasks == 1 and folder_data(joint.data, SPEC).task_classes == ((0, 1, 2, 3),)


@pytest.mark.parametrize("method", [*FOLDER_METHODS, "joint"])
def test_every_method_has_a_folder_preset_with_the_digits_budget(root, method):
    config = parse_invocation([f"folder_{method}", "--data-path", str(root)]).config
    digits = preset(f"digits_{method}")
    assert config.data.dataset == "ImageFolder" and config.data.data_path == str(root)
    assert (config.method, config.optim, config.tii_optim, config.backbone) == (
        digits.method, digits.optim, digits.tii_optim, digits.backbone)
    # HiDe on your own data routes with the study's best router and answers within the routed task (docs/routing.md)
    routing = ("ensemble", "routed_task") if config.method in ("hideprompt", "hidelora") else ("mlp", "seen")
    assert (config.alignment.router, config.alignment.answer_scope) == routing
    assert dataclasses.replace(config.alignment, router="mlp", answer_scope="seen") == digits.alignment
    assert config.adapter.slots >= config.data.num_tasks


def test_folder_settings_round_trip_through_checkpoints_and_overrides(root):
    config = parse_invocation(["folder_hidelora", "--data-path", str(root), "--skip-bad-images",
                               f"data.extra_task_dirs={root / 'task2'}", "data.test_fraction=0.3"]).config
    assert config.data.extra_task_dirs == (str(root / "task2"),) and config.data.num_tasks == 3
    assert RunConfig.from_dict(json.loads(config.to_json())) == config


def test_builtin_readers_pass_their_class_names(tmp_path, monkeypatch):
    from tests.helpers import dataset_files

    monkeypatch.setenv("HIDECL_CACHE", str(tmp_path / "cache"))
    from train.data import reference

    dataset_files.write_cifar100(tmp_path)
    assert reference.cifar100(tmp_path)[0].names[:2] == ("c0", "c1")
    dataset_files.write_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "classes.txt").write_text("2 002.Laysan_Albatross\n1 001.Black_footed_Albatross\n")
    assert reference.cub200(tmp_path)[0].names == ("Black_footed_Albatross", "Laysan_Albatross")
    dataset_files.write_cars_devkit(tmp_path)
    assert reference.cars196(tmp_path)[0].names == ("Car Model 0", "Car Model 1", "Car Model 2")
    dataset_files.write_imagenet_r(tmp_path, classes=2, per_class=5)
    assert reference.imagenet_r(tmp_path)[0].names == ("n00000000", "n00000001")
    assert load_dataset(DataConfig(), SPEC).names() == tuple("0123456789")


# -- names end to end: training, results, export, Triton ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, random_backbone) -> tuple[Path, Path]:
    """folder_hideprompt on two tasks of real files: task 1, one more image on disk, then --resume for task 2."""
    base = tmp_path_factory.mktemp("folder_run")
    data, run = base / "data", base / "run"
    write_task(data / "a_colours", ["red", "green"], count=6)
    write_task(data / "b_colours", ["blue", "white"], count=6, seed=10)
    common = ["folder_hideprompt", "--data-path", str(data), "--output_dir", str(run),
              f"backbone.checkpoint={random_backbone}", *FAST]
    done = run_main([*common, "--until_task", "1"], OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    write_class(data / "a_colours" / "red", COLOURS["red"], 3, seed=77, prefix="late")  # after the split
    done = run_main([*common, "--resume"], OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-3000:]
    return data, run


@pytest.mark.multiprocess
def test_results_name_every_class_and_task(trained):
    data, run = trained
    result = results(run)
    assert result["class_names"] == ["green", "red", "blue", "white"]
    assert [t["name"] for t in result["tasks"]] == ["a_colours", "b_colours"]
    assert [t["classes"] for t in result["tasks"]] == [["green", "red"], ["blue", "white"]]
    assert set(result["per_class_accuracy"]) == {"green", "red", "blue", "white"}
    assert set(result["per_task_accuracy"]) == {"a_colours", "b_colours"}
    assert result["per_task_accuracy"]["b_colours"] == pytest.approx(result["accuracy_matrix"][1][1])
    state = json.loads((run / "checkpoints" / "task2" / "state.json").read_text())
    assert state["class_names"] == result["class_names"]
    split = json.loads((run / SPLIT_FILE).read_text())  # resume kept the recorded split: the new files are not in it
    red = split["tasks"][0]["train"]["red"] + split["tasks"][0]["test"]["red"]
    assert len(red) == 6 and len(list((data / "a_colours" / "red").iterdir())) == 9


@pytest.mark.multiprocess
def test_the_manifest_and_the_triton_repository_answer_with_names(trained, tmp_path):
    import subprocess
    import sys

    from export.manifest import load_manifest
    from tests.helpers.runs import REPO, child_env

    _, run = trained
    done = subprocess.run([sys.executable, "-m", "export", str(run), "--out", str(tmp_path / "bundles"),
                           "--variants", "", "--triton-repo", str(tmp_path / "triton")],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = load_manifest(tmp_path / "bundles" / "2")
    assert manifest.class_names == ["green", "red", "blue", "white"]
    assert [(t.name, t.class_names, t.class_ids) for t in manifest.tasks] == [
        ("a_colours", ["green", "red"], [0, 1]), ("b_colours", ["blue", "white"], [2, 3])]
    assert manifest.parity.samples == 4  # the recorded test split: one image of each class
    for model in ("classifier", "pipeline"):
        assert (tmp_path / "triton" / model / "labels.txt").read_text().splitlines() == manifest.class_names
        config = (tmp_path / "triton" / model / "config.pbtxt").read_text()
        assert config.count('label_filename: "labels.txt"') == 2  # logits and probabilities


def test_results_name_a_benchmark_s_tasks_by_number_and_folder_tasks_by_folder():
    from train.data.registry import ContinualData
    from train.report import named_results

    data = ContinualData(None, None, None, torch.zeros(0), torch.zeros(0), 6, ("0", "1", "2", "3", "cat", "dog"),
                         ((4, 5),), ("pets",))
    out = named_results(data, ((0, 1), (2, 3), (4, 5)), 3, np.array([50.0, 60.0, 70.0]),
                        [100.0, 0.0, float("nan"), 50.0, 75.0, 25.0])
    assert [(t["name"], t["classes"], t["accuracy"]) for t in out["tasks"]] == [
        ("task1", ["0", "1"], 50.0), ("task2", ["2", "3"], 60.0), ("pets", ["cat", "dog"], 70.0)]
    assert out["per_class_accuracy"] == {"0": 100.0, "1": 0.0, "3": 50.0, "cat": 75.0, "dog": 25.0}
    assert named_results(data, ((0, 1), (2, 3), (4, 5)), 1, np.array([50.0]), [])["per_task_accuracy"] == {
        "task1": 50.0}
