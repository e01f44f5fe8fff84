"""The UMAP picture: seeded subsets, a figure per class, the missing extra named, and (with
umap-learn installed) a layout that keeps separated classes apart."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_syre.errors import UserError
from ssl_syre.evaluation.umap_plot import check_umap_installed, seeded_rows, umap_figure


def test_seeded_rows_are_repeatable_sorted_and_capped() -> None:
    rows = seeded_rows(1000, 100, seed=3)
    assert len(rows) == 100 and len(set(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, seeded_rows(1000, 100, seed=3))
    assert not np.array_equal(rows, seeded_rows(1000, 100, seed=4))
    assert np.array_equal(seeded_rows(50, 100, seed=3), np.arange(50))


def test_figure_has_one_series_per_class(tmp_path: Path) -> None:
    points = np.random.default_rng(0).normal(size=(60, 2))
    labels = np.repeat([0, 1, 2], 20)
    figure = umap_figure(points, labels, "test")
    (axes,) = figure.axes
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["0", "1", "2"]
    assert [len(c.get_offsets()) for c in axes.collections] == [20, 20, 20]
    figure.savefig(tmp_path / "u.png")
    assert Image.open(tmp_path / "u.png").size[0] > 500
    unlabelled = umap_figure(points, None, "no labels")
    assert len(unlabelled.axes[0].collections) == 1 and unlabelled.axes[0].get_legend() is None


def test_missing_umap_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(UserError, match=r'eval.umap needs umap-learn.*pip install -e "\.\[umap\]"'):
        check_umap_installed()


@pytest.mark.slow  # numba compiles umap-learn's kernels on first use
def test_umap_keeps_separated_classes_apart(tmp_path: Path) -> None:
    pytest.importorskip("umap")
    from ssl_syre.evaluation.umap_plot import umap_points, write_umap

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(60)
    directions = torch.eye(16)[:3] * 5
    features = directions[labels] + 0.3 * torch.randn(180, 16, generator=generator)
    points = umap_points(features, seed=0)
    assert points.shape == (180, 2)
    centers = np.stack([points[labels.numpy() == c].mean(0) for c in range(3)])
    spread = max(
        np.linalg.norm(points[labels.numpy() == c] - centers[c], axis=1).mean() for c in range(3)
    )
    gaps = [np.linalg.norm(centers[a] - centers[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread
    assert np.array_equal(points, umap_points(features, seed=0))  # seeded: the same picture
    path = write_umap(features, labels, tmp_path / "umap.png", seed=0, max_points=100)
    assert Image.open(path).format == "PNG"
