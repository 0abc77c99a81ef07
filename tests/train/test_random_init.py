"""`backbone.checkpoint=random`: timm's seeded random initialisation for speed and memory benchmarks, the same in
every process (so export restores it), said loudly and recorded, and never touching the run's own RNG."""

from __future__ import annotations

import torch

from train.config import BackboneConfig
from train.weights import RANDOM_INIT, load_backbone


def test_random_init_is_the_same_in_every_call_loud_and_recorded(capsys):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = load_backbone(BackboneConfig(checkpoint=RANDOM_INIT), None)
    assert torch.equal(torch.rand(1), expected_next)  # the run's seeded RNG stream is untouched
    second = load_backbone(BackboneConfig(checkpoint=RANDOM_INIT), None)
    assert first.random_init and second.random_init
    assert first.weights_sha256 == second.weights_sha256  # export restores the weights the run trained on
    assert "RANDOMLY INITIALISED" in capsys.readouterr().err
    assert not any(p.requires_grad for p in first.vit.parameters())  # frozen like a loaded backbone
