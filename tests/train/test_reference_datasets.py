"""The reference datasets' real parsing code on tiny fixtures in their genuine on-disk formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import dataset_files
from tests.helpers.runs import results, run_main
from train.backbones.registry import backbone_spec
from train.config import DataConfig
from train.data import reference
from train.data.registry import load_dataset
from train.errors import UserError

SPEC = backbone_spec("vit_glyph_patch8_32")


def test_cifar100_reads_the_pickles_pixel_exact(tmp_path):
    written = dataset_files.write_cifar100(tmp_path)
    train, test = reference.cifar100(tmp_path)
    np.testing.assert_array_equal(train.images, written)
    assert train.labels.tolist()[:4] == [0, 0, 1, 1] and len(test.labels) == 100
    data = load_dataset(DataConfig(dataset="Split-CIFAR100", data_path=str(tmp_path)), SPEC)
    x, y = data.test[5]
    assert x.shape == (3, 32, 32) and int(y) == 5 and data.num_classes == 100


def test_mnist_idx_plain_and_gzipped(tmp_path):
    dataset_files.write_mnist_like(tmp_path, "MNIST")
    dataset_files.write_mnist_like(tmp_path, "FashionMNIST", gz=True)
    for name in ("MNIST", "FashionMNIST"):
        train, test = reference.mnist_like(tmp_path, name)
        assert train.images.shape == (20, 28, 28) and test.labels.tolist() == list(range(10))


def test_svhn_mat_maps_label_10_to_digit_0(tmp_path):
    dataset_files.write_svhn(tmp_path)
    train, _ = reference.svhn(tmp_path)
    assert train.images.shape == (20, 32, 32, 3)
    assert train.labels.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_five_datasets_offsets_labels_in_the_reference_order(tmp_path):
    dataset_files.write_svhn(tmp_path)
    dataset_files.write_mnist_like(tmp_path, "MNIST")
    dataset_files.write_cifar10(tmp_path)
    dataset_files.write_not_mnist(tmp_path)
    dataset_files.write_mnist_like(tmp_path, "FashionMNIST")
    data = load_dataset(DataConfig(dataset="5-datasets", data_path=str(tmp_path)), SPEC)
    assert data.num_classes == 50
    for task in range(5):  # every member's labels land in its own block of ten: statistics per class work
        members = data.train_targets[(data.train_targets >= 10 * task) & (data.train_targets < 10 * task + 10)]
        assert sorted(members.unique().tolist()) == list(range(10 * task, 10 * task + 10))
    x, y = data.train_eval[len(data.train_eval) - 1]
    assert x.shape == (3, 32, 32) and int(y) == 49


def test_five_datasets_transform_leak_switch(tmp_path):
    """The reference's leak gives notMNIST and Fashion-MNIST the CIFAR transform; off by default."""
    write_five_datasets(tmp_path)
    plain = reference.five_datasets(tmp_path, SPEC, reference_norm=True, transform_leak=False)
    leaky = reference.five_datasets(tmp_path, SPEC, reference_norm=True, transform_leak=True)
    fashion = -1  # last sample: Fashion-MNIST, test transform
    assert not torch.allclose(plain[2][fashion][0], leaky[2][fashion][0])  # CIFAR-100 normalisation leaked in
    assert torch.equal(plain[2][0][0], leaky[2][0][0])  # SVHN (before CIFAR-10) unaffected


def test_imagenet_r_split_is_fixed_80_20_and_leaves_the_folder_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HIDECL_CACHE", str(tmp_path / "cache"))
    dataset_files.write_imagenet_r(tmp_path)
    before = sorted(str(p) for p in (tmp_path / "imagenet-r").rglob("*"))
    train, test = reference.imagenet_r(tmp_path)
    again, _ = reference.imagenet_r(tmp_path)
    assert len(train.images) == 24 and len(test.images) == 6 and train.images == again.images
    assert not set(train.images) & set(test.images)
    assert sorted(str(p) for p in (tmp_path / "imagenet-r").rglob("*")) == before
    record = json.loads((tmp_path / "cache" / "splits" / "imagenet-r-seed0.json").read_text())
    assert sum(map(len, record["train"].values())) == 24 and record["train_fraction"] == 0.8


def test_cub_uses_the_official_train_test_split(tmp_path):
    dataset_files.write_cub(tmp_path)
    train, test = reference.cub200(tmp_path)
    assert len(train.images) == len(test.images) == 6
    assert all("img1" in p.name or "img3" in p.name for p in train.images)  # flag 1 = train
    assert sorted(set(train.labels.tolist())) == [0, 1, 2]


@pytest.mark.parametrize("name", ["Split-CIFAR100", "Split-Imagenet-R", "5-datasets", "Split-CUB200", "Cars196",
                                  "Split-CIFAR10", "Split-MNIST", "Split-FashionMNIST", "Split-SVHN", "Split-NotMNIST"])
def test_an_empty_folder_names_the_missing_file_and_the_layout(tmp_path, name):
    with pytest.raises(UserError) as error:
        load_dataset(DataConfig(dataset=name, data_path=str(tmp_path)), SPEC)
    message = str(error.value)
    assert str(tmp_path) in message and "Expected layout" in message and "Get it from" in message
    torchvision_can = name not in ("Split-Imagenet-R", "Split-CUB200", "Cars196", "Split-NotMNIST")
    assert ("--download" in message) == torchvision_can


SPLIT_MEMBERS = {  # standalone split of a 5-Datasets member → (fixture writer, CIFAR-style transform)
    "Split-CIFAR10": (dataset_files.write_cifar10, True),
    "Split-MNIST": (lambda root: dataset_files.write_mnist_like(root, "MNIST"), False),
    "Split-FashionMNIST": (lambda root: dataset_files.write_mnist_like(root, "FashionMNIST", gz=True), False),
    "Split-SVHN": (dataset_files.write_svhn, False),
    "Split-NotMNIST": (dataset_files.write_not_mnist, False),
}


@pytest.mark.parametrize("name", SPLIT_MEMBERS)
def test_split_member_datasets_load_with_their_own_labels_and_transform(tmp_path, name):
    from torchvision import transforms as T

    from train.data.registry import DATASETS
    from train.data.splits import split_classes

    writer, cifar_style = SPLIT_MEMBERS[name]
    writer(tmp_path)
    data = load_dataset(DataConfig(dataset=name, data_path=str(tmp_path)), SPEC)
    assert data.num_classes == 10 and sorted(data.train_targets.unique().tolist()) == list(range(10))  # no offset
    assert sorted(data.test_targets.unique().tolist()) == list(range(10))
    split = split_classes(data.num_classes, DATASETS[name].default_tasks)
    assert split.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    x, y = data.test[3]
    assert x.shape == (3, 32, 32) and int(y) == int(data.test_targets[3])
    jitter = any(isinstance(step, T.ColorJitter) for step in data.train.transform.transforms)
    assert jitter == cifar_style  # the reference's CIFAR transform only for CIFAR data


def write_five_datasets(root) -> None:
    for writer in (dataset_files.write_svhn, dataset_files.write_cifar10, dataset_files.write_not_mnist):
        writer(root)
    dataset_files.write_mnist_like(root, "MNIST")
    dataset_files.write_mnist_like(root, "FashionMNIST")


SMOKE = {  # preset → (fixture writer covering every class, what an empty folder's message must name)
    "cifar100_hideprompt_5e": (dataset_files.write_cifar100, "cifar-100-python"),
    "imr_hideprompt_5e": (lambda root: dataset_files.write_imagenet_r(root, classes=200, per_class=2), "imagenet-r"),
    "five_datasets_hideprompt_5e": (write_five_datasets, "cifar-10-batches-py"),
    "cub_hideprompt_5e": (lambda root: dataset_files.write_cub(root, classes=200, per_class=2), "CUB_200_2011"),
}


@pytest.mark.parametrize("name", SMOKE)
def test_reference_preset_smoke_run_on_a_fixture(tmp_path, random_backbone, name):
    """Each reference preset, launched as users do, on a fixture of its dataset with the tiny backbone."""
    writer, layout = SMOKE[name]
    writer(tmp_path / "data")
    args = [name, "--data-path", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"),
            "--model", "vit_glyph_patch8_32", "--original_model", "vit_glyph_patch8_32", "--num_tasks", "2",
            "--size", "2", "--epochs", "1", "--num_workers", "0", "--batch-size", "64",
            f"--pretrained_checkpoint={random_backbone}", "tii_optim.epochs=1", "alignment.crct_epochs=1",
            "alignment.n_centroids=2"]
    done = run_main(args, ranks=1)
    assert done.returncode == 0, done.stderr[-3000:]
    r = results(tmp_path / "out")
    assert np.array(r["accuracy_matrix"]).shape == (2, 2) and r["preset"] == name
    empty = run_main([name, "--data-path", str(tmp_path / "out")])
    assert empty.returncode == 2 and layout in empty.stderr and "Traceback" not in empty.stderr


def test_cars196_class_folders(tmp_path):
    dataset_files.write_cars(tmp_path)
    train, test = reference.cars196(tmp_path)
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and len(test.images) == 6


def test_cars196_official_devkit_mat_annotations(tmp_path):
    from torchvision.datasets import StanfordCars

    rows = dataset_files.write_cars_devkit(tmp_path)
    train, test = reference.cars196(tmp_path)
    for part, split in ((train, "train"), (test, "test")):
        assert [p.name for p in part.images] == [fname for _, fname in rows[split]]
        assert part.labels.tolist() == [label - 1 for label, _ in rows[split]]
        assert all(p.parent.name == f"cars_{split}" and p.is_file() for p in part.images)
        theirs = StanfordCars(str(tmp_path), split=split)  # torchvision reads the same fixture the same way
        assert [(Path(f).name, c) for f, c in theirs._samples] == list(zip([p.name for p in part.images],
                                                                          part.labels.tolist(), strict=True))
    data = load_dataset(DataConfig(dataset="Cars196", data_path=str(tmp_path)), SPEC)
    assert data.train[0][0].shape == (3, 32, 32) and int(data.train_targets[1]) == 2


def test_cars196_devkit_missing_annotations_names_the_file(tmp_path):
    dataset_files.write_cars_devkit(tmp_path)
    (tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(UserError, match="cars_test_annos_withlabels.mat"):
        load_dataset(DataConfig(dataset="Cars196", data_path=str(tmp_path)), SPEC)


def test_missing_backbone_checkpoint_names_file_source_and_layout(tmp_path):
    from train.backbones.vit import create_vit
    from train.weights import load_weights

    spec = backbone_spec("vit_base_patch16_224_dino")
    with pytest.raises(UserError) as error:
        load_weights(create_vit(SPEC), spec, tmp_path / "dino_vitbase16_pretrain.pth")
    message = str(error.value)
    assert "dino_vitbase16_pretrain.pth" in message and "DINO's" in message and "--backbone_checkpoint" in message


@pytest.mark.parametrize("model", ["vit_base_patch16_224", "vit_base_patch16_224_21k_ibot", "vit_base_patch16_224_ibot",
                                   "vit_base_patch16_224_dino", "vit_base_patch16_224_mocov3",
                                   "vit_base_patch16_224_augreg_in21k_ft_in1k"])
@pytest.mark.parametrize("name", [*SMOKE, "cifar100_l2p", "imr_dualprompt", "cub_sprompt_5e", "imr_hidelora"])
def test_every_reference_backbone_and_dataset_resolves(name, model):
    from train.cli import parse_invocation

    config = parse_invocation([name, "--model", model, "--original_model", model, "--dry-run"]).config
    assert backbone_spec(config.backbone.model).img_size == 224
