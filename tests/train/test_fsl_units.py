"""The few-shot LoRA study's parts, in process: LoRA merge, episode sampling, label layout, statistics, flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
from train.backbones.vit import cls_features, create_vit
from train.cli import parse_few_shot_invocation
from train.config import FewShotConfig
from train.data.digits import digits_arrays
from train.data.registry import ContinualData
from train.errors import UserError
from train.fewshot.data import UpstreamLayout, upstream_data
from train.fewshot.episode import fit_head, majority_slot
from train.fewshot.sampling import episodes_of_rank, sample_episode
from train.fewshot.summary import paired_difference, summarize
from train.peft.lora import LoraPool, lora_features, merge_lora
from train.presets import few_shot_preset


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_vit(backbone_spec(EMBEDDED_BACKBONE)).requires_grad_(False).eval()


# -- LoRA merge --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("slot", [0, 2])
def test_merged_lora_forward_equals_the_unmerged_lora_forward(vit, slot):
    torch.manual_seed(1)
    pool = LoraPool(3, 5, vit.embed_dim, 4, alpha=2.0)
    with torch.no_grad():
        pool.b.normal_(0, 0.5)  # B starts at 0: give the delta something to do
    a, b = pool.slot(slot)
    x = torch.randn(6, 3, 32, 32)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    merged = merge_lora(vit, a, b, pool.scaling)
    with torch.no_grad():
        expected = lora_features(vit, x, a, b, pool.scaling)
        got = cls_features(merged, x)
        plain = cls_features(vit, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got - plain).abs().max() > 1e-2  # the merged delta really changes the features
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in before.items())  # the frozen backbone untouched
    q_rows = slice(0, vit.embed_dim)
    for block, original in zip(merged.blocks, vit.blocks):
        assert torch.equal(block.attn.qkv.weight[q_rows], original.attn.qkv.weight[q_rows])  # queries unchanged
        assert torch.equal(block.attn.qkv.bias, original.attn.qkv.bias)
    assert torch.equal(merged.blocks[5].attn.qkv.weight, vit.blocks[5].attn.qkv.weight)  # beyond the LoRA depth


def test_merge_of_a_zero_lora_is_the_backbone(vit):
    pool = LoraPool(1, 5, vit.embed_dim, 4)  # B = 0 at init
    merged = merge_lora(vit, *pool.slot(0), pool.scaling)
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in merged.state_dict().items())


# -- episodes ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    x_train, x_test, y_train, y_test = digits_arrays()
    return x_train, x_test, torch.as_tensor(y_train), torch.as_tensor(y_test)


HELD_OUT = (4, 5, 6, 7, 8, 9)


def test_episodes_are_seeded_and_differ_between_episodes_and_seeds(digits):
    _, _, y_train, y_test = digits
    draw = lambda index, seed: sample_episode(index, seed, HELD_OUT, 5, 5, 100, y_train, y_test)
    assert draw(3, 42) == draw(3, 42)
    assert draw(3, 42) != draw(4, 42) and draw(3, 42) != draw(3, 40)
    classes = {draw(k, 42).classes for k in range(30)}
    assert len(classes) > 5  # classes (and their order) vary over episodes
    assert {c for episode in classes for c in episode} == set(HELD_OUT)


def test_episode_support_and_query_are_disjoint_and_from_the_held_out_classes(digits):
    x_train, x_test, y_train, y_test = digits
    for index in range(20):
        episode = sample_episode(index, 42, HELD_OUT, 5, 5, 100, y_train, y_test)
        assert len(episode.classes) == 5 and set(episode.classes) <= set(HELD_OUT)
        assert len(set(episode.support)) == len(episode.support) == 25
        assert len(set(episode.query)) == len(episode.query)
        assert episode.support_labels == tuple(label for label in range(5) for _ in range(5))
        for indices, labels, targets in ((episode.support, episode.support_labels, y_train),
                                         (episode.query, episode.query_labels, y_test)):
            native = targets[list(indices)].tolist()
            assert native == [episode.classes[label] for label in labels]  # labels follow the episode's classes
        for label, native in enumerate(episode.classes):  # every test image of the class (< 100 available)
            assert episode.query_labels.count(label) == int((y_test == native).sum())
        support_images = {x_train[i].tobytes() for i in episode.support}
        assert not support_images & {x_test[i].tobytes() for i in episode.query}  # no image on both sides


def test_query_count_is_capped_and_short_classes_are_refused(digits):
    _, _, y_train, y_test = digits
    episode = sample_episode(0, 42, HELD_OUT, 5, 5, 7, y_train, y_test)
    assert len(episode.query) == 35
    with pytest.raises(UserError, match="fewer than the 500"):
        sample_episode(0, 42, HELD_OUT, 5, 500, 7, y_train, y_test)


def test_episodes_spread_over_ranks_cover_each_episode_once():
    shares = [episodes_of_rank(10, rank, 3) for rank in range(3)]
    assert sorted(sum(shares, [])) == list(range(10))


def test_majority_slot_and_the_episode_head():
    class_to_slot = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[0, 0, 5, 0], [0, 0, 0, 5], [5, 0, 0, 0.0]])
    assert majority_slot(logits, class_to_slot) == 1
    torch.manual_seed(0)
    features, labels = torch.randn(10, 8) + torch.arange(2).repeat(5)[:, None] * 4, torch.arange(2).repeat(5)
    head = fit_head(lambda _: features, labels, 2, 50, 0.05, seed=3)
    again = fit_head(lambda _: features, labels, 2, 50, 0.05, seed=3)
    assert torch.equal(head.weight, again.weight)  # seeded init, deterministic steps
    assert (head(features).argmax(1) == labels).all()


# -- label layout: several upstream datasets (the Cars/CUB fix) ------------------------------------------------
def _fake(num_classes: int, per_class: int, value: float) -> ContinualData:
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = torch.full((len(labels), 1), value)
    train, test = TensorDataset(images, labels), TensorDataset(images, labels)
    return ContinualData(train, train, test, labels, labels, num_classes)


def test_second_dataset_labels_are_offset_behind_the_first():
    layout = UpstreamLayout((160, 160), (8, 8))
    assert layout.offsets == (0, 160) and layout.num_classes == 320
    split = layout.split()
    assert split.num_tasks == 16 and split.task_classes[8] == tuple(range(160, 180))
    assert layout.class_to_dataset()[[0, 159, 160, 319]].tolist() == [0, 0, 1, 1]
    assert layout.task_to_dataset() == (0,) * 8 + (1,) * 8
    data = upstream_data([_fake(196, 2, 1.0), _fake(200, 2, 2.0)], layout)  # Cars 196, CUB 200 classes
    assert data.num_classes == 320 and len(data.train) == 640  # held-out classes (160+) left out
    assert data.train_targets.unique().tolist() == list(range(320))
    image, label = data.train[320 + 2 * 80]  # a CUB image of its class 80: upstream class 240
    assert image.item() == 2.0 and label.item() == 240


def test_uneven_tasks_follow_split_classes():
    assert UpstreamLayout((5,), (2,)).split().task_classes == ((0, 1, 2), (3, 4))
    with pytest.raises(UserError):
        UpstreamLayout((4,), (3,)).split()  # 2 + 2 + 0: the last task would be empty


# -- statistics -------------------------------------------------------------------------------------------------
def test_confidence_interval_of_the_mean_and_the_reference_figure():
    accuracies = [60.0, 70.0, 80.0, 90.0]
    s = summarize(accuracies)
    std = np.std(accuracies, ddof=1)
    assert s["accuracy_mean"] == 75.0 and s["accuracy_std"] == pytest.approx(std)
    assert s["ci95_half_width"] == pytest.approx(3.182446 * std / 2, rel=1e-5)  # t(0.975, 3)
    assert s["ci95"] == pytest.approx([75 - s["ci95_half_width"], 75 + s["ci95_half_width"]])
    assert s["reference_1_96_std"] == pytest.approx(1.96 * np.std(accuracies))
    many = summarize(list(np.random.default_rng(0).normal(50, 10, 400)))
    assert many["ci95_half_width"] == pytest.approx(1.966 * many["accuracy_std"] / 20, rel=1e-3)
    assert many["reference_1_96_std"] > 15 * many["ci95_half_width"]  # a spread, not an interval for the mean
    d = paired_difference([50.0, 60.0, 70.0], [55.0, 66.0, 74.0])
    assert d["difference_mean"] == pytest.approx(5.0) and d["ci95"][0] > 0
    assert math.isnan(summarize([50.0])["ci95_half_width"])


# -- flags ---------------------------------------------------------------------------------------------------
def test_list_flags_take_values_not_characters():
    config = parse_few_shot_invocation(
        "cub_cars_few_shot_lora --datasets Split-Cars196 Split-CUB200 --few_class_idx 170 171 172 173 174 175 "
        "--few_shot_dataset_idx 1 --continual_classes_per_dataset 160,160 --fs_backbone vanilla shared".split()).config
    assert config.fewshot.few_class_idx == (170, 171, 172, 173, 174, 175)
    assert config.fewshot.datasets == ("Split-Cars196", "Split-CUB200")
    assert config.fewshot.continual_classes_per_dataset == (160, 160)
    assert config.fewshot.fs_backbone == ("vanilla", "shared")
    assert config.run.data.num_tasks == 16  # the sum of --tasks_per_dataset


@pytest.mark.parametrize(("args", "message"), [
    ("--few_class_idx 150 160 161 162 163", "are not held-out classes"),
    ("--num_ways 6", "--num_ways 6 must be between 2 and the 5"),
    ("--num_tasks 10", "--num_tasks 10 disagrees with --tasks_per_dataset [8]"),
    ("--fs_backbone both", "--fs_backbone must be among"),
    ("--datasets Split-Imagenet-R Split-CUB200", "needs one value per dataset"),
    ("--train_inference_task_only", "belongs to train/main.py"),
])
def test_bad_few_shot_flags_are_one_message(args, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_few_shot_invocation(["imr_few_shot_lora", *args.split()])


def test_presets_are_valid_and_keep_the_reference_defaults():
    imr, cars = few_shot_preset("imr_few_shot_lora").validate(), few_shot_preset("cub_cars_few_shot_lora").validate()
    assert imr.fewshot == FewShotConfig()  # the dataclass defaults are the reference imr config's
    assert cars.fewshot.datasets == ("Split-Cars196", "Split-CUB200")
    assert cars.fewshot.few_shot_classes_per_dataset == (36, 40) and cars.fewshot.num_fs_epochs == 50
    assert cars.fewshot.fs_backbone == ("vanilla+shared",) and cars.run.data.num_tasks == 16
    digits = few_shot_preset("digits_few_shot_lora").validate()
    assert set(digits.fewshot.few_class_idx).isdisjoint(range(digits.fewshot.continual_classes_per_dataset[0]))
