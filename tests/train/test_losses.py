"""Shared losses: logit masking, masked cross-entropy, HiDe's contrastive regularisation."""

import math

import torch
import torch.nn.functional as F

from train.losses import contrastive_regularization, mask_logits, masked_cross_entropy

ALLOWED = torch.tensor([False, True, False, True, True])


def _logits(batch: int = 4, classes: int = 5) -> torch.Tensor:
    return torch.randn(batch, classes, generator=torch.Generator().manual_seed(0))


def test_mask_logits_sets_excluded_classes_to_minus_inf_and_keeps_the_rest():
    logits = _logits()
    masked = mask_logits(logits, ALLOWED)
    assert torch.isneginf(masked[:, ~ALLOWED]).all()
    assert torch.equal(masked[:, ALLOWED], logits[:, ALLOWED])
    assert torch.isfinite(logits).all()  # not modified in place


def test_masked_cross_entropy_equals_cross_entropy_over_the_allowed_subset():
    logits, y = _logits(), torch.tensor([1, 3, 4, 1])
    subset = ALLOWED.nonzero().flatten()  # classes 1, 3, 4
    remapped = torch.tensor([0, 1, 2, 0])
    expected = F.cross_entropy(logits[:, subset], remapped)
    torch.testing.assert_close(masked_cross_entropy(logits, y, ALLOWED), expected)
    assert not torch.allclose(masked_cross_entropy(logits, y, None), expected)


def test_masked_cross_entropy_without_mask_is_plain_cross_entropy():
    logits, y = _logits(), torch.tensor([0, 2, 4, 1])
    torch.testing.assert_close(masked_cross_entropy(logits, y, None), F.cross_entropy(logits, y))


def test_masked_cross_entropy_gives_no_gradient_to_excluded_logits():
    logits = _logits().requires_grad_()
    masked_cross_entropy(logits, torch.tensor([1, 3, 4, 1]), ALLOWED).backward()
    assert torch.all(logits.grad[:, ~ALLOWED] == 0)
    assert torch.all(logits.grad[:, ALLOWED].abs().sum(dim=0) > 0)
    assert torch.isfinite(logits.grad).all()


def _reference_contrastive(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Hand-written: Z = [centroids; features], S = Z Z^T / 0.8, mean over rows of -log softmax(S)_ii."""
    z = torch.cat([centroids, features]).double()
    s = z @ z.T / 0.8
    total = 0.0
    for i in range(len(z)):
        total = total - (s[i, i] - torch.logsumexp(s[i], dim=0))
    return total / len(z)


def test_contrastive_regularization_matches_reference_formula_with_centroids():
    g = torch.Generator().manual_seed(1)
    features, centroids = torch.randn(6, 8, generator=g), torch.randn(3, 8, generator=g)
    expected = _reference_contrastive(features, centroids).float()
    actual = contrastive_regularization(features, centroids)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_contrastive_regularization_matches_reference_formula_without_centroids():
    features = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    expected = _reference_contrastive(features, torch.empty(0, 8)).float()
    actual = contrastive_regularization(features, torch.empty(0))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_contrastive_regularization_counts_centroids_as_negatives():
    g = torch.Generator().manual_seed(3)
    features, centroids = torch.randn(4, 8, generator=g), torch.randn(3, 8, generator=g)
    assert not torch.allclose(contrastive_regularization(features, centroids),
                              contrastive_regularization(features, torch.empty(0)))


def test_contrastive_regularization_of_identical_rows_is_log_of_row_count():
    features = torch.ones(4, 3) * 0.1
    torch.testing.assert_close(contrastive_regularization(features, torch.empty(0)),
                               torch.tensor(math.log(4)))


def test_contrastive_regularization_gradients_reach_features():
    g = torch.Generator().manual_seed(4)
    features = torch.randn(4, 8, generator=g, requires_grad=True)
    centroids = torch.randn(2, 8, generator=g, dtype=torch.float64)  # stored statistics, other dtype
    loss = contrastive_regularization(features, centroids)
    assert loss.dtype == torch.float32
    loss.backward()
    assert features.grad is not None
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
