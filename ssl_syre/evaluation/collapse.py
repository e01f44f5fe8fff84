"""Measures of representation collapse: RankMe, singular value spectra, low-rankness, dead units.

- [0] RankMe, Garrido et al., 2023, https://arxiv.org/abs/2210.02885
- [1] Dimensional collapse, Jing et al., 2022, https://arxiv.org/abs/2110.09348
- [2] SimSiam, Chen & He, 2021, https://arxiv.org/abs/2011.10566 (std of l2-normalised outputs)
- [3] SyRe, Ziyin et al., 2025, https://arxiv.org/abs/2408.15495 (low-rankness)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightly.utils.debug import std_of_l2_normalized

ArrayLike = torch.Tensor | np.ndarray


def rankme(
    embeddings: ArrayLike, epsilon: float = 1e-7, max_samples: int = 25600, seed: int = 0
) -> float:
    """RankMe: the effective rank of an embedding matrix, a label-free quality measure [0].

    With σ the singular values of the N x K embedding matrix (not centred, as in the paper),
    p_k = σ_k / ‖σ‖₁ + ε and RankMe = exp(-Σ_k p_k log p_k): the exponential of the entropy
    of the normalised spectrum. It ranges from about 1 (everything on one direction) to
    min(N, K) (all singular values equal); Garrido et al. find that a higher RankMe goes with
    better downstream accuracy for the same method.

    - [0] RankMe, Garrido et al., 2023, https://arxiv.org/abs/2210.02885

    Args:
        embeddings: Embeddings, shape (N, K), torch or numpy.
        epsilon: The ε added to each p_k (the paper's 1e-7).
        max_samples: At most this many rows are used (the paper's 25,600), drawn without
            replacement with ``seed``; larger N changes RankMe little and costs N·K².
        seed: Seed of the row subsample.

    Returns:
        RankMe as a float.

    Examples:
        >>> rankme(torch.randn(5000, 64))  # isotropic: close to 64
        63.6...
    """
    matrix = _subsample(_as_matrix(embeddings), max_samples, seed)
    singular_values = _singular_values(matrix)
    p = singular_values / singular_values.sum().clamp_min(torch.finfo(torch.float64).tiny)
    p = p + epsilon
    return math.exp(-(p * p.log()).sum().item())


def singular_value_spectrum(embeddings: ArrayLike) -> torch.Tensor:
    """Singular values of the covariance of L2-normalised embeddings, as plotted by Jing et al. [1].

    The embeddings are L2-normalised, centred, and their K x K covariance matrix
    C = (1/N) Σ_i (z_i - z̄)(z_i - z̄)ᵀ decomposed; dimensional collapse shows as singular
    values that drop to (numerically) zero at the end of the spectrum.

    - [1] Dimensional collapse, Jing et al., 2022, https://arxiv.org/abs/2110.09348

    Args:
        embeddings: Embeddings, shape (N, K).

    Returns:
        The K singular values, float64, sorted in decreasing order.
    """
    normalised = F.normalize(_as_matrix(embeddings), dim=1)
    centred = normalised - normalised.mean(dim=0)
    n, k = centred.shape
    if k <= n:
        covariance = centred.T @ centred / n
        # C is symmetric positive semi-definite: its singular values are its eigenvalues.
        return torch.linalg.eigvalsh(covariance).clamp_min(0).flip(0)
    # K > N (a 65,536-prototype head): C = AᵀA/N has the nonzero eigenvalues of the N x N
    # AAᵀ/N and K − N zeros, so the K x K matrix is never built.
    values = torch.linalg.eigvalsh(centred @ centred.T / n).clamp_min(0).flip(0)
    return torch.cat([values, values.new_zeros(k - n)])


def low_rankness(embeddings: ArrayLike, threshold: float = 1e-3) -> float:
    """Share of collapsed directions: singular values below ``threshold`` times the largest.

    The singular values σ_1 ≥ ... ≥ σ_m, m = min(N, K), are those of the centred N x K
    embedding matrix; the result is #{k : σ_k < threshold · σ_1} / m. This is the
    "low-rankness" that the SyRe paper reports for SimCLR's projector output [3] (70% without
    symmetry removal, 0% with it). Use N > K samples: with N ≤ K centring alone removes one
    direction.

    - [3] SyRe, Ziyin et al., 2025, https://arxiv.org/abs/2408.15495

    Args:
        embeddings: Embeddings, shape (N, K).
        threshold: Relative threshold on the singular values.

    Returns:
        A fraction in [0, 1]; 1.0 for constant embeddings.
    """
    matrix = _as_matrix(embeddings)
    singular_values = _singular_values(matrix - matrix.mean(dim=0))
    largest = singular_values[0].item() if len(singular_values) else 0.0
    if largest == 0.0:
        return 1.0
    return (singular_values < threshold * largest).double().mean().item()


def dead_unit_fraction(embeddings: ArrayLike, tol: float = 1e-8) -> float:
    """Share of embedding dimensions that do not vary over samples (std ≤ ``tol``).

    A dead ReLU unit, or any output that has become constant, carries no information; this
    is the symmetric state "dead neuron" that SyRe removes [3].

    Args:
        embeddings: Embeddings, shape (N, K).
        tol: Largest standard deviation counted as dead.

    Returns:
        A fraction in [0, 1].
    """
    std = _as_matrix(embeddings).std(dim=0, correction=0)
    return (std <= tol).double().mean().item()


def collapse_metrics(
    embeddings: ArrayLike, max_samples: int = 25600, seed: int = 0
) -> dict[str, Any]:
    """All collapse measures of one embedding matrix, for logging.

    Args:
        embeddings: Embeddings, shape (N, K).
        max_samples: Rows used for every measure, subsampled with ``seed`` (RankMe's 25,600).
        seed: Seed of the row subsample.

    Returns:
        ``{"rankme", "rankme_ratio" (rankme / dim), "low_rankness", "std_of_l2_normalized"
        (lightly's, ≈ 1/√dim when healthy, 0 when collapsed [2]), "dead_units" (fraction),
        "dim", "num_samples"}``.
    """
    matrix = _subsample(_as_matrix(embeddings), max_samples, seed)
    rank = rankme(matrix, max_samples=len(matrix))
    return {
        "rankme": rank,
        "rankme_ratio": rank / matrix.shape[1],
        "low_rankness": low_rankness(matrix),
        "std_of_l2_normalized": std_of_l2_normalized(matrix).item(),
        "dead_units": dead_unit_fraction(matrix),
        "dim": matrix.shape[1],
        "num_samples": len(matrix),
    }


def plot_spectra(spectra: dict[str, ArrayLike], path: str | Path, title: str | None = None) -> Path:
    """Plot log10 singular values against their index for one or more spectra, as a PNG.

    Matches the figures of Jing et al. [1]; pass e.g. ``{"backbone": s1, "projector": s2}``
    or ``{"SyRe": s_on, "no SyRe": s_off}`` from :func:`singular_value_spectrum`. Values
    below float64 precision (2.2e-16 times the largest value of all spectra: numerically zero)
    are drawn at that shared floor, so a collapsed tail, or a spectrum that is zero as a
    whole (constant embeddings), shows as a flat line at the bottom instead of stretching the
    axis. Uses matplotlib's Agg canvas directly and leaves pyplot's global state alone.

    Args:
        spectra: Legend label to singular values (1-D, any order; sorted here).
        path: Where to write the PNG; parent folders are created.
        title: Figure title.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    sorted_spectra = {
        label: torch.as_tensor(values).detach().cpu().double().reshape(-1).sort(descending=True)[0]
        for label, values in spectra.items()
    }
    largest = max((v[0].item() for v in sorted_spectra.values() if len(v)), default=0.0)
    floor = torch.finfo(torch.float64).eps * max(largest, 1e-300)
    for label, values in sorted_spectra.items():
        values = values.clamp_min(floor)
        axes.plot(np.arange(1, len(values) + 1), values.log10().numpy(), label=label)
    axes.set_xlabel("singular value rank index")
    axes.set_ylabel("log10 singular value")
    if title:
        axes.set_title(title)
    if spectra:
        axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _as_matrix(embeddings: ArrayLike) -> torch.Tensor:
    # float64: small singular values matter here, and the Gram matrix squares them.
    matrix = torch.as_tensor(embeddings).detach().to("cpu", torch.float64)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, K), got {tuple(matrix.shape)}")
    if len(matrix) == 0:
        raise ValueError("embeddings are empty")
    return matrix


def _subsample(matrix: torch.Tensor, max_samples: int, seed: int) -> torch.Tensor:
    if len(matrix) <= max_samples:
        return matrix
    rows = torch.randperm(len(matrix), generator=torch.Generator().manual_seed(seed))
    return matrix[rows[:max_samples]]


def _singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """The min(N, K) singular values, decreasing, via the smaller Gram matrix.

    N·min(N, K)² work in float64 is faster on CPU than an SVD of the N x K matrix and exact
    enough: in float64 the Gram matrix resolves σ down to about 1e-8 of the largest.
    """
    gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)
