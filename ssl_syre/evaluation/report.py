"""Run every offline evaluation on cached features and lay the results out as records.

Each number is stored beside its protocol (features, split, k, t), because a bare "kNN 0.81"
cannot be compared with anything. The same records go into metrics.json (end of training)
and into the JSON of eval/knn.py and eval/linear_probe.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ssl_syre.config import EvalConfig
from ssl_syre.evaluation.collapse import (
    collapse_metrics,
    plot_spectra,
    singular_value_spectrum,
)
from ssl_syre.evaluation.features import Features
from ssl_syre.evaluation.knn import clamp_ks, knn_classify
from ssl_syre.evaluation.linear import linear_probe

Records = list[dict[str, Any]]


def has_labels(features: Features | None, num_classes: int) -> bool:
    """True when every sample of `features` carries a class label (unlabelled ones are -1)."""
    if features is None or num_classes <= 0 or len(features.labels) == 0:
        return False
    return bool((torch.as_tensor(features.labels) >= 0).all())


def knn_records(
    train: Features,
    test: Features,
    num_classes: int,
    eval_cfg: EvalConfig,
    kinds: list[str],
    device: str | None = None,
) -> Records:
    """Weighted kNN of each feature kind, one record per k of `eval.knn_k` (test split, train bank).

    Each record names its bank and queries by size (`bank_size`, `num_queries`): a subset of
    the train split scores differently from the whole split.

    A k above the bank size is clamped to it (with a warning) and recorded as the k used;
    requested ks that clamp to the same k give one record, not several identical ones.
    """
    bank = len(train.labels)
    requested = [int(k) for k in eval_cfg.knn_k]
    ks = clamp_ks(requested, bank, warn=False)  # warned once here, for every feature kind
    if max(requested) > bank:
        warnings.warn(
            f"eval.knn_k={requested} exceeds the {bank} train features; k clamped to {bank}",
            stacklevel=2,
        )
    records: Records = []
    for kind in kinds:
        for record in knn_classify(
            train.by_kind[kind],
            train.labels,
            test.by_kind[kind],
            test.labels,
            num_classes=num_classes,
            ks=tuple(ks),
            temperature=eval_cfg.knn_t,
            device=device,
        ):
            records.append(
                {
                    "features": kind,
                    "split": "test",
                    "bank": "train",
                    "bank_size": bank,
                    "num_queries": len(test.labels),
                    **record,
                }
            )
    return records


def linear_probe_records(
    train: Features,
    test: Features,
    num_classes: int,
    eval_cfg: EvalConfig,
    kinds: list[str],
    device: str | None = None,
) -> Records:
    """A linear probe per feature kind, trained on the train split and scored on the test split."""
    return [
        {
            "features": kind,
            "split": "test",
            "train_split": "train",
            **linear_probe(
                train.by_kind[kind],
                train.labels,
                test.by_kind[kind],
                test.labels,
                num_classes=num_classes,
                epochs=eval_cfg.linear_epochs,
                device=device,
            ),
        }
        for kind in kinds
    ]


def evaluate_features(
    train: Features,
    test: Features | None,
    num_classes: int,
    eval_cfg: EvalConfig,
    out_dir: Path | None = None,
    linear: bool | None = None,
) -> dict[str, Records]:
    """kNN (every k in eval.knn_k), linear probe and collapse metrics for each feature kind.

    kNN and the linear probe need labels on both splits; without them (num_classes 0, no
    test split, or unlabelled samples) only the collapse metrics are computed. Raw pixels
    get kNN only: they are the baseline, not a representation to probe or check for collapse.

    Args:
        train: features of the training split (the kNN bank, the probe's training set).
        test: features of the test split, or None (then only collapse metrics, on train).
        num_classes: 0 for unlabelled data (then only collapse metrics).
        eval_cfg: the `eval` config section.
        out_dir: where spectrum.png goes; None skips the plot.
        linear: run the linear probe; None follows eval_cfg.linear_probe.
    """
    linear = eval_cfg.linear_probe if linear is None else linear
    kinds = list(train.by_kind)
    if test is not None and set(test.by_kind) != set(kinds):
        raise ValueError(
            f"train and test hold different feature kinds: {sorted(kinds)} vs {sorted(test.by_kind)}"
        )
    learned = [kind for kind in kinds if kind != "raw_pixels"]
    results: dict[str, Records] = {"knn": [], "linear_probe": [], "collapse": []}
    if test is not None and has_labels(train, num_classes) and has_labels(test, num_classes):
        results["knn"] = knn_records(train, test, num_classes, eval_cfg, kinds)
        if linear:
            results["linear_probe"] = linear_probe_records(
                train, test, num_classes, eval_cfg, learned
            )
    spectra = {}
    split, features = ("test", test) if test is not None else ("train", train)
    for kind in learned:
        embeddings = features.by_kind[kind]
        results["collapse"].append(
            {"features": kind, "split": split, **collapse_metrics(embeddings)}
        )
        spectra[kind] = singular_value_spectrum(embeddings)
    if out_dir is not None and spectra:
        plot_spectra(
            spectra,
            Path(out_dir) / "spectrum.png",
            title="Singular values of the embedding covariance",
        )
    return results


def format_results(results: dict[str, Records]) -> str:
    """A short plain-text table of kNN, linear-probe and collapse numbers (missing parts skipped).

    top5 means top-min(5, classes), as in the records.
    """
    # (section, header, row): the header's and a row's columns line up
    sections = [
        (
            "knn",
            f"{'kNN (cosine, weighted)':<28}{'k':>5}{'t':>7}{'top1':>9}{'top5':>9}",
            lambda r: f"{r['k']:>5}{r['t']:>7g}{_percent(r['top1']):>9}{_percent(r['top5']):>9}",
        ),
        (
            "linear_probe",
            f"{'linear probe':<28}{'epochs':>12}{'top1':>9}{'top5':>9}",
            lambda r: f"{r.get('epochs', ''):>12}{_percent(r['top1']):>9}{_percent(r['top5']):>9}",
        ),
        (
            "collapse",
            f"{'collapse':<28}{'dim':>6}{'RankMe':>9}{'low-rank':>10}{'dead':>9}",
            lambda r: (
                f"{r['dim']:>6}{r['rankme']:>9.1f}"
                f"{_percent(r['low_rankness'], 1):>10}{_percent(r['dead_units'], 1):>9}"
            ),
        ),
    ]
    lines = []
    for key, header, row in sections:
        if results.get(key):
            lines.append(header)
            lines += [f"  {r['features']:<26}{row(r)}" for r in results[key]]
    return "\n".join(lines)


def _percent(fraction: float, digits: int = 2) -> str:
    return f"{100 * fraction:.{digits}f}%"


def summary_metrics(
    results: dict[str, Records], symmetry: dict[str, Any] | None = None
) -> dict[str, float]:
    """The final evaluation as flat numbers for the loggers, so runs compare in W&B, MLflow or
    TensorBoard by their results: `final/knn_top1/<features>_k<k>`, `final/linear_top1/<features>`,
    `final/rankme/<features>`, `final/low_rankness/<features>`, `final/dead_units/<features>`
    and the weight diagnostics' totals as `final/symmetry/<name>` (accuracies in [0, 1])."""
    summary: dict[str, float] = {}
    for r in results.get("knn", []):
        summary[f"final/knn_top1/{r['features']}_k{r['k']}"] = float(r["top1"])
    for r in results.get("linear_probe", []):
        summary[f"final/linear_top1/{r['features']}"] = float(r["top1"])
    for r in results.get("collapse", []):
        for key in ("rankme", "low_rankness", "dead_units"):
            summary[f"final/{key}/{r['features']}"] = float(r[key])
    for key, value in (symmetry or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            summary[f"final/symmetry/{key}"] = float(value)
    return summary
