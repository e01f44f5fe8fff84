"""Weighted kNN: agreement with lightly's knn_predict, accuracy bounds, k clamping, label checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict

from ssl_syre.evaluation import knn_classify, knn_predictions, knn_search


def _clustered(num_train: int, num_test: int, dim: int, num_classes: int, spread: float, seed=0):
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=generator)
    train_y = torch.randint(0, num_classes, (num_train,), generator=generator)
    test_y = torch.randint(0, num_classes, (num_test,), generator=generator)
    train_x = means[train_y] + spread * torch.randn(num_train, dim, generator=generator)
    test_x = means[test_y] + spread * torch.randn(num_test, dim, generator=generator)
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize("k", [20, 200])
def test_top1_predictions_match_lightly_knn_predict(k):
    # Continuous random features: exact ties in similarity or votes have probability 0.
    train_x, train_y, test_x, _ = _clustered(2000, 300, 64, 10, spread=3.0)
    ours = knn_predictions(train_x, train_y, test_x, 10, ks=(k,), batch_size=128, device="cpu")
    theirs = knn_predict(
        F.normalize(test_x, dim=1), F.normalize(train_x, dim=1).T, train_y, 10, knn_k=k, knn_t=0.1
    )
    assert torch.equal(ours[k][:, 0], theirs[:, 0])


@pytest.mark.parametrize("t", [0.01, 0.001])
def test_a_small_temperature_does_not_overflow_the_votes(t):
    """exp(s/t) overflows float32 for s/t > 88: with t=0.01 every close neighbour voted inf
    and the class ranking was arbitrary (about chance). The reference sums the votes in
    float64 logs, where nothing overflows."""
    train_x, train_y, test_x, test_y = _clustered(500, 200, 8, 5, spread=0.5)
    k = 50
    ours = knn_predictions(train_x, train_y, test_x, 5, ks=(k,), temperature=t, device="cpu")
    train_n = F.normalize(train_x.double(), dim=1)
    sims, indices = (F.normalize(test_x.double(), dim=1) @ train_n.T).topk(k, dim=1)
    one_hot = F.one_hot(train_y[indices], 5).double()  # (M, k, C)
    log_votes = torch.logsumexp(sims.unsqueeze(2) / t + one_hot.log(), dim=1)  # (M, C)
    assert torch.equal(ours[k][:, 0], log_votes.argmax(dim=1))
    assert (ours[k][:, 0] == test_y).float().mean() > 0.9  # not chance


def test_one_search_serves_every_k_like_separate_searches():
    train_x, train_y, test_x, _ = _clustered(500, 100, 16, 5, spread=3.0)
    together = knn_predictions(train_x, train_y, test_x, 5, ks=(3, 50), device="cpu")
    for k in (3, 50):
        alone = knn_predictions(train_x, train_y, test_x, 5, ks=(k,), device="cpu")
        assert torch.equal(together[k][:, 0], alone[k][:, 0])


def test_separable_problem_is_perfect_and_records_the_protocol():
    train_x, train_y, test_x, test_y = _clustered(400, 100, 32, 4, spread=0.01)
    records = knn_classify(
        train_x.numpy(), train_y.numpy(), test_x.numpy(), test_y.numpy(), 4, ks=(200, 20)
    )
    assert [r["k"] for r in records] == [200, 20]
    assert all(r["t"] == 0.1 and r["top1"] == 1.0 and r["top5"] == 1.0 for r in records)


def test_top5_at_least_top1_and_fractions():
    train_x, train_y, test_x, test_y = _clustered(1000, 200, 16, 20, spread=4.0)
    (record,) = knn_classify(train_x, train_y, test_x, test_y, 20, ks=(50,), batch_size=64)
    assert 0.0 < record["top1"] <= record["top5"] <= 1.0
    assert record["top1"] < 1.0  # the problem is noisy enough to make mistakes


def test_k_above_train_size_is_clamped_with_a_warning():
    train_x, train_y, test_x, test_y = _clustered(30, 10, 8, 3, spread=0.01)
    with pytest.warns(UserWarning, match="clamping to 30"):
        records = knn_classify(train_x, train_y, test_x, test_y, 3, ks=(200, 5))
    assert [r["k"] for r in records] == [30, 5]


def test_missing_or_negative_labels_raise():
    train_x, train_y, test_x, test_y = _clustered(50, 10, 8, 3, spread=1.0)
    with pytest.raises(ValueError, match="test labels"):
        knn_classify(train_x, train_y, test_x, None, 3)
    with pytest.raises(ValueError, match="negative"):
        knn_classify(train_x, train_y, test_x, torch.full((10,), -1), 3)
    with pytest.raises(ValueError, match="num_classes"):
        knn_classify(train_x, train_y, test_x, torch.full((10,), 3), 3)
    with pytest.raises(ValueError, match="entries"):
        knn_classify(train_x, train_y[:-1], test_x, test_y, 3)
    with pytest.raises(ValueError, match="empty"):
        knn_classify(train_x, train_y, test_x[:0], test_y[:0], 3)


def test_knn_search_returns_sorted_cosine_similarities():
    train_x, _, test_x, _ = _clustered(300, 40, 16, 3, spread=1.0)
    sims, indices = knn_search(train_x, test_x, k=7, batch_size=16, device="cpu")
    assert sims.shape == indices.shape == (40, 7)
    expected = F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T
    assert torch.equal(indices[:, 0], expected.argmax(dim=1))
    assert torch.allclose(sims, expected.gather(1, indices), atol=1e-5)
    assert bool((sims[:, :-1] >= sims[:, 1:]).all())
    with pytest.raises(ValueError, match="k must be"):
        knn_search(train_x, test_x, k=301)


def test_flattened_pixels_work_as_features():
    images = np.random.default_rng(0).random((60, 1, 8, 8), dtype=np.float32)
    labels = np.arange(60) % 3
    records = knn_classify(
        images.reshape(60, -1), labels, images.reshape(60, -1), labels, 3, ks=(1,)
    )
    assert records[0]["top1"] == 1.0  # every test image is its own nearest neighbour


def test_repeated_or_clamped_ks_give_one_record_each() -> None:
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(50, 8, generator=generator)
    labels = torch.arange(50) % 5
    with pytest.warns(UserWarning):
        records = knn_classify(train, labels, train[:10], labels[:10], 5, ks=(5000, 9000, 20, 20))
    assert [r["k"] for r in records] == [50, 20]
