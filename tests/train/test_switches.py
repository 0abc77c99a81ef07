"""Each reference-quirk switch changes what it claims and nothing else."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.helpers.methods import SPLIT, build, task_batch, train
from train.metrics import summarize
from train.peft.lora import LoraPool


def test_kv_reshape_official_changes_the_prompted_features_only(tiny_vit):
    method = build("hideprompt", tiny_vit)
    train(method, 0)
    train(method, 1)
    official = build("hideprompt", tiny_vit, kv_reshape_official=True)
    official.load_state_dict(method.state_dict())
    x = torch.cat([task_batch(0, 3)[0], task_batch(1, 3)[0]])
    plain, quirk = method.predict(x, 1), official.predict(x, 1)
    assert torch.equal(plain.task_ids, quirk.task_ids)  # routing (uninstructed features) is untouched
    assert not torch.allclose(plain.logits, quirk.logits)  # the prefixes are arranged differently
    # with one sample the reshape and the permute coincide: the switch touches nothing but the arrangement
    torch.testing.assert_close(official.predict(x[:1], 1).logits, method.predict(x[:1], 1).logits)


def test_batchwise_prompt_routes_the_whole_batch_to_its_majority_task(tiny_vit):
    for key in ("hideprompt", "sprompt"):
        method = build(key, tiny_vit)
        train(method, 0)
        train(method, 1)
        voting = build(key, tiny_vit, batchwise_selection=True)
        voting.load_state_dict(method.state_dict())
        if hasattr(method, "tii"):
            voting.tii.load_state_dict(method.tii.state_dict())
        x = torch.cat([task_batch(0, 5)[0], task_batch(1, 2)[0]])
        per_sample, voted = method.predict(x, 1), voting.predict(x, 1)
        majority = torch.bincount(per_sample.task_ids.flatten()).argmax()
        assert torch.all(voted.task_ids == majority)
        agree = (per_sample.task_ids.reshape(len(x), -1) == majority).all(dim=1)
        torch.testing.assert_close(voted.logits[agree], per_sample.logits[agree])  # nothing else changes


def test_lora_official_a_init_only_widens_a():
    torch.manual_seed(0)
    standard = LoraPool(2, 5, 128, rank=4)
    torch.manual_seed(0)
    official = LoraPool(2, 5, 128, rank=4, official_a_init=True)
    assert standard.a.abs().max() <= 1 / 128**0.5 < official.a.abs().max() <= 1 / 4**0.5
    assert torch.equal(standard.b, official.b) and not standard.b.any()  # B = 0: no initial change either way
    assert standard.scaling == official.scaling


def test_forgetting_convention_changes_final_forgetting_only():
    A = np.array([[80.0, 85.0, 70.0], [0, 90.0, 95.0], [0, 0, 60.0]])
    identity = np.full_like(A, 50.0)
    textbook, reference = summarize(A, identity, "textbook"), summarize(A, identity, "reference")
    assert textbook["final_forgetting"] == (15.0 + -5.0) / 2
    assert reference["final_forgetting"] == (15.0 + 0.0) / 2
    assert {k: v for k, v in textbook.items() if k != "final_forgetting"} == {
        k: v for k, v in reference.items() if k != "final_forgetting"}


def test_scheduler_lag_official_shifts_the_schedule_by_one_epoch():
    from train.config import OptimConfig
    from train.schedule import lr_at_epoch

    step = OptimConfig(sched="step", decay_epochs=2, epochs=6)
    lagged = dataclasses.replace(step, scheduler_lag_official=True)
    assert [lr_at_epoch(step, 1.0, e) for e in range(5)] == [1.0, 1.0, 0.1, 0.1, 0.010000000000000002]
    assert [lr_at_epoch(lagged, 1.0, e) for e in range(5)] == [1.0, 1.0, 1.0, 0.1, 0.1]


@pytest.mark.parametrize("warmup, epochs", [(5, 50), (0, 10), (3, 7)])
@pytest.mark.parametrize("sched", ["cosine", "step"])
def test_schedules_match_timm(sched, warmup, epochs):
    """The reference builds timm's schedulers (cosine: warmup_prefix=False, cycle_limit=1; step: decay_t)."""
    import torch
    from timm.scheduler import CosineLRScheduler, StepLRScheduler

    from train.config import OptimConfig
    from train.schedule import lr_at_epoch

    optim = OptimConfig(lr=0.1, epochs=epochs, sched=sched, warmup_epochs=warmup, warmup_lr=1e-6, min_lr=1e-5,
                        decay_epochs=3, decay_rate=0.5)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    common = dict(warmup_t=warmup, warmup_lr_init=1e-6, t_in_epochs=True, warmup_prefix=False)  # timm 0.6: no shift
    timm_scheduler = (CosineLRScheduler(optimizer, t_initial=epochs, lr_min=1e-5, cycle_limit=1, **common)
                      if sched == "cosine" else StepLRScheduler(optimizer, decay_t=3, decay_rate=0.5, **common))
    expected = [timm_scheduler._get_lr(e)[0] for e in range(epochs)]
    assert [lr_at_epoch(optim, 0.1, e) for e in range(epochs)] == pytest.approx(expected, rel=1e-12)


def test_reference_batches_hold_the_same_images_whatever_the_ranks():
    """Batch-dependent switches: sequential batches of batch_size, whole batches dealt to the ranks."""
    from train.distributed import DistContext
    from train.engine import reference_batches
    from train.presets import preset

    config = dataclasses.replace(preset("digits_hideprompt"),
                                 data=dataclasses.replace(preset("digits_hideprompt").data, batch_size=4))
    indices = list(range(100, 130))
    one = reference_batches(indices, config, DistContext(0, 1, 0, torch.device("cpu")))
    two = [reference_batches(indices, config, DistContext(r, 2, r, torch.device("cpu"))) for r in (0, 1)]
    assert one == [indices[i:i + 4] for i in range(0, 30, 4)]
    assert sorted(two[0] + two[1]) == sorted(one) and two[0] == one[0::2]


def test_batchwise_evaluation_uses_the_references_sequential_batches(tiny_vit):
    """With batchwise_selection on, evaluate() scores exactly the predictions of sequential batch_size batches."""
    from torch.utils.data import TensorDataset

    from train.data.registry import ContinualData
    from train.distributed import DistContext
    from train.engine import evaluate
    from train.presets import preset

    method = build("hideprompt", tiny_vit, batchwise_selection=True)
    for task in (0, 1):
        train(method, task)
    x = torch.randn(30, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3] * 7 + [0, 1])
    dataset = TensorDataset(x, y)
    data = ContinualData(dataset, dataset, dataset, y, y, 10)
    config = preset("digits_hideprompt")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, batch_size=7),
                                 adapter=dataclasses.replace(config.adapter, batchwise_selection=True))
    accuracy, _, _ = evaluate(method, 1, data, SPLIT, config, DistContext(0, 1, 0, torch.device("cpu")))
    expected = []
    for task in (0, 1):
        rows = [i for i in range(30) if int(y[i]) in SPLIT.task_classes[task]]
        predicted = torch.cat([method.predict(x[rows[i:i + 7]], 1).logits.argmax(1) for i in range(0, len(rows), 7)])
        expected.append(100 * (predicted == y[rows]).double().mean().item())
    np.testing.assert_allclose(accuracy, expected)
