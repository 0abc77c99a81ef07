"""Classifier alignment (TAP) settings as the reference applies them: its weight decay, and which stage the
`--not_train_ca` switch turns off."""

from __future__ import annotations

import dataclasses

import torch

from tests.helpers.methods import SPLIT, build, train
from train.distributed import DistContext
from train.engine import align_classifier
from train.main import stage1_config
from train.presets import preset
from train.stats import ClassStatistics


def aligned_head(vit, weight_decay: float) -> torch.Tensor:
    method = build("hideprompt", vit)
    train(method, 0)
    train(method, 1)
    statistics = ClassStatistics("variance")
    for label in (0, 1, 2, 3):
        features = torch.randn(12, vit.num_features, generator=torch.Generator().manual_seed(label))
        statistics.add_class(label, features, seed=label)
    config = preset("digits_hideprompt")
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, weight_decay=weight_decay),
                                 alignment=dataclasses.replace(config.alignment, crct_epochs=3))
    ctx = DistContext(0, 1, 0, torch.device("cpu"))
    align_classifier(method, 1, SPLIT, statistics, config, ctx)
    return torch.cat([p.detach().flatten() for p in method.alignment_parameters()])


def test_alignment_uses_the_configured_weight_decay(tiny_vit):
    plain, decayed = aligned_head(tiny_vit, 0.0), aligned_head(tiny_vit, 0.5)
    assert not torch.equal(plain, decayed)  # the switch reaches the optimiser (it was hard-coded 0)
    assert torch.equal(plain, aligned_head(tiny_vit, 0.0))  # and nothing else differs between the two runs


def test_not_train_ca_turns_off_stage_2_alignment_only():
    config = preset("digits_hideprompt")
    config = dataclasses.replace(config, alignment=dataclasses.replace(config.alignment, not_train_ca=True))
    assert config.alignment.not_train_ca and not stage1_config(config).alignment.not_train_ca
