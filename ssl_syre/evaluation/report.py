"""Run every offline evaluation on cached features and lay the results out as records.

Each number is stored beside its protocol (features, split, k, t), because a bare "kNN 0.81"
cannot be compared with anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ssl_syre.evaluation.collapse import (
    collapse_metrics,
    plot_spectra,
    singular_value_spectrum,
)
from ssl_syre.evaluation.features import Features
from ssl_syre.evaluation.knn import knn_classify
from ssl_syre.evaluation.linear import linear_probe


def evaluate_features(
    train: Features,
    test: Features | None,
    num_classes: int,
    eval_cfg: DictConfig,
    out_dir: Path | None = None,
    linear: bool | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """kNN (every k in eval.knn_k), linear probe and collapse metrics for each feature kind.

    Args:
        train: features of the training split (the kNN bank, the probe's training set).
        test: features of the test split, or None (then only collapse metrics, on train).
        num_classes: 0 for unlabelled data (then only collapse metrics).
        eval_cfg: the `eval` config section.
        out_dir: where spectrum.png goes; None skips the plot.
        linear: run the linear probe; None follows eval_cfg.linear_probe.
    """
    linear = eval_cfg.linear_probe if linear is None else linear
    results: dict[str, list[dict[str, Any]]] = {"knn": [], "linear_probe": [], "collapse": []}
    labelled = num_classes > 0 and test is not None
    spectra = {}
    for kind, train_features in train.by_kind.items():
        if labelled:
            for record in knn_classify(
                train_features,
                train.labels,
                test.by_kind[kind],
                test.labels,
                num_classes=num_classes,
                ks=tuple(eval_cfg.knn_k),
                temperature=eval_cfg.knn_t,
            ):
                results["knn"].append(
                    {"features": kind, "split": "test", "bank": "train", **record}
                )
            if linear and kind != "raw_pixels":
                probe = linear_probe(
                    train_features,
                    train.labels,
                    test.by_kind[kind],
                    test.labels,
                    num_classes=num_classes,
                    epochs=eval_cfg.linear_epochs,
                )
                results["linear_probe"].append(
                    {"features": kind, "split": "test", "train_split": "train", **probe}
                )
        if kind == "raw_pixels":
            continue
        split, embeddings = (
            ("test", test.by_kind[kind]) if test is not None else ("train", train_features)
        )
        metrics = collapse_metrics(embeddings)
        results["collapse"].append({"features": kind, "split": split, **metrics})
        spectra[kind] = singular_value_spectrum(embeddings)
    if out_dir is not None and spectra:
        plot_spectra(
            spectra,
            Path(out_dir) / "spectrum.png",
            title="Singular values of the embedding covariance",
        )
    return results


def format_results(results: dict[str, list[dict[str, Any]]]) -> str:
    """A short plain-text table of kNN, linear-probe and collapse numbers."""
    lines = []
    if results.get("knn"):
        lines.append(f"{'kNN (cosine, weighted)':<28}{'k':>5}{'t':>6}{'top1':>8}{'top5':>8}")
        for r in results["knn"]:
            lines.append(
                f"  {r['features']:<26}{r['k']:>5}{r['t']:>6}{100 * r['top1']:>7.2f}%{100 * r['top5']:>7.2f}%"
            )
    if results.get("linear_probe"):
        lines.append(f"{'linear probe':<39}{'top1':>8}{'top5':>8}")
        for r in results["linear_probe"]:
            lines.append(f"  {r['features']:<37}{100 * r['top1']:>7.2f}%{100 * r['top5']:>7.2f}%")
    if results.get("collapse"):
        lines.append(f"{'collapse':<28}{'dim':>6}{'RankMe':>9}{'low-rank':>10}{'dead':>7}")
        for r in results["collapse"]:
            lines.append(
                f"  {r['features']:<26}{r['dim']:>6}{r['rankme']:>9.1f}{100 * r['low_rankness']:>9.1f}%{100 * r['dead_units']:>6.1f}%"
            )
    return "\n".join(lines)
