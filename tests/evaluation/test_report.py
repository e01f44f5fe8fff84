"""evaluate_features and format_results: unlabelled data, k above the bank, partial results."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ssl_syre.config import EvalConfig
from ssl_syre.evaluation.features import Features
from ssl_syre.evaluation.report import evaluate_features, format_results


def clusters(n: int, num_classes: int = 3, dim: int = 8, seed: int = 0) -> Features:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99))
    backbone = means[labels] + 0.1 * torch.randn(n, dim, generator=generator)
    return Features(
        labels=labels,
        by_kind={"raw_pixels": torch.rand(n, 16, generator=generator), "backbone": backbone},
    )


def eval_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(EvalConfig), {"linear_epochs": 2, **overrides})


def test_labelled_data_gets_every_evaluation_and_raw_pixels_only_knn() -> None:
    results = evaluate_features(clusters(60), clusters(30, seed=1), 3, eval_cfg(knn_k=[5, 10]))
    assert [(r["features"], r["k"]) for r in results["knn"]] == [
        ("raw_pixels", 5),
        ("raw_pixels", 10),
        ("backbone", 5),
        ("backbone", 10),
    ]
    assert [r["features"] for r in results["linear_probe"]] == ["backbone"]
    assert [(r["features"], r["split"]) for r in results["collapse"]] == [("backbone", "test")]
    assert all(r["top1"] == 1.0 for r in results["knn"] if r["features"] == "backbone")


def test_knn_records_name_the_size_of_bank_and_queries() -> None:
    results = evaluate_features(clusters(60), clusters(30, seed=1), 3, eval_cfg(), linear=False)
    assert results["knn"]
    for record in results["knn"]:
        assert (record["bank"], record["bank_size"], record["num_queries"]) == ("train", 60, 30)


def test_k_above_the_bank_is_clamped_and_not_repeated() -> None:
    with pytest.warns(UserWarning, match="clamped to 60"):
        results = evaluate_features(
            clusters(60), clusters(30, seed=1), 3, eval_cfg(knn_k=[200, 500, 20]), linear=False
        )
    assert [r["k"] for r in results["knn"] if r["features"] == "backbone"] == [60, 20]


@pytest.mark.parametrize("case", ["no_classes", "no_test_split", "unlabelled_samples"])
def test_unlabelled_data_gets_collapse_metrics_only(case: str) -> None:
    train, test, num_classes = clusters(40), clusters(20, seed=1), 3
    if case == "no_classes":
        num_classes = 0
    elif case == "no_test_split":
        test = None
    else:
        train.labels = torch.full_like(train.labels, -1)
    results = evaluate_features(train, test, num_classes, eval_cfg())
    assert results["knn"] == [] and results["linear_probe"] == []
    split = "train" if test is None else "test"
    assert [(r["features"], r["split"]) for r in results["collapse"]] == [("backbone", split)]


def test_train_and_test_must_hold_the_same_feature_kinds() -> None:
    test = clusters(20, seed=1)
    del test.by_kind["raw_pixels"]
    with pytest.raises(ValueError, match="different feature kinds"):
        evaluate_features(clusters(40), test, 3, eval_cfg())


def test_format_results_prints_each_part_and_skips_missing_ones() -> None:
    knn = {"features": "backbone", "split": "test", "k": 200, "t": 0.07, "top1": 0.5, "top5": 0.9}
    text = format_results({"knn": [knn]})
    assert "kNN" in text and " 0.07" in text and "50.00%" in text and "90.00%" in text
    assert "linear probe" not in text and "collapse" not in text
    assert format_results({}) == ""
    assert format_results({"knn": [], "linear_probe": [], "collapse": []}) == ""


def test_summary_metrics_flatten_every_final_number_for_the_loggers() -> None:
    from ssl_syre.evaluation.report import summary_metrics

    results = {
        "knn": [
            {"features": "backbone", "k": 20, "top1": 0.8, "top5": 0.99},
            {"features": "raw_pixels", "k": 20, "top1": 0.7, "top5": 0.98},
        ],
        "linear_probe": [{"features": "backbone", "top1": 0.75, "top5": 0.97}],
        "collapse": [
            {"features": "backbone", "rankme": 40.0, "low_rankness": 0.1, "dead_units": 0.0}
        ],
    }
    summary = summary_metrics(results, {"dead_units": 3, "layers": 5, "fingerprint": "x"})
    assert summary == {
        "final/knn_top1/backbone_k20": 0.8,
        "final/knn_top1/raw_pixels_k20": 0.7,
        "final/linear_top1/backbone": 0.75,
        "final/rankme/backbone": 40.0,
        "final/low_rankness/backbone": 0.1,
        "final/dead_units/backbone": 0.0,
        "final/symmetry/dead_units": 3.0,
        "final/symmetry/layers": 5.0,
    }
