"""Collapse measures: RankMe, low-rankness, dead units, spectra and their plot."""

import math

import numpy as np
import pytest
import torch

from ssl_syre.evaluation import (
    collapse_metrics,
    dead_unit_fraction,
    low_rankness,
    plot_spectra,
    rankme,
    singular_value_spectrum,
)

DIM, RANK = 64, 5


def _gaussian(num: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num, dim, generator=torch.Generator().manual_seed(seed))


def _rank_r(num: int = 5000, orthonormal: bool = False, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    factors = torch.randn(num, RANK, generator=generator)
    basis = torch.randn(RANK, DIM, generator=generator)
    if orthonormal:
        basis = torch.linalg.qr(basis.T).Q.T
    return factors @ basis


def test_rankme_of_isotropic_gaussian_is_close_to_dim():
    # The singular values of a 5000 x 64 Gaussian matrix lie within sqrt(5000)(1 ± sqrt(64/5000))
    # (Marchenko-Pastur), a nearly flat spectrum: RankMe is just below 64.
    assert 0.97 * DIM < rankme(_gaussian(5000, DIM)) <= DIM


def test_rankme_of_rank_r_data():
    # Orthonormal directions with isotropic weights: r nearly equal singular values, so RankMe
    # is r; the 59 zero singular values add 59 * 1e-7 * ln(1e7) ≈ 1e-4 through epsilon.
    assert rankme(_rank_r(orthonormal=True)) == pytest.approx(RANK, abs=0.05)
    # Gaussian directions spread the r singular values apart, which
    # lowers the entropy a little: RankMe measured 4.92-4.96, never above r.
    assert 4.5 < rankme(_rank_r()) < RANK + 0.01


def test_rankme_subsamples_deterministically_and_accepts_numpy():
    embeddings = _gaussian(3000, 16).numpy()
    first = rankme(embeddings, max_samples=500, seed=1)
    assert first == rankme(embeddings, max_samples=500, seed=1)
    assert first != rankme(embeddings, max_samples=500, seed=2)
    assert rankme(np.zeros((10, 4))) == pytest.approx(1.0, abs=1e-4)  # all collapsed


def test_low_rankness_counts_collapsed_directions():
    assert low_rankness(_rank_r()) == pytest.approx((DIM - RANK) / DIM)
    assert low_rankness(_gaussian(2000, DIM)) == 0.0
    assert low_rankness(torch.ones(100, 8)) == 1.0  # constant: nothing left after centring


def test_dead_unit_fraction():
    embeddings = torch.relu(_gaussian(1000, 40))
    embeddings[:, :10] = 0.0  # dead ReLUs
    embeddings[:, 10:14] = 2.5  # constant outputs are dead too
    assert dead_unit_fraction(embeddings) == pytest.approx(14 / 40)
    assert dead_unit_fraction(_gaussian(100, 8)) == 0.0


def test_spectrum_of_collapsed_data_has_a_tiny_tail():
    spectrum = singular_value_spectrum(_rank_r())
    assert spectrum.shape == (DIM,)
    assert bool((spectrum[:-1] >= spectrum[1:]).all())
    # Rescaling rows (L2 normalisation) and centring keep the data in its r-dim subspace.
    assert spectrum[RANK - 1] > 1e-3
    assert spectrum[RANK:].max() < 1e-10 * spectrum[0]
    healthy = singular_value_spectrum(_gaussian(5000, DIM))
    assert healthy[-1] > 0.5 * healthy[0]


def test_collapse_metrics_keys_and_values():
    metrics = collapse_metrics(_gaussian(2000, 32))
    assert set(metrics) == {
        "rankme",
        "rankme_ratio",
        "low_rankness",
        "std_of_l2_normalized",
        "dead_units",
        "dim",
        "num_samples",
    }
    assert metrics["dim"] == 32 and metrics["num_samples"] == 2000
    assert metrics["rankme_ratio"] == pytest.approx(metrics["rankme"] / 32)
    # lightly's measure is about 1/sqrt(d) for isotropic Gaussian outputs
    assert metrics["std_of_l2_normalized"] == pytest.approx(1 / math.sqrt(32), rel=0.05)
    assert collapse_metrics(_gaussian(2000, 32), max_samples=100)["num_samples"] == 100


def test_plot_spectra_writes_a_png(tmp_path):
    path = plot_spectra(
        {
            "collapsed": singular_value_spectrum(_rank_r(1000)),
            "healthy": singular_value_spectrum(_gaussian(1000, DIM)),
        },
        tmp_path / "plots" / "spectrum.png",
        title="test",
    )
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(b"\x89PNG")


def test_plot_spectra_draws_all_curves_above_one_shared_floor(tmp_path, monkeypatch):
    """A spectrum that is zero as a whole sits at the common floor, not 30 decades lower."""
    from matplotlib.axes import Axes

    drawn = {}
    plot = Axes.plot

    def record(self, x, y, *args, label=None, **kwargs):
        drawn[label] = np.asarray(y)
        return plot(self, x, y, *args, label=label, **kwargs)

    monkeypatch.setattr(Axes, "plot", record)
    healthy = singular_value_spectrum(_gaussian(1000, DIM))
    plot_spectra({"healthy": healthy, "constant": torch.full((DIM,), 1e-31)}, tmp_path / "s.png")
    floor = np.log10(np.finfo(np.float64).eps * healthy.max().item())
    np.testing.assert_allclose(drawn["constant"], floor)
    assert drawn["healthy"].min() > floor


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        rankme(torch.ones(10))
    with pytest.raises(ValueError, match="empty"):
        low_rankness(torch.ones(0, 4))


def test_spectrum_of_more_dimensions_than_samples_never_builds_the_k_by_k_covariance() -> None:
    """K > N: the same K values as the covariance's, from the N x N Gram matrix."""
    from ssl_syre.evaluation.collapse import singular_value_spectrum

    torch.manual_seed(0)
    z = torch.randn(20, 300, dtype=torch.float64)
    normalised = torch.nn.functional.normalize(z, dim=1)
    centred = normalised - normalised.mean(dim=0)
    expected = torch.linalg.eigvalsh(centred.T @ centred / 20).clamp_min(0).flip(0)
    spectrum = singular_value_spectrum(z)
    assert spectrum.shape == (300,)
    torch.testing.assert_close(spectrum, expected, atol=1e-12, rtol=1e-9)
