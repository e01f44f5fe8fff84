"""Linear probe: learns separable data, stays at chance on random labels, is deterministic."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ssl_syre.evaluation import linear_probe


def _blobs(num: int, dim: int, num_classes: int, spread: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(num_classes, dim, generator=generator)
    labels = torch.randint(0, num_classes, (num,), generator=generator)
    return means[labels] + spread * torch.randn(num, dim, generator=generator), labels


def test_separable_blobs_are_learned():
    features, labels = _blobs(3000, 32, 10, spread=1.0)
    result = linear_probe(features[:2000], labels[:2000], features[2000:], labels[2000:], 10)
    assert result["top1"] >= 0.95
    assert result["top5"] >= result["top1"]
    assert result["epochs"] == 30
    assert "AdamW" in result["protocol"] and "30 epochs" in result["protocol"]


def test_random_labels_stay_near_chance():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(3000, 32, generator=generator)
    labels = torch.randint(0, 10, (3000,), generator=generator)
    result = linear_probe(features[:2000], labels[:2000], features[2000:], labels[2000:], 10)
    # chance is 0.10; with 1000 test samples its standard deviation is about 0.01
    assert 0.05 <= result["top1"] <= 0.15


def test_deterministic_given_seed():
    features, labels = _blobs(1500, 16, 5, spread=4.0)
    args = (features[:1000], labels[:1000], features[1000:], labels[1000:], 5)
    first = linear_probe(*args, epochs=5, batch_size=64, seed=3)
    assert linear_probe(*args, epochs=5, batch_size=64, seed=3) == first


def test_digits_pixels_match_logistic_regression_quality():
    """Within 3 points of scikit-learn's LogisticRegression, fitted here on the same split."""
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    reference = LogisticRegression(C=1.0, max_iter=5000).fit(x[:1200], y[:1200])
    expected = reference.score(x[1200:], y[1200:])
    result = linear_probe(x[:1200], y[:1200], x[1200:], y[1200:], 10, epochs=50, batch_size=128)
    assert result["top1"] >= expected - 0.03


def test_bad_inputs_raise():
    features, labels = _blobs(100, 8, 3, spread=1.0)
    with pytest.raises(ValueError, match="test labels"):
        linear_probe(features, labels, features, None, 3)
    with pytest.raises(ValueError, match="negative"):
        linear_probe(features, labels - 1, features, labels, 3)
    with pytest.raises(ValueError, match="dimension"):
        linear_probe(features, labels, features[:, :4], labels, 3)
