"""Growth: every method's state fitted to a larger split keeps what was learned, new entries start as a fresh
model's, old-class predictions hold right after growth, and built-in runs are what they were before growth."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from tests.helpers.methods import METHODS, fit
from train.config import RunConfig
from train.data.splits import TaskSplit, split_classes
from train.errors import UserError
from train.growth import check_grows, grown_state, growth_sizes, recorded_split
from train.losses import mask_logits
from train.methods import build_method
from train.presets import preset
from train.stats import ClassStatistics

OLD = split_classes(10, 5)
NEW = TaskSplit(13, OLD.task_classes + ((10, 11, 12),))  # a sixth task with three new classes
HEAD = {"head.weight", "head.bias"}
TII = {"tii.head.weight", "tii.head.bias"}
GROWN = {  # what grows from 10 classes / 5 tasks to 13 classes / 6 tasks (L2P's pool of 10 is not per task)
    "hide_tii": TII,
    "hideprompt": HEAD | TII | {"prompts.prompt"},
    "hidelora": HEAD | TII | {"lora.a", "lora.b"},
    "l2p": HEAD,
    "dualprompt": HEAD | {"keys", "e_prompts.prompt"},
    "sprompt": HEAD | {"keys", "e_prompts.prompt"},
    "continual_lora": HEAD,
}
ROUTED_AMONG_SEEN = {"hide_tii", "hideprompt", "hidelora", "l2p", "continual_lora"}  # key matching uses every key


def config_for(key: str, split: TaskSplit) -> RunConfig:
    config = preset(METHODS[key])
    slots = max(config.adapter.slots, split.num_tasks)
    return dataclasses.replace(config, adapter=dataclasses.replace(config.adapter, slots=slots),
                               data=dataclasses.replace(config.data, num_tasks=split.num_tasks))


def build(key: str, backbone, split: TaskSplit, seed: int = 1):
    torch.manual_seed(seed)
    return build_method(key, config_for(key, split), backbone, split)


def batch(split: TaskSplit, task: int, n: int = 8):
    """Random images of the task's classes, and the generator that drew them (it draws the statistics' noise)."""
    generator = torch.Generator().manual_seed(task)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    classes = torch.tensor(split.task_classes[task])
    return x, classes[torch.arange(n) % len(classes)], generator


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train(method, split: TaskSplit, task: int, statistics: ClassStatistics, steps: int = 3) -> None:
    """A few Adam steps on task `task`, then (methods with statistics) its classes' statistics."""
    x, y, generator = batch(split, task)
    fit(method, task, x, y, statistics, steps)
    if method.uses_statistics:
        with torch.no_grad():
            features = method.statistics_features(x, task)
        for c in split.task_classes[task]:
            rows = features[y == c].repeat(3, 1)
            statistics.add_class(c, rows + torch.randn(rows.shape, generator=generator), seed=c)


def learned(method) -> dict[str, torch.Tensor]:
    """Everything but the backbone (the stage-2 methods' task-identity network included)."""
    return {k: v.detach().clone() for k, v in method.state_dict().items() if not k.startswith("backbone.")}


def grow(key: str, backbone, old):
    """The method built for NEW with `old`'s state fitted in; also the new model's values before loading."""
    new = build(key, backbone, NEW, seed=2)
    fresh = learned(new)
    sizes = growth_sizes(OLD, NEW, config_for(key, OLD), config_for(key, NEW))
    missing, unexpected = new.load_state_dict(grown_state(new, learned(old), sizes), strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing)
    return new.eval(), fresh


# Today's methods on today's split, fingerprinted before growth existed (tools: the same `train` below, run on the
# commit before growth): learned state after tasks 1-2, and the predictions after them.
BEFORE_GROWTH = {
    "hide_tii": ["5752fb3e0934298f", "3009f792f5f15f53"],
    "hideprompt": ["a7b66fdf8b193f60", "d74803eb74e7543b"],
    "hidelora": ["314fd989e117dd4a", "a1ee3b44f362630a"],
    "l2p": ["463f0ae7fbf73876", "a01d6cc8a0b4530e"],
    "dualprompt": ["37b3d9b0b56fde4d", "a1f5cb28940817b1"],
    "sprompt": ["479fadd154b8ce67", "c5b975bb66ee710b"],
    "continual_lora": ["2b6f664d22f7c7ff", "1cff868f516dbe1c"],
}


@pytest.mark.parametrize("key", METHODS)
def test_built_in_split_trains_bit_identically_to_before_growth(key, tiny_vit):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fingerprints were taken: summation order follows the thread count
    try:
        method, statistics = build(key, tiny_vit, OLD), ClassStatistics("variance")
        for task in (0, 1):
            train(method, OLD, task, statistics)
        with torch.no_grad():
            logits = method.predict(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(9)), 1).logits
    finally:
        torch.set_num_threads(threads)
    assert [fingerprint(method.learned_state()), fingerprint({"logits": logits})] == BEFORE_GROWTH[key]


@pytest.mark.parametrize("key", METHODS)
def test_growth_keeps_every_learned_entry_and_new_entries_start_fresh(key, tiny_vit):
    old = build(key, tiny_vit, OLD)
    statistics = ClassStatistics("variance")
    for task in range(5):
        train(old, OLD, task, statistics, steps=1)
    new, fresh = grow(key, tiny_vit, old.eval())
    before, after = learned(old), learned(new)
    grew = {k for k in before if before[k].shape != after[k].shape}
    assert grew == GROWN[key]
    for k, value in before.items():
        kept = tuple(slice(0, n) for n in value.shape)
        assert torch.equal(after[k][kept], value), k
        added = torch.ones_like(after[k], dtype=torch.bool)
        added[kept] = False
        assert torch.equal(after[k][added], fresh[k][added]), k
    assert all(after[k].shape[0] == 13 for k in grew & (HEAD | TII))


@pytest.mark.parametrize("key", METHODS)
def test_old_class_predictions_hold_right_after_growth(key, tiny_vit):
    """Served as export does it (logits masked to the seen classes): the same answers on the learned classes.
    DualPrompt and S-Prompt++ match keys against every slot, the new task's fresh key too (as a fresh model
    with six tasks would), so for them the same task's prompts give the same logits."""
    old = build(key, tiny_vit, OLD)
    statistics = ClassStatistics("variance")
    for task in range(5):
        train(old, OLD, task, statistics, steps=1)
    new, _ = grow(key, tiny_vit, old.eval())
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    seen_old, seen_new = OLD.seen_mask(4), NEW.seen_mask(4)
    with torch.no_grad():
        if key == "hide_tii":
            a, b = old.predict(x, 4).logits, new.predict(x, 4).logits
        elif old.routing == "none" or key not in ROUTED_AMONG_SEEN:
            condition = None if old.routing == "none" else old.route(x, seen_old).condition
            a, b = old.classify(x, condition), new.classify(x, condition)
        else:
            route_a, route_b = old.route(x, seen_old), new.route(x, seen_new)
            assert torch.equal(route_a.condition, route_b.condition)
            a, b = old.classify(x, route_a.condition), new.classify(x, route_b.condition)
    a, b = mask_logits(a.float(), seen_old), mask_logits(b.float(), seen_new)
    assert b.shape == (16, 13) and torch.isinf(b[:, 10:]).all()
    assert torch.equal(a.argmax(1), b.argmax(1))
    torch.testing.assert_close(b[:, :10], a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", METHODS)
def test_a_grown_model_learns_the_new_task(key, tiny_vit):
    old = build(key, tiny_vit, OLD)
    statistics = ClassStatistics("variance")
    for task in range(5):
        train(old, OLD, task, statistics, steps=1)
    new, _ = grow(key, tiny_vit, old.eval())
    before = learned(new)
    train(new, NEW, 5, statistics)
    after = learned(new)
    head = "tii.head.weight" if key == "hide_tii" else "head.weight"
    assert not torch.equal(after[head][10:], before[head][10:])  # the new classes' rows learned
    if key in ("hideprompt", "sprompt", "dualprompt"):  # per-task prompts: the old tasks' slots stay as they were
        name = "prompts.prompt" if key == "hideprompt" else "e_prompts.prompt"
        assert torch.equal(after[name][:, :, :5], before[name][:, :, :5])
    if new.uses_statistics:  # class statistics are kept per class id: the new classes simply join
        assert all(c in statistics.means for c in (10, 11, 12))


def test_only_class_and_slot_axes_grow():
    """A tensor that differs along another axis (a changed prompt length) is left for load_state_dict to refuse."""
    module = torch.nn.Module()
    module.prompt = torch.nn.Parameter(torch.zeros(2, 6, 8))
    state = {"prompt": torch.ones(2, 5, 4)}
    assert grown_state(module, state, {(5, 6)})["prompt"].shape == (2, 5, 4)
    assert grown_state(module, {"prompt": torch.ones(2, 5, 8)}, {(5, 6)})["prompt"].shape == (2, 6, 8)
    with pytest.raises(RuntimeError, match="size mismatch"):
        module.load_state_dict(grown_state(module, state, {(5, 6)}))


def test_a_split_may_only_append_tasks():
    check_grows(OLD, NEW, "run")
    check_grows(OLD, OLD, "run")
    with pytest.raises(UserError, match="task 1 had classes \\[0, 1\\], now \\[0, 1, 2\\]"):
        check_grows(OLD, split_classes(10, 4), "run")
    with pytest.raises(UserError, match="task 5 had classes \\[8, 9\\], now \\[\\]"):
        check_grows(OLD, TaskSplit(8, OLD.task_classes[:4]), "run")


def test_recorded_split_of_old_and_new_checkpoints():
    config = preset("digits_hideprompt").to_dict()
    assert recorded_split({"config": config}) == OLD
    assert recorded_split({"config": config, "task_classes": [list(c) for c in NEW.task_classes]}) == NEW
