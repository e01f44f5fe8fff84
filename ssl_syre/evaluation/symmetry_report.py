"""Text table and picture (symmetry.png) of a `SymmetryReport`, and writing both to a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssl_syre.evaluation.symmetry import SymmetryReport

PICTURE = "symmetry.png"
REPORT = "symmetry.json"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%" if value else "."


def format_report(report: SymmetryReport) -> str:
    """Per-layer table, per-stage feature table and one line of totals, for stdout.

    A dot stands for zero, so what is not zero stands out.
    """
    settings = report.settings
    thresholds = settings["thresholds"]
    head = (
        f"{'layer':<36} {'shape':<18} {'dead':>5} {'dead act':>8} {'dup':>4} "
        f"{'width':>9} {'eff rank':>12} "
        + " ".join(f"{'<' + t:>7}" for t in thresholds)
        + f" {'to anchor':>9}"
    )
    lines = [
        f"Weights (dead: ||w_i|| <= {settings['dead_tolerance']:g} x the layer's largest; "
        f"dup: cosine >= {settings['duplicate_cosine']:g}; low-rank: % of singular values "
        "below t x the largest)",
        head,
        "-" * len(head),
    ]
    for r in report.layers:
        activations = "-" if r["dead_activations"] is None else str(r["dead_activations"] or ".")
        distance = "-" if r["distance_to_anchor"] is None else f"{r['distance_to_anchor']:.3g}"
        lines.append(
            f"{r['name'][:36]:<36} {'x'.join(map(str, r['shape'])):<18} {r['dead'] or '.':>5} "
            f"{activations:>8} {r['duplicated'] or '.':>4} "
            f"{str(r['effective_width']) + '/' + str(r['units']):>9} "
            f"{r['rank']:>6.1f}/{r['max_rank']:<5} "
            + " ".join(f"{_pct(r['low_rank'][t]):>7}" for t in thresholds)
            + f" {distance:>9}"
        )
    if report.features:
        statistics = settings.get("bn_statistics", "batch")
        lines += [
            "",
            f"Features ({settings['samples']} inputs, mean over positions, "
            f"BatchNorm on {statistics} statistics)",
        ]
        head = f"{'stage':<36} {'dim':>5} {'RankMe':>8} " + " ".join(
            f"{'<' + t:>7}" for t in thresholds
        )
        lines += [head, "-" * len(head)]
        for f in report.features:
            lines.append(
                f"{f['name'][:36]:<36} {f['dim']:>5} {f['rankme']:>8.1f} "
                + " ".join(f"{_pct(f['low_rank'][t]):>7}" for t in thresholds)
            )
    lines += ["", totals_line(report.totals)]
    return "\n".join(lines)


def totals_line(totals: dict[str, Any]) -> str:
    """One line: dead, duplicated, effective width and low-rank totals over all layers."""
    low_rank = ", ".join(f"<{t}: {100 * s:.1f}%" for t, s in totals["low_rank"].items())
    activations = (
        ""
        if totals["dead_activations"] is None
        else f", {totals['dead_activations']} never positive on the inputs"
    )
    return (
        f"Totals over {totals['layers']} layers, {totals['units']} units: {totals['dead']} dead"
        f"{activations}, {totals['duplicated']} duplicated, effective width "
        f"{totals['effective_width']}; low-rank directions {low_rank}; "
        f"{totals['low_rank_layers']} layer(s) with any below {totals['low_rank_layers_threshold']}"
    )


def plot_report(report: SymmetryReport, path: str | Path, title: str | None = None) -> Path:
    """Per-layer horizontal bars: % dead, % duplicated and % low-rank (middle threshold).

    One row per layer, top to bottom in model order, so a reader sees at a glance which
    mechanism is at work and where. Uses matplotlib's Agg canvas, not pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = report.layers
    middle = report.totals.get("low_rank_layers_threshold") or "0.001"
    rows = max(len(layers), 1)
    figure = Figure(figsize=(8, 2.2 + 0.28 * rows), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bars = [
        ("dead (weights ~ 0)", lambda r: r["dead"] / r["units"], "#d62728"),
        (
            "never positive on inputs",
            lambda r: (r["dead_activations"] or 0) / r["units"],
            "#ff9896",
        ),
        ("duplicated", lambda r: r["duplicated"] / r["units"], "#1f77b4"),
        (f"low-rank (< {middle} of largest)", lambda r: r["low_rank"][middle], "#2ca02c"),
    ]
    height = 0.8 / len(bars)
    for i, (label, share, color) in enumerate(bars):
        positions = [row + (i - (len(bars) - 1) / 2) * height for row in range(len(layers))]
        axes.barh(
            positions, [100 * share(r) for r in layers], height=height, label=label, color=color
        )
    axes.set_yticks(range(len(layers)))
    axes.set_yticklabels([r["name"] for r in layers], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("% of the layer's units (low-rank: % of its singular values)")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09 - 1.5 / (3 + rows)), ncol=2
    )
    totals = report.totals
    axes.set_title(
        (title + "\n" if title else "")
        + f"{totals['dead']} dead, {totals['duplicated']} duplicated of {totals['units']} units; "
        f"low-rank {100 * totals['low_rank'].get(middle, 0):.1f}% (< {middle})",
        fontsize=9,
    )
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def write_report(report: SymmetryReport, out_dir: str | Path, title: str | None = None) -> Path:
    """symmetry.json and symmetry.png into `out_dir` (a run directory at the end of training)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT).write_text(json.dumps(report.to_json(), indent=2))
    return plot_report(report, out_dir / PICTURE, title)


def first_images(dataset: Any, samples: int) -> Any:
    """The first `samples` images of an evaluation data set, stacked: the diagnostics' batch."""
    import torch

    count = min(samples, len(dataset))
    return torch.stack([torch.as_tensor(dataset[i][0]) for i in range(count)]) if count else None


def diagnose_method(model: Any, dataset: Any | None, samples: int = 512) -> SymmetryReport:
    """`diagnose_model` of an SSL method with its own SyRe anchors and `samples` test images."""
    from ssl_syre.evaluation.symmetry import diagnose_model

    syre = getattr(model, "syre", None)
    anchors = None if syre is None or syre.zero_anchors else syre.anchors
    batch = first_images(dataset, samples) if dataset is not None else None
    return diagnose_model(model, batch, anchors=anchors)
