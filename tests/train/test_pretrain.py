"""Embedded backbone pretraining: cached by config hash, paid once, loadable into the stock timm ViT."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.runs import REPO, child_env

TINY = ["--images", "256", "--epochs", "1"]


def pretrain(cache) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.pretrain", *TINY], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=child_env(HIDECL_CACHE=str(cache)))


def test_pretraining_is_cached_and_loads_into_the_backbone(tmp_path):
    first = pretrain(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "pretraining vit_glyph_patch8_32" in first.stdout
    files = list((tmp_path / "backbones").glob("*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "backbones").glob("*.tmp"))
    mtime = files[0].stat().st_mtime

    second = pretrain(tmp_path)
    assert second.returncode == 0 and "not cached" not in second.stdout  # reused, not retrained
    assert files[0].stat().st_mtime == mtime

    import torch

    from train.backbones.registry import EMBEDDED_BACKBONE, backbone_spec
    from train.backbones.vit import create_vit
    from train.weights import load_weights

    spec = backbone_spec(EMBEDDED_BACKBONE)
    vit, fresh = create_vit(spec), create_vit(spec)
    load_weights(vit, spec, files[0])
    assert not torch.equal(vit.blocks[0].attn.qkv.weight, fresh.blocks[0].attn.qkv.weight)


def test_a_different_config_gets_its_own_cache_entry():
    from train.pretrain import PretrainConfig, weights_path

    assert weights_path(PretrainConfig()) != weights_path(PretrainConfig(epochs=3))
    assert weights_path(PretrainConfig()) == weights_path(PretrainConfig())
