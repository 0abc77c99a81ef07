"""Prefix-tuning prompts injected into a stock timm ViT (tiny, random, eval mode)."""

import pytest
import torch

from tests.helpers.vit import tiny_vit
from train.peft.prefix import PrefixPromptPool, arrange_prefixes, prefix_attention, prompted_features

HEADS, HEAD_DIM, DEPTH = 4, 16, 3  # the tiny ViT's 64-d width in 4 heads of 16


@pytest.fixture(scope="module")
def vit():
    return tiny_vit(0, DEPTH)


def _images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _pool(num_layers: int = 2, pool_size: int = 3, length: int = 4) -> PrefixPromptPool:
    torch.manual_seed(1)
    return PrefixPromptPool(num_layers, pool_size, length, HEADS, HEAD_DIM)


def _manual_prefix_attention(attn, x, prefix):
    """softmax(q [pk; k]^T * scale) [pv; v], heads merged, then proj."""
    batch, tokens, dim = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    k = torch.cat([prefix[0], k], dim=2)
    v = torch.cat([prefix[1], v], dim=2)
    weights = (q @ k.transpose(-2, -1) * attn.scale).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
    return attn.proj(out)


@torch.no_grad()
def test_prefix_attention_equals_attention_over_prepended_keys_and_values(vit):
    attn = vit.blocks[1].attn
    x = torch.randn(2, 17, HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(2))
    prefix = torch.randn(2, 2, HEADS, 3, HEAD_DIM, generator=torch.Generator().manual_seed(3))
    expected = _manual_prefix_attention(attn, x, prefix)
    actual = prefix_attention(attn, x, prefix)
    assert actual.shape == x.shape
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(actual, attn(x), atol=1e-3)  # the prefix matters


@torch.no_grad()
def test_prefix_attention_with_empty_prefix_is_the_blocks_own_attention(vit):
    attn = vit.blocks[0].attn
    x = torch.randn(3, 17, HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(4))
    empty = torch.empty(2, 3, HEADS, 0, HEAD_DIM)
    torch.testing.assert_close(prefix_attention(attn, x, empty), attn(x), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_batched_samples_with_different_slots_match_each_sample_alone(vit):
    pool, layers = _pool(), (0, 2)
    slots = torch.tensor([2, 0, 1, 2])
    x = _images(len(slots))
    batched = prompted_features(vit, x, arrange_prefixes(pool.select(slots)), layers)
    assert batched.shape == (4, HEADS * HEAD_DIM)
    for b, slot in enumerate(slots.tolist()):
        prefixes = arrange_prefixes(pool.select(torch.tensor([slot])))
        alone = prompted_features(vit, x[b : b + 1], prefixes, layers)
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_the_selected_slot_changes_the_features(vit):
    pool, x = _pool(), _images(1)
    a = prompted_features(vit, x, arrange_prefixes(pool.select(torch.tensor([0]))), (0, 1))
    b = prompted_features(vit, x, arrange_prefixes(pool.select(torch.tensor([1]))), (0, 1))
    assert not torch.allclose(a, b, atol=1e-4)


def test_select_indexes_slots_per_sample():
    pool = _pool(num_layers=2, pool_size=3, length=4)
    selected = pool.select(torch.tensor([2, 0, 2]))
    assert selected.shape == (2, 2, 3, 4, HEADS, HEAD_DIM)
    assert torch.equal(selected[:, :, 0], pool.prompt[:, :, 2])
    assert torch.equal(selected[:, :, 1], pool.prompt[:, :, 0])
    assert torch.equal(selected[:, :, 2], pool.prompt[:, :, 2])


def _encoded_selection(layers=2, batch=3, length=2, heads=3, head_dim=2) -> torch.Tensor:
    """`selected[l, kv, b, p, h, d]` = l·10⁵ + (kv·B + b)·10⁴ + p·100 + h·10 + d."""
    sizes = (layers, 2, batch, length, heads, head_dim)
    l_, kv, b, p, h, d = torch.meshgrid(*(torch.arange(n) for n in sizes), indexing="ij")
    return (l_ * 100000 + (kv * batch + b) * 10000 + p * 100 + h * 10 + d).float()


def test_default_arrangement_is_a_plain_per_sample_key_value_split():
    selected = _encoded_selection()
    arranged = arrange_prefixes(selected)
    assert arranged.shape == (2, 2, 3, 3, 2, 2)  # (L, 2, B, H, length, hd)
    for kv in range(2):
        for b in range(3):
            assert torch.equal(arranged[:, kv, b], selected[:, kv, b].transpose(1, 2))


def test_official_kv_reshape_hands_sample_b_key_chunk_2b_and_value_chunk_2b_plus_1():
    layers, batch = 2, 3
    selected = _encoded_selection(layers=layers, batch=batch)
    arranged = arrange_prefixes(selected, official_kv_reshape=True)
    assert arranged.shape == (layers, 2, batch, 3, 2, 2)
    flat = selected.reshape(layers, 2 * batch, *selected.shape[3:])  # the (key|value, sample) axis
    for b in range(batch):
        assert torch.equal(arranged[:, 0, b], flat[:, 2 * b].transpose(1, 2))
        assert torch.equal(arranged[:, 1, b], flat[:, 2 * b + 1].transpose(1, 2))
    # explicitly, B = 3: sample 1 gets chunk 2 (the key of sample 2) and chunk 3 (the value of sample 0)
    chunk = (arranged[0, :, 1, 0, 0, 0] // 10000).long().tolist()
    assert chunk == [2, 3]
    # and the arrangement really differs from the default for B > 1
    assert not torch.equal(arranged, arrange_prefixes(selected))


def test_official_kv_reshape_is_harmless_for_a_single_sample():
    selected = _encoded_selection(batch=1)
    assert torch.equal(arrange_prefixes(selected, True), arrange_prefixes(selected))


def test_ensemble_mixes_current_slot_with_mean_of_older_slots():
    pool, alpha = _pool(pool_size=4), 0.3
    p = pool.prompt.detach()
    expected = (1 - alpha) * p[:, :, 2] + alpha * (p[:, :, 0] + p[:, :, 1]) / 2
    torch.testing.assert_close(pool.ensemble(2, alpha), expected)


def test_ensemble_gives_gradient_only_to_the_current_slot():
    pool, alpha = _pool(pool_size=4), 0.3
    pool.ensemble(2, alpha).sum().backward()
    grad = pool.prompt.grad
    assert torch.all(grad[:, :, :2] == 0)
    assert torch.all(grad[:, :, 3] == 0)
    torch.testing.assert_close(grad[:, :, 2], torch.full_like(grad[:, :, 2], 1 - alpha))


def test_ensemble_of_first_slot_or_zero_momentum_is_the_slot_itself():
    pool = _pool()
    assert torch.equal(pool.ensemble(0, 0.5), pool.prompt[:, :, 0])
    assert torch.equal(pool.ensemble(2, 0.0), pool.prompt[:, :, 2])


def test_apply_ensemble_bakes_the_ensemble_into_only_that_slot():
    pool, alpha = _pool(pool_size=4), 0.2
    before = pool.prompt.detach().clone()
    expected = pool.ensemble(3, alpha).detach().clone()
    pool.apply_ensemble(3, alpha)
    torch.testing.assert_close(pool.prompt[:, :, 3].detach(), expected)
    assert torch.equal(pool.prompt[:, :, :3].detach(), before[:, :, :3])
    assert pool.prompt.grad_fn is None and pool.prompt.requires_grad


def test_copy_slot_copies_values_without_aliasing():
    pool = _pool()
    before = pool.prompt.detach().clone()
    pool.copy_slot(0, 2)
    assert torch.equal(pool.prompt[:, :, 2], before[:, :, 0])
    assert torch.equal(pool.prompt[:, :, :2], before[:, :, :2])
    with torch.no_grad():
        pool.prompt[:, :, 0] += 1.0
    assert torch.equal(pool.prompt[:, :, 2], before[:, :, 0])


@torch.no_grad()
def test_prompted_features_without_layers_is_the_models_own_pre_logits(vit):
    x = _images(2)
    expected = vit.forward_head(vit.forward_features(x), pre_logits=True)
    torch.testing.assert_close(prompted_features(vit, x, torch.empty(0), ()), expected)


def test_prompted_features_gradients_reach_only_the_used_slots_and_layers(vit):
    pool = _pool(num_layers=3, pool_size=3)
    features = prompted_features(vit, _images(2), arrange_prefixes(pool.select(torch.tensor([1, 1]))), (0, 1))
    # not features.sum(): the final LayerNorm makes each row sum to a constant
    (features * torch.randn(features.shape, generator=torch.Generator().manual_seed(5))).sum().backward()
    grad = pool.prompt.grad
    assert grad[:2, :, 1].abs().sum() > 0  # the used slot, in the injected layers (keys and values)
    assert grad[:2, 0, 1].abs().sum() > 0 and grad[:2, 1, 1].abs().sum() > 0
    assert torch.all(grad[:, :, [0, 2]] == 0)  # other slots
    assert torch.all(grad[2] == 0)  # prefixes beyond `layers` are not injected
