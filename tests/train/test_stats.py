"""Class statistics (multi-centroid, variance, covariance) and pseudo-feature sampling."""

import pytest
import torch
from threadpoolctl import threadpool_limits

from train.stats import ClassStatistics


@pytest.fixture(autouse=True)
def _single_openmp_thread():
    """k-means next to torch's OpenMP runtime is ~100x slower on 2 cores unless limited to one thread."""
    with threadpool_limits(1, user_api="openmp"):
        yield


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blobs(n: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class made of two tight, far-apart blobs in 4-D."""
    g = _generator(1)
    a, b = torch.tensor([10.0, 0.0, 0.0, 0.0]), torch.tensor([-10.0, 5.0, 0.0, 0.0])
    x = torch.cat([a + 0.1 * torch.randn(n, 4, generator=g), b + 0.1 * torch.randn(n, 4, generator=g)])
    return x, a, b


def _correlated(n: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    z = torch.randn(n, 2, generator=_generator(2))
    return torch.tensor([3.0, -2.0]) + z @ torch.linalg.cholesky(cov).T, cov


def test_multi_centroid_finds_the_blob_means():
    x, a, b = _blobs()
    stats = ClassStatistics("multi-centroid", n_centroids=2)
    stats.add_class(0, x, seed=0)
    centroids = stats.centroids([0])
    assert centroids.shape == (2, 4)
    ordered = centroids[centroids[:, 0].argsort(descending=True)]
    torch.testing.assert_close(ordered, torch.stack([a, b]), atol=0.05, rtol=0)
    # per-dimension spread of each cluster is the blob's (0.1), not the whole class's
    assert stats.spreads[0].shape == (2, 4)
    assert torch.all(stats.spreads[0] < 0.2)


def test_singleton_clusters_are_centroids_but_never_sampled():
    """The reference keeps every cluster mean for the regulariser and skips singletons only when sampling."""
    blob = 0.1 * torch.randn(40, 4, generator=_generator(3))
    outliers = torch.tensor([[100.0, 0, 0, 0], [0, 100.0, 0, 0], [0, 0, 100.0, 0]])
    stats = ClassStatistics("multi-centroid", n_centroids=4)  # the blob + one cluster per outlier
    stats.add_class(0, torch.cat([blob, outliers]), seed=0)
    centroids = stats.centroids([0])
    assert centroids.shape == (4, 4) and (torch.cdist(outliers, centroids).min(dim=1).values < 1e-4).all()
    features, _ = stats.sample([0], per_component=100, count=100, generator=_generator())
    assert features.abs().max() < 5  # all drawn around the blob, none around an outlier


def test_multi_centroid_survives_fewer_samples_than_centroids():
    x, _, _ = _blobs(3)  # 6 samples, 10 requested centroids → 6 singleton clusters
    stats = ClassStatistics("multi-centroid", n_centroids=10)
    stats.add_class(0, x, seed=0)
    assert stats.centroids([0]).shape[0] >= 1


def test_centroids_stacks_classes_in_order_and_skips_unknown():
    stats = ClassStatistics("variance")
    stats.add_class(3, torch.randn(50, 4, generator=_generator(0)) + 5, seed=0)
    stats.add_class(1, torch.randn(50, 4, generator=_generator(1)) - 5, seed=0)
    both = stats.centroids([1, 3, 99])
    assert both.shape == (2, 4)
    torch.testing.assert_close(both[0], stats.means[1][0])
    torch.testing.assert_close(both[1], stats.means[3][0])


def test_centroids_of_no_class_is_empty():
    assert ClassStatistics("multi-centroid").centroids([]).numel() == 0


def _two_class_stats(method: str) -> ClassStatistics:
    x, _, _ = _blobs()
    stats = ClassStatistics(method, n_centroids=2)
    stats.add_class(0, x, seed=0)
    stats.add_class(1, x + 100.0, seed=0)
    stats.add_class(2, x - 100.0, seed=0)
    return stats


@pytest.mark.parametrize("method", ["multi-centroid", "variance", "covariance"])
def test_sample_returns_count_rows_with_requested_labels_only(method):
    stats = _two_class_stats(method)
    features, labels = stats.sample([0, 2], per_component=50, count=37, generator=_generator())
    assert features.shape == (37, 4)
    assert labels.shape == (37,)
    assert labels.dtype == torch.long
    assert set(labels.tolist()) <= {0, 2}
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("method", ["variance", "covariance"])
def test_sample_means_per_label_match_stored_means(method):
    stats = _two_class_stats(method)
    features, labels = stats.sample([0, 1, 2], per_component=4000, count=9000, generator=_generator())
    for label in (0, 1, 2):
        rows = features[labels == label]
        assert len(rows) > 2000
        torch.testing.assert_close(rows.mean(0), stats.means[label][0], atol=0.5, rtol=0)


def test_multi_centroid_samples_stay_near_their_labels_centroids():
    stats = _two_class_stats("multi-centroid")
    features, labels = stats.sample([0, 1], per_component=2000, count=6000, generator=_generator())
    for label in (0, 1):
        rows = features[labels == label]
        torch.testing.assert_close(rows.mean(0), stats.means[label].mean(0), atol=0.5, rtol=0)
        # every sample is within a few blob-stds of one of its class's centroids
        nearest = torch.cdist(rows, stats.means[label]).min(dim=1).values
        assert nearest.max() < 1.0


def test_covariance_method_reproduces_the_correlation():
    x, cov = _correlated()
    stats = ClassStatistics("covariance")
    stats.add_class(0, x, seed=0)
    features, _ = stats.sample([0], per_component=20000, count=20000, generator=_generator())
    torch.testing.assert_close(torch.cov(features.T), cov, atol=0.05, rtol=0)
    torch.testing.assert_close(features.mean(0), torch.tensor([3.0, -2.0]), atol=0.05, rtol=0)


def test_variance_method_keeps_variances_but_drops_the_correlation():
    x, cov = _correlated()
    stats = ClassStatistics("variance")
    stats.add_class(0, x, seed=0)
    features, _ = stats.sample([0], per_component=20000, count=20000, generator=_generator())
    sampled = torch.cov(features.T)
    torch.testing.assert_close(sampled.diagonal(), cov.diagonal(), atol=0.05, rtol=0)
    assert abs(sampled[0, 1].item()) < 0.05


def test_sampling_is_deterministic_for_a_generator_seed():
    stats = _two_class_stats("multi-centroid")
    first = stats.sample([0, 1], per_component=10, count=15, generator=_generator(5))
    second = stats.sample([0, 1], per_component=10, count=15, generator=_generator(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("method", ["multi-centroid", "variance", "covariance"])
def test_state_dict_round_trip_gives_identical_samples(method):
    stats = _two_class_stats(method)
    restored = ClassStatistics(method, n_centroids=2)
    restored.load_state_dict({k: v.clone() for k, v in stats.state_dict().items()})
    for label in stats.means:
        assert torch.equal(restored.means[label], stats.means[label])
        assert torch.equal(restored.spreads[label], stats.spreads[label])
    expected = stats.sample([0, 1, 2], per_component=20, count=40, generator=_generator(9))
    actual = restored.sample([0, 1, 2], per_component=20, count=40, generator=_generator(9))
    assert torch.equal(expected[1], actual[1])
    # covariance: the stored Cholesky factor is column-major and state_dict makes it contiguous, so the
    # matmul may round differently in the last bit (reported); the elementwise methods are bit-exact.
    if method == "covariance":
        torch.testing.assert_close(expected[0], actual[0], rtol=1e-6, atol=1e-5)
    else:
        assert torch.equal(expected[0], actual[0])


def test_state_dict_holds_contiguous_tensors():
    state = _two_class_stats("covariance").state_dict()
    assert set(state) == {f"{kind}.{c}" for kind in ("mean", "spread") for c in (0, 1, 2)}
    assert all(v.is_contiguous() for v in state.values())
