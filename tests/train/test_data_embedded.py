"""The embedded data: Split-Digits, rendered glyphs, and the dataset registry's errors."""

import string

import numpy as np
import pytest
import torch

from train.backbones.registry import backbone_spec
from train.config import DataConfig
from train.data.digits import digits_arrays, load_split_digits
from train.data.glyphs import GLYPHS, render_glyph_dataset
from train.data.registry import DATASETS, load_dataset
from train.errors import UserError

SPEC = backbone_spec("vit_glyph_patch8_32")


def test_digits_split_is_fixed():
    first, second = digits_arrays(), digits_arrays()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_digits_split_is_stratified_with_a_quarter_held_out():
    x_train, x_test, y_train, y_test = digits_arrays()
    assert x_train.shape[1:] == x_test.shape[1:] == (8, 8)
    assert len(x_train) == len(y_train) and len(x_test) == len(y_test)
    assert len(y_test) / (len(y_train) + len(y_test)) == pytest.approx(0.25, abs=0.01)
    train_counts, test_counts = np.bincount(y_train, minlength=10), np.bincount(y_test, minlength=10)
    assert (train_counts > 0).all() and (test_counts > 0).all()
    # stratified: every class keeps (about) the overall test fraction
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.25, atol=0.02)
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0


def test_split_digits_inputs_fit_the_embedded_backbone():
    train, test = load_split_digits(SPEC)
    x_train, y_train = train.tensors
    x_test, y_test = test.tensors
    assert x_train.shape[1:] == x_test.shape[1:] == (3, SPEC.img_size, SPEC.img_size) == (3, 32, 32)
    assert x_train.dtype == torch.float32
    assert sorted(y_train.unique().tolist()) == list(range(10))
    assert sorted(y_test.unique().tolist()) == list(range(10))
    # normalised with the spec's mean/std (0.5, 0.5): [0, 1] pixels land in [-1, 1], grey channels equal
    assert x_train.min() >= -1.0 - 1e-6 and x_train.max() <= 1.0 + 1e-6
    assert x_train.min() < -0.9 and x_train.max() > 0.9
    assert torch.equal(x_train[:, 0], x_train[:, 2])


def test_split_digits_tensors_match_the_arrays():
    _, _, y_train, y_test = digits_arrays()
    train, test = load_split_digits(SPEC)
    np.testing.assert_array_equal(train.tensors[1].numpy(), y_train)
    np.testing.assert_array_equal(test.tensors[1].numpy(), y_test)


def test_registry_loads_split_digits():
    data = load_dataset(DataConfig(dataset="Split-Digits", data_path="/nonexistent"), SPEC)
    assert data.num_classes == 10 == DATASETS["Split-Digits"].num_classes
    assert torch.equal(data.train_targets, data.train.tensors[1])
    assert torch.equal(data.test_targets, data.test.tensors[1])


def test_glyphs_contain_no_digit():
    assert not set(GLYPHS) & set(string.digits)
    assert len(set(GLYPHS)) == len(GLYPHS)


def test_glyph_dataset_is_deterministic_per_seed():
    images, labels = render_glyph_dataset(200, 32, seed=3)
    again_images, again_labels = render_glyph_dataset(200, 32, seed=3)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    other_images, _ = render_glyph_dataset(200, 32, seed=4)
    assert other_images.shape != images.shape or not np.array_equal(other_images, images)


def test_glyph_dataset_values_and_labels():
    images, labels = render_glyph_dataset(200, 32, seed=0)
    assert images.ndim == 3 and images.shape[1:] == (32, 32)
    assert len(images) == len(labels)
    assert len(images) >= 150  # only glyphs a font lacks are dropped
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.min() >= 0 and labels.max() < len(GLYPHS)
    assert (images.reshape(len(images), -1).max(axis=1) > 0.2).all()


def test_reference_dataset_without_data_names_path_and_layout():
    with pytest.raises(UserError) as error:
        load_dataset(DataConfig(dataset="Split-CIFAR100", data_path="/nonexistent"), SPEC)
    message = str(error.value)
    assert "/nonexistent" in message
    assert "does not exist" in message
    assert "cifar-100-python" in message


def test_reference_dataset_with_existing_path_still_names_the_layout(tmp_path):
    with pytest.raises(UserError) as error:
        load_dataset(DataConfig(dataset="Split-Imagenet-R", data_path=str(tmp_path)), SPEC)
    assert str(tmp_path) in str(error.value)
    assert "imagenet-r" in str(error.value)


def test_unknown_dataset_raises_user_error_naming_it():
    with pytest.raises(UserError, match="Split-Nothing"):
        load_dataset(DataConfig(dataset="Split-Nothing", data_path="/nonexistent"), SPEC)
