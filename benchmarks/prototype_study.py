"""Partial prototype collapse and SyRe: distinct prototypes over training and the final kNN of
DINO, iBOT, DINOv2 (and SwAV when registered) under three arms, paired by seed.

Govindarajan et al. (BMVC 2024) find that many of a DINO-family head's K prototypes become
copies of one another; copies are the permutation-symmetric state that decay toward 0 pulls
into and an anchor should remove. The arms, each in the recipe's mode (AdamW: decoupled) with
the same γ schedule:

- decay0: decay toward 0 (`syre.enabled=false`), the control;
- anchor: SyRe, decay toward θ0 with σ0 = 1.0;
- koleo: decay toward 0 plus KoLeo on the prototypes (`method_kwargs.prototype_koleo_weight`),
  the paper's remedy; for every method with that setting (all four; a method without it has
  its koleo cell left out, said on every run).

Every cell is one train.py run (benchmarks/ablation.py's `train_cell`, benchmarks/cells.py: finished cells are
skipped on a rerun, --force reruns them). The online evaluation counts the distinct prototypes
every epoch (`online/prototypes/...` in metrics.json["online"]); the table holds the last
count, the kNN and each arm minus decay0 paired by seed, in benchmarks/RESULTS.md (between
markers) and benchmarks/results/ (with the curves).

Run:
  python benchmarks/prototype_study.py --dry-run              # list the cells
  python benchmarks/prototype_study.py --threads 1 --jobs 2   # CPU scale, 3 seeds, 2 cells at once
  python benchmarks/prototype_study.py --scale gpu            # CIFAR-100, ViT-S/4, K = 65536
  python benchmarks/prototype_study.py --collect-only         # rebuild the table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import ablation  # benchmarks/ablation.py, beside this script
import common_args
from cells import run_cells
from results_table import (
    cell_numbers,
    decay_of,
    fmt,
    paired,
    summarize_rows,
    write_study_table,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's ssl_syre, to read which methods are registered
CONFIGS = ROOT / "benchmarks" / "configs" / "prototypes"
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_OUTPUT_DIR = ROOT / "runs" / "prototype_study"
STUDY_METHODS = ("dino", "ibot", "dinov2", "swav")
ARMS = ("decay0", "anchor", "koleo")
KOLEO_KEY = "prototype_koleo_weight"
THRESHOLDS = ("0.9", "0.95", "0.99")
CLS_LAYER = "projection_head.last_layer"

SCALES: dict[str, dict[str, Any]] = {
    # 2 CPU cores: the configs' test_vit, 10k images, 300 steps of batch 256 (about 8 epochs,
    # one distinct-prototype count each).
    "cpu": {"max_steps": 300, "overrides": []},
    # One GPU: ViT-S in 4-px patches on CIFAR-100 (8 x 8 tokens), K = 65,536 as in the DINO
    # paper, all 50k images, 50 epochs of batch 256, bf16-mixed.
    "gpu": {
        "max_steps": 9750,
        "overrides": [
            "data.name=cifar100",
            "data.train_subset=null",
            "data.num_workers=8",
            "backbone.name=vit_small_patch16_224",
            "backbone.kwargs.patch_size=4",
            "backbone.kwargs.drop_path_rate=0.1",
            "method_kwargs.projection_hidden_dim=2048",
            "method_kwargs.bottleneck_dim=256",
            "method_kwargs.projection_output_dim=65536",
            "method_kwargs.n_local_views=6",
            "method_kwargs.local_crop_size=12",
            "trainer.accelerator=gpu",
            "trainer.precision=bf16-mixed",
        ],
    },
}


def config_of(method: str) -> Path | None:
    """The method's study config (benchmarks/configs/prototypes/<method>.yaml), else its
    Fashion-MNIST config, else None."""
    for path in (CONFIGS / f"{method}.yaml", ROOT / "configs" / f"{method}_fashion_mnist.yaml"):
        if path.is_file():
            return path
    return None


def plan(methods: list[str], arms: list[str], koleo_weight: float) -> tuple[list, list[str]]:
    """The cells [(method, arm, config, sigma0, extra overrides)] and a note per cell left out."""
    from ssl_syre.methods import METHODS  # imports torch: only to read what is registered

    cells, skipped = [], []
    for method in methods:
        config = config_of(method)
        if method not in METHODS or config is None:
            skipped.append(f"{method}: not registered or no config; all arms left out")
            continue
        knobs = getattr(METHODS[method].Kwargs, "__dataclass_fields__", {})
        for arm in arms:
            if arm == "koleo" and KOLEO_KEY not in knobs:
                skipped.append(f"{method} x koleo: no method_kwargs.{KOLEO_KEY}; left out")
                continue
            sigma0 = 1.0 if arm == "anchor" else 0.0
            extra = [f"method_kwargs.{KOLEO_KEY}={koleo_weight:g}"] if arm == "koleo" else []
            cells.append((method, arm, config, sigma0, extra))
    return cells, skipped


def mode_of(config: Path) -> str:
    """The recipe's decay mode, as ablation.config_mode reads it."""
    import yaml

    cfg = yaml.safe_load(config.read_text()) or {}
    return "decoupled" if (cfg.get("optimizer") or {}).get("name") == "adamw" else "coupled"


def arm_args(args: argparse.Namespace, arm: str, extra: list[str]) -> argparse.Namespace:
    """The arguments train_cell sees for one arm: its own folder (the koleo and decay0 cells
    share method, mode and σ0 = 0) and its overrides."""
    return argparse.Namespace(
        **{**vars(args), "output_dir": str(Path(args.output_dir) / arm), "set": [*args.set, *extra]}
    )


def check_gpu_scale(cells: list, args: argparse.Namespace) -> None:
    """--scale gpu: stop in one `error:` line when the data or the GPU is missing."""
    from ssl_syre.config import load_config
    from ssl_syre.data import build_eval_datasets
    from ssl_syre.errors import UserError

    method, _, config, _, _ = cells[0]
    try:
        # No download here: a missing data set is named, not fetched (--set data.download=true
        # lets the cells fetch it).
        overrides = ["data.download=false", *SCALES["gpu"]["overrides"], *args.set]
        cfg = load_config(str(config), overrides)
        build_eval_datasets(cfg.data, cfg.seed)
        import torch

        if not torch.cuda.is_available():
            raise UserError("--scale gpu needs a CUDA GPU and none is visible; use --scale cpu")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def online_curve(metrics: dict[str, Any], layer: str) -> list[dict[str, float]]:
    """Distinct prototypes at each online evaluation: [{epoch, 0.9: n, ...}]."""
    curve = []
    for record in metrics.get("online", []):
        counts = {t: record.get(f"prototypes/{layer}/distinct@{t}") for t in THRESHOLDS}
        if all(v is not None for v in counts.values()):
            curve.append({"epoch": record["epoch"], **counts})
    return curve


def cell_record(metrics: dict[str, Any]) -> tuple[dict[str, float], list]:
    """A cell's numbers (kNN, final distinct counts of the [CLS] head) and its curve."""
    numbers = cell_numbers(metrics)
    layers = metrics.get("prototypes", {})
    # The DINO family's [CLS] head; SwAV's one prototype layer is `prototypes`.
    layer = next((name for name in (CLS_LAYER, "prototypes") if name in layers), CLS_LAYER)
    final = layers.get(layer, {})
    for t in THRESHOLDS:
        if f"distinct@{t}" in final:
            numbers[f"distinct@{t}"] = float(final[f"distinct@{t}"])
    if "prototypes" in final:
        numbers["prototypes"] = float(final["prototypes"])
    return numbers, online_curve(metrics, layer)


def collect(args: argparse.Namespace, cells: list, max_steps: int) -> dict[str, Any]:
    rows = []
    for method, arm, config, sigma0, _ in cells:
        mode = mode_of(config)
        folder = Path(args.output_dir) / arm / args.scale
        name = ablation.run_name(method, mode, sigma0, 0, max_steps).replace("_seed0_", "_seed*_")
        per_seed, curves, decay = {}, {}, "-"
        for path in sorted(folder.glob(f"{name}/metrics.json")):
            seed = int(path.parent.name.split("_seed")[1].split("_")[0])
            metrics = json.loads(path.read_text())
            per_seed[seed], curves[seed] = cell_record(metrics)
            decay = decay_of(metrics)
        if per_seed:
            rows.append(
                {
                    "method": method,
                    "arm": arm,
                    "decay": decay,
                    "seeds": sorted(per_seed),
                    "stats": summarize_rows(per_seed),
                    "per_seed": per_seed,
                    "curves": curves,
                }
            )
    return {"scale": args.scale, "max_steps": max_steps, "rows": rows}


def markdown(table: dict[str, Any]) -> str:
    keys = [f"distinct@{t}" for t in THRESHOLDS] + [
        "knn200_backbone",
        "knn20_backbone",
        "rankme_projector",
    ]
    lines = [
        f"Prototype study, scale {table['scale']}, {table['max_steps']} steps "
        "(benchmarks/prototype_study.py). Distinct prototypes of the [CLS] head at the end "
        "(cosine above t counts as one), kNN k=200 on the backbone; Δ: minus decay0, paired "
        "by seed. RankMe of the head's outputs (the K prototype scores): how many prototypes the "
        "images actually spread over.",
        "",
        "| method | arm | decay | seeds | K | " + " | ".join(keys) + " | Δ distinct@0.95 | Δ kNN |",
        "|" + "---|" * (7 + len(keys)),
    ]
    control = {r["method"]: r for r in table["rows"] if r["arm"] == "decay0"}
    for row in table["rows"]:
        stats = row["stats"]
        delta = {"distinct@0.95": "-", "knn200_backbone": "-"}
        base = control.get(row["method"])
        if base is not None and row["arm"] != "decay0":
            _, diff = paired(row["per_seed"], base["per_seed"], list(delta))
            delta = {key: fmt(diff.get(key)) for key in delta}
        lines.append(
            f"| {row['method']} | {row['arm']} | {row['decay']} | {len(row['seeds'])} | "
            f"{fmt(stats.get('prototypes'), 0)} | "
            + " | ".join(
                fmt(stats.get(key), 0 if key.startswith("distinct") else 1) for key in keys
            )
            + f" | {delta['distinct@0.95']} | {delta['knn200_backbone']} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", nargs="+", choices=STUDY_METHODS, default=list(STUDY_METHODS))
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument(
        "--koleo-weight",
        type=float,
        default=0.1,
        help="weight of KoLeo on the prototypes in the koleo arm (DINOv2's KoLeo weight)",
    )
    common_args.add_seeds(parser)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--max-steps", type=int, help="override the scale's step budget")
    common_args.add_sweep(parser, "prototype_study", threads_help="OMP_NUM_THREADS per cell")
    common_args.add_jobs(parser)
    common_args.add_checkout_results(parser)
    common_args.add_rerun(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    max_steps = args.max_steps or SCALES[args.scale]["max_steps"]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cells, skipped = plan(args.method, args.arms, args.koleo_weight)
    for note in skipped:
        print(f"left out: {note}", flush=True)
    if not cells:
        raise SystemExit("error: no cell to run; see the notes above")
    if args.scale == "gpu" and not (args.dry_run or args.collect_only):
        check_gpu_scale(cells, args)
    if not args.collect_only:
        overrides = SCALES[args.scale]["overrides"]
        tasks = [  # seed-major: a partial table already pairs every arm
            partial(
                ablation.train_cell,
                method,
                mode_of(config),
                sigma0,
                seed,
                arm_args(args, arm, extra),
                max_steps,
                config=config,
                scale_overrides=overrides,
            )
            for seed in args.seeds
            for method, arm, config, sigma0, extra in cells
        ]
        run_cells(tasks, args.jobs)
    if args.dry_run:
        return
    table = collect(args, cells, max_steps)
    if table["rows"]:
        name = f"prototype_study_{args.scale}_steps{max_steps}"
        write_study_table(
            name,
            "prototype_study",
            table,
            markdown(table),
            args.output_dir,
            DEFAULT_OUTPUT_DIR,
            args.checkout_results,
        )
        print(markdown(table))


if __name__ == "__main__":
    main()
