"""The SyRe paper's SSL table (section 6.5, Table 1) in one command: SimCLR, decay toward 0 vs anchors.

Arms (all SimCLR, SGD momentum 0.9, coupled decay, the same γ and seeds; they differ in the
anchor alone; every arm covers every conv and linear weight and bias, no norm layer,
`syre.cover=conv_linear`, as the paper's notebook does):

- off: decay toward 0 (`syre.enabled=false`);
- abs0.01, abs0.1: θ0 ~ N(0, σ0²) in the paper's units (`syre.anchor_scale=absolute`);
- fan1: our default, σ0 = 1.0 x 1/√fan_in (`syre.anchor_scale=fan_in`).

Columns: low-rankness of the projector output at 1e-2 / 1e-3 / 1e-4 of the largest singular
value (test split, `ssl_syre.evaluation.collapse.low_rankness`), RankMe of the projector
output, linear probe on the projector output and on the backbone, and the weight
diagnostics' totals (`metrics.json["symmetry"]`, `python -m ssl_syre.diagnose`). The paper's
numbers are printed beside. Each cell is one `train.py` run; finished cells are skipped, so an
interrupted table resumes. The markdown goes into benchmarks/results/paper_ssl_table.md between markers.

Run:
  python benchmarks/paper_ssl_table.py --scale cpu --threads 1    # Fashion-MNIST, test_resnet
  python benchmarks/paper_ssl_table.py --scale gpu                # CIFAR-100, ResNet-18 (download)
  python benchmarks/paper_ssl_table.py --scale cpu --seeds 0 --arms off,abs0.01
  python benchmarks/paper_ssl_table.py --scale cpu --collect-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import cells  # benchmarks/cells.py, beside this script: the one cell runner
import common_args  # benchmarks/common_args.py, beside this script
from results_table import (
    cell_numbers,
    decay_of,
    fmt,
    paired_table,
    study_page,
    summarize_rows,
)
from results_table import write_block as write_markdown_block

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "benchmarks" / "configs" / "simclr.yaml"
THRESHOLDS = ("0.01", "0.001", "0.0001")
COMMON = ["syre.mode=coupled", "syre.cover=conv_linear", "export=false"]
ARMS: dict[str, tuple[str, list[str]]] = {
    "off": ("decay toward 0", ["syre.enabled=false"]),
    "abs0.01": (
        "sigma0=0.01 absolute (paper)",
        ["syre.enabled=true", "syre.anchor_scale=absolute", "syre.sigma0=0.01"],
    ),
    "abs0.1": (
        "sigma0=0.1 absolute (paper)",
        ["syre.enabled=true", "syre.anchor_scale=absolute", "syre.sigma0=0.1"],
    ),
    "fan1": (
        "sigma0=1.0 fan_in (our default)",
        ["syre.enabled=true", "syre.anchor_scale=fan_in", "syre.sigma0=1.0"],
    ),
}
SCALES: dict[str, list[str]] = {
    # Two shared CPU cores: test_resnet (timm's tiny ResNet, 96-d features) and the SimCLR head
    # 96-512-128 (BN) of benchmarks/configs/simclr.yaml; a 5k-image subset and γ = 0.05 (100x
    # the usual decay) so that the decay acts within the step budget, as the paper's long
    # run lets it act.
    "cpu": [
        "data.train_subset=5000",
        "data.test_subset=2000",
        "data.batch_size=128",
        "optimizer.weight_decay=0.05",
        "optimizer.scheduler=constant",
        "eval.raw_pixel_baseline=false",
        "trainer.max_steps=250",
    ],
    # The paper's setting: ResNet-18 with the small-image stem, CIFAR-100 (torchvision
    # download), SimCLR with lightly's recipe (batch 512, lr 0.06 x 512/128, γ = 5e-4),
    # 200 epochs on one GPU.
    "gpu": [
        "backbone.name=resnet18",
        "backbone.small_image_stem=true",
        "method_kwargs.projection_hidden_dim=2048",
        "data.name=cifar100",
        "data.download=true",
        "data.train_subset=null",
        "data.test_subset=null",
        "data.batch_size=512",
        "data.num_workers=8",
        "optimizer.weight_decay=5e-4",
        "trainer.max_steps=-1",
        "trainer.max_epochs=200",
        "trainer.accelerator=gpu",
        "trainer.precision=bf16-mixed",
    ],
}
# Section 6.5, Table 1 of the paper (SimCLR, ResNet-18, CIFAR-100); its low-rank threshold
# is not stated. Backbone probe: about 46.8% in both arms.
PAPER = {
    "off": {"low_rank": "70%", "linear_projector": "22.2", "linear_backbone": "~46.8"},
    "abs0.01": {"low_rank": "0%", "linear_projector": "32.5", "linear_backbone": "~46.8"},
}


def run_dir_of(arm: str, seed: int, args: argparse.Namespace) -> Path:
    return Path(args.output_dir) / args.scale / f"paper_{arm}_seed{seed}"


def train_cell(arm: str, seed: int, args: argparse.Namespace) -> Path:
    """Train one cell unless it is finished (benchmarks/cells.py); return its run directory."""
    overrides = [*ARMS[arm][1], *COMMON, *SCALES[args.scale], f"seed={seed}", *args.set]
    return cells.run_cell(
        run_dir_of(arm, seed, args),
        CONFIG,
        overrides,
        threads=args.threads,
        force=args.force,
        dry_run=args.dry_run,
    )


def projector_low_rank(run_dir: Path) -> dict[str, float]:
    """Low-rankness of the projector output on the test split at each threshold, cached."""
    cached = run_dir / "paper_table_cell.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from omegaconf import OmegaConf

    from ssl_syre.data import build_eval_datasets
    from ssl_syre.evaluation.collapse import low_rankness
    from ssl_syre.evaluation.features import eval_loader, extract_features
    from ssl_syre.export import model_from_checkpoint

    model, state = model_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    cfg = OmegaConf.create(state["hyper_parameters"]["cfg"])
    _, test_set = build_eval_datasets(cfg.data, cfg.seed)  # the split metrics.json used
    loader = eval_loader(test_set, int(cfg.eval.batch_size))
    projected = extract_features(model.backbone, loader, projector=model.project)
    shares = {t: 100 * low_rankness(projected.by_kind["projector"], float(t)) for t in THRESHOLDS}
    cached.write_text(json.dumps(shares))
    return shares


def cell_row(run_dir: Path) -> dict[str, float]:
    """The numbers of one cell: metrics.json's, the projector's low-rank shares, the totals."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row = cell_numbers(metrics)
    for t, share in projector_low_rank(run_dir).items():
        row[f"lowrank_projector_{t}"] = share
    for key, value in metrics.get("symmetry", {}).items():
        row[f"symmetry_{key}"] = 100 * value if key.startswith("low_rank_0") else value
    return row


def collect(args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for arm in args.arms:
        per_seed, decay = {}, "-"
        for seed in args.seeds:
            run_dir = run_dir_of(arm, seed, args)
            if (run_dir / "metrics.json").is_file():
                per_seed[seed] = cell_row(run_dir)
                decay = decay_of(json.loads((run_dir / "metrics.json").read_text()))
        if per_seed:
            rows[arm] = {
                "arm": arm,
                "label": ARMS[arm][0],
                "decay": decay,
                "seeds": sorted(per_seed),
                "stats": summarize_rows(per_seed),
                "per_seed": per_seed,
            }
    return {
        "scale": args.scale,
        "overrides": [*COMMON, *SCALES[args.scale], *args.set],
        "rows": rows,
    }


PAIRED_KEYS = {
    "lowrank_projector_0.001": "low-rank projector % (<1e-3)",
    "rankme_projector": "RankMe projector",
    "linear_projector": "linear (projector)",
    "linear_backbone": "linear (backbone)",
    "knn200_backbone": "kNN k=200",
}


def markdown(table: dict[str, Any]) -> str:
    lines = [
        f"Scale `{table['scale']}`: `python train.py benchmarks/configs/simclr.yaml "
        f"{' '.join(table['overrides'])}` plus each arm's keys. Mean ± std over the seeds "
        "listed; accuracies in % on the test split; low-rank = % of the projector output's "
        "singular values (centered test embeddings) below t x the largest. Weights: the "
        "diagnostics' totals over every conv and linear layer (dead units, units never positive "
        "on 512 test images, duplicated units, % of singular values below 1e-3).",
        "",
        "| arm | decay | seeds | low-rank proj. <1e-2 | <1e-3 | <1e-4 | RankMe proj. | "
        "linear (proj.) | linear (backbone) | kNN k=200 | weights: dead | never positive | "
        "duplicated | low-rank <1e-3 % | paper: low-rank | paper: linear proj. | "
        "paper: linear backbone |",
        "|" + "---|" * 17,
    ]
    for arm, row in table["rows"].items():
        s = row["stats"]
        dim = int(s["dim_projector"]["mean"]) if "dim_projector" in s else "?"
        paper = PAPER.get(arm, {})
        cells = [
            row["label"],
            row["decay"],
            ",".join(map(str, row["seeds"])),
            *(fmt(s.get(f"lowrank_projector_{t}")) for t in THRESHOLDS),
            f"{fmt(s.get('rankme_projector'))} / {dim}",
            fmt(s.get("linear_projector")),
            fmt(s.get("linear_backbone")),
            fmt(s.get("knn200_backbone")),
            fmt(s.get("symmetry_dead_units")),
            fmt(s.get("symmetry_dead_activations")),
            fmt(s.get("symmetry_duplicated_units")),
            fmt(s.get("symmetry_low_rank_0.001"), 2),
            paper.get("low_rank", "-"),
            paper.get("linear_projector", "-"),
            paper.get("linear_backbone", "-"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    off = table["rows"].get("off")
    pairs = [
        ([row["label"]], row["per_seed"], off["per_seed"])
        for arm, row in table["rows"].items()
        if arm != "off" and off is not None
    ]
    title = "Paired difference arm − decay toward 0 (same seed; the anchor alone):"
    return "\n".join(lines + paired_table(title, ["arm"], pairs, PAIRED_KEYS))


def build_parser() -> argparse.ArgumentParser:
    """The command line: scale, arms, seeds and where the cells and the table go."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated from {list(ARMS)}")
    common_args.add_seeds(parser)
    common_args.add_sweep(parser, "paper_ssl_table")
    common_args.add_rerun(parser)
    common_args.add_results(parser)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    for arm in args.arms:
        if arm not in ARMS:
            raise SystemExit(f"error: unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not args.collect_only:
        for seed in args.seeds:  # seed-major: a partial table has whole seeds
            for arm in args.arms:
                run_dir = train_cell(arm, seed, args)
                if not args.dry_run:
                    projector_low_rank(run_dir)  # now, while the cell's files are warm
    if args.dry_run:
        return
    table = collect(args)
    if not table["rows"]:
        raise SystemExit(f"error: no finished cells in {Path(args.output_dir) / args.scale}")
    name = f"paper_ssl_table_{args.scale}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(table, indent=2))
    text = markdown(table)
    page = args.results_md or study_page(name, "paper_ssl_table")
    write_markdown_block(name, text, page)
    print(text)
    print(f"wrote {args.results / (name + '.json')} and the {name} block of {page}")


if __name__ == "__main__":
    main()
