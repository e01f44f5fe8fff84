"""A UMAP picture of an embedding, colored by class (umap-learn, optional extra `.[umap]`).

solo-learn draws one of the backbone features every epoch; here it is drawn from the test
split's backbone features at the end of training (`umap.png`, config key `eval.umap`) and,
with `eval.umap_every_n_epochs`, from the online evaluation's test subset to the loggers.

- [0] UMAP, 2018, https://arxiv.org/abs/1802.03426
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ssl_syre.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def check_umap_installed() -> None:
    """Raises UserError when umap-learn is missing, naming the extra that brings it."""
    try:
        import umap  # noqa: F401
    except ImportError:
        raise UserError(
            'eval.umap needs umap-learn, which is not installed; pip install -e ".[umap]" '
            "(or pip install umap-learn), or set eval.umap=false"
        ) from None


def seeded_rows(count: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted positions of at most `max_points` of `count` rows, drawn by `seed` alone."""
    if count <= max_points:
        return np.arange(count)
    generator = np.random.default_rng(seed)
    return np.sort(generator.choice(count, size=max_points, replace=False))


def umap_points(features: Tensor, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP coordinates of `features` (N x D) under the cosine metric, seeded.

    Cosine, as the kNN evaluation measures similarity. A fixed `random_state` makes the
    layout repeatable (umap-learn then runs single-threaded).
    """
    check_umap_installed()
    import umap

    data = torch.as_tensor(features).detach().to("cpu", torch.float32).numpy()
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, len(data) - 1),
        metric="cosine",
        random_state=seed,
        n_jobs=1,  # what a random_state implies; said here so that umap-learn does not warn
    )
    return np.asarray(reducer.fit_transform(data))


def umap_figure(points: np.ndarray, labels: np.ndarray | None, title: str) -> Figure:
    """A scatter plot of 2-D points, one color per class (tab10/tab20), with a legend.

    Uses matplotlib's Agg canvas directly and leaves pyplot's global state alone.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    size = float(np.clip(6000 / max(len(points), 1), 1.5, 8))  # fewer points, larger dots
    if labels is None or len(np.unique(labels)) <= 1:
        axes.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, color="tab:blue")
    else:
        classes = np.unique(labels)
        cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for index, label in enumerate(classes):
            rows = labels == label
            axes.scatter(
                points[rows, 0],
                points[rows, 1],
                s=size,
                alpha=0.6,
                color=cmap(index % cmap.N),
                label=str(label),
            )
        axes.legend(
            title="class",
            markerscale=max(1.0, 24 / size) ** 0.5,
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    return figure


def umap_plot(
    features: Tensor, labels: Tensor | None, seed: int, max_points: int, title: str
) -> Figure:
    """The UMAP figure of a seeded subset of at most `max_points` rows of `features`."""
    rows = seeded_rows(len(features), max_points, seed)
    points = umap_points(torch.as_tensor(features)[rows], seed)
    label_array = None if labels is None else torch.as_tensor(labels).cpu().numpy()[rows]
    return umap_figure(points, label_array, f"{title} (UMAP, {len(rows)} images)")


def write_umap(
    features: Tensor,
    labels: Tensor | None,
    path: str | Path,
    seed: int,
    max_points: int,
    title: str = "backbone features, test split",
) -> Path:
    """Draw `umap_plot` and write it as a PNG; return the path."""
    figure = umap_plot(features, labels, seed, max_points, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
