"""Weight diagnostics: planted dead, duplicated and low-rank units are reported exactly; a fresh
timm model reports none; the anchor distance, the table and the picture."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from ssl_syre.evaluation.symmetry import diagnose_model, summary_of
from ssl_syre.evaluation.symmetry_report import format_report, write_report
from ssl_syre.syre import SyRe


def planted_model() -> nn.Sequential:
    """conv, ReLU, conv (plants), ReLU, pool, linear, BN, ReLU, linear (rank 8)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 64),
        nn.BatchNorm1d(64),  # pooled features vary little: centered here, as in a projector
        nn.ReLU(),
        nn.Linear(64, 64),
    )
    conv, last = model[2], model[9]
    with torch.no_grad():
        for copy in (3, 5):  # copied filters (weights and bias): one group of three units
            conv.weight[copy] = conv.weight[0]
            conv.bias[copy] = conv.bias[0]
        conv.weight[7] = 2.0 * conv.weight[1]  # a positive multiple is the same ReLU unit
        conv.bias[7] = 2.0 * conv.bias[1]
        conv.weight[10:12] = 0.0  # zeroed filters: dead by their weights
        conv.bias[10:12] = 0.0  # ... and their output 0 is never positive
        conv.bias[12] = -1e6  # live weights, but never positive after the ReLU
        a, b = torch.randn(64, 8), torch.randn(8, 64)
        last.weight.copy_(a @ b / 8)  # rank 8 of 64
    return model


def by_name(report) -> dict[str, dict]:
    return {layer["name"]: layer for layer in report.layers}


def test_planted_symmetries_are_reported_exactly(one_thread: None) -> None:
    layers = by_name(diagnose_model(planted_model(), torch.randn(64, 3, 8, 8)))
    conv = layers["2"]
    assert conv["dead"] == 2
    assert conv["duplicated"] == 3  # 3 and 5 copy 0; 7 is 2 x 1
    assert conv["effective_width"] == 32 - 2 - 3
    assert conv["dead_activations"] == 3  # the two zeroed filters and the -1e6 bias
    assert conv["activation"] == "3"
    # Zero and duplicated rows take 5 of the 32 directions, at every threshold.
    assert conv["low_rank_count"] == {"0.01": 5, "0.001": 5, "0.0001": 5}
    last = layers["9"]
    assert last["low_rank_count"] == {"0.01": 56, "0.001": 56, "0.0001": 56}
    assert last["low_rank"]["0.001"] == 56 / 64
    assert 7.0 < last["rank"] <= 8.0  # effective rank of a rank-8 map
    assert last["dead_activations"] is None  # no nonlinearity after the output layer
    for name in ("0", "6"):  # layers without plants report nothing
        assert layers[name]["dead"] == layers[name]["duplicated"] == 0
        assert layers[name]["dead_activations"] == 0
        assert layers[name]["low_rank_count"]["0.001"] == 0


def test_tolerances_decide_what_counts(one_thread: None) -> None:
    model = planted_model()
    with torch.no_grad():
        model[2].weight[9] = model[2].weight[8] + 0.05 * torch.randn_like(model[2].weight[8])
    strict = by_name(diagnose_model(model))["2"]
    loose = by_name(diagnose_model(model, duplicate_tolerance=0.5))["2"]
    assert strict["duplicated"] == 3 and loose["duplicated"] > 3
    assert by_name(diagnose_model(model, dead_tolerance=0.0))["2"]["dead"] == 2


def digits_batch(count: int = 256) -> torch.Tensor:
    """Real images: sklearn's 8x8 digits as 32x32 three-channel images, standardized."""
    images = torch.as_tensor(load_digits().images[:count], dtype=torch.float32)[:, None]
    images = F.interpolate(images, size=32, mode="bilinear").repeat(1, 3, 1, 1)
    return (images - images.mean()) / images.std()


def test_fresh_timm_model_reports_nothing(one_thread: None) -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=0)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    report = diagnose_model(model, digits_batch())
    totals = report.totals
    assert totals["dead"] == totals["duplicated"] == totals["dead_activations"] == 0
    assert totals["effective_width"] == totals["units"]
    assert totals["low_rank"]["0.001"] == totals["low_rank"]["0.0001"] == 0.0
    assert totals["low_rank"]["0.01"] < 0.01  # a square random matrix's share near 1e-2
    assert totals["units_with_activation"] == totals["units"]  # every layer has its ReLU
    # Stages as timm's feature_info names them, then the output.
    assert [f["name"] for f in report.features] == [
        "act1",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "output",
    ]
    assert all(f["samples"] == 256 and f["rankme"] > 1.0 for f in report.features)
    # BatchNorm used the batch's statistics without touching the running ones.
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_projector_and_stages_of_an_ssl_method(one_thread: None) -> None:
    from tests.conftest import build_method

    model, _ = build_method("simclr")
    report = diagnose_model(model, digits_batch(64)[:, :1, :8, :8])
    names = [layer["name"] for layer in report.layers]
    assert names[0].startswith("backbone.") and names[-1].startswith("projection_head.")
    features = [f["name"] for f in report.features]
    assert features[0] == "backbone.act1" and features[-2:] == ["backbone", "projector"]
    assert report.features[-1]["dim"] == 16


def test_distance_to_anchor_per_layer(one_thread: None) -> None:
    model = planted_model()
    syre = SyRe(model, sigma0=1.0, include_1d=True)
    with torch.no_grad():
        model[6].weight.copy_(syre.anchors["6.weight"])
        model[6].bias.copy_(syre.anchors["6.bias"])
    layers = by_name(diagnose_model(model, anchors=syre.anchors))
    assert layers["6"]["distance_to_anchor"] == 0.0
    assert layers["0"]["distance_to_anchor"] > 0.5
    assert by_name(diagnose_model(model))["6"]["distance_to_anchor"] is None


def test_table_json_and_picture(tmp_path, one_thread: None) -> None:
    report = diagnose_model(planted_model(), torch.randn(16, 3, 8, 8))
    text = format_report(report)
    assert "Totals over 4 layers, 176 units: 2 dead, 3 never positive" in text
    assert "3 duplicated" in text
    png = write_report(report, tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG"
    layer = json.loads((tmp_path / "symmetry.json").read_text())["layers"][1]
    assert {"name", "shape", "dead", "duplicated", "effective_width", "rank", "low_rank"} <= set(
        layer
    )
    assert layer["shape"] == [32, 16, 3, 3]
    summary = summary_of(report)
    assert summary["dead_units"] == 2 and summary["duplicated_units"] == 3
    # Pooled over every layer's min(out, fan_in) directions: 16 + 32 + 32 + 64.
    assert summary["low_rank_0.001"] == (5 + 56) / (16 + 32 + 32 + 64)


def test_running_statistics_are_what_evaluation_sees_and_the_report_says_which(
    one_thread: None,
) -> None:
    """bn_statistics="running" measures the features of model.eval() (the kNN's and the
    collapse table's protocol); "batch" those of training-mode BatchNorm; both say so and
    leave the running statistics as they were."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten())
    norm = model[1]
    norm.running_mean.fill_(5.0)  # far from the batch's own mean: the two protocols differ
    batch = torch.randn(16, 3, 6, 6)
    before = norm.running_mean.clone()
    running = diagnose_model(model, batch, bn_statistics="running")
    batched = diagnose_model(model, batch, bn_statistics="batch")
    assert torch.equal(norm.running_mean, before)
    conv_running = next(r for r in running.layers if r["name"] == "0")
    conv_batched = next(r for r in batched.layers if r["name"] == "0")
    # running mean 5 shifts every pre-activation far below 0: all units never positive
    assert conv_running["dead_activations"] == 8 and conv_batched["dead_activations"] == 0
    assert "BatchNorm on running statistics" in format_report(running)
    assert "BatchNorm on batch statistics" in format_report(batched)
    assert running.settings["bn_statistics"] == "running"
    with pytest.raises(ValueError, match="bn_statistics"):
        diagnose_model(model, batch, bn_statistics="train")
