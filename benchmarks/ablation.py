"""SyRe on/off ablation over every method with a benchmarks/configs/<method>.yaml: one table.

Each cell (method, decay mode, sigma0, seed) is one `python train.py
benchmarks/configs/<method>.yaml syre.mode=... syre.sigma0=... seed=... run_name=...` subprocess
with a fixed step budget (trainer.max_steps: deterministic, unlike wall time). SyRe off is
sigma0 = 0 (`syre.enabled=false`): the same gamma, mode and update decaying toward 0, so an on
cell and the off cell of its mode differ in the anchor alone. The script reads every run's
metrics.json and writes mean +- std over seeds, each sigma0 minus off paired by seed, and per
row the decay's mode and pull per step, as a markdown table into its study page, benchmarks/results/ablation.md (between
markers, so reruns replace it) and as JSON into benchmarks/results/. Finished cells are skipped
unless --force, so an interrupted table resumes.

Run:
  python benchmarks/ablation.py                                  # whole table, CPU scale
  python benchmarks/ablation.py --scale cpu_small --threads 1 --jobs 2   # small protocol, 2 at once
  python benchmarks/ablation.py --sigma0 0.01 0.1 0.3 1.0 --modes coupled   # a sigma0 sweep
  python benchmarks/ablation.py --method simclr --syre on --seed 0   # one cell per mode
  python benchmarks/ablation.py --seeds 0 --max-steps 100        # a reduced budget
  python benchmarks/ablation.py --collect-only                   # rebuild the table only
  python benchmarks/ablation.py --scale gpu                      # resnet18, all 60k, more steps
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import cells  # benchmarks/cells.py, beside this script: the one cell runner
import common_args
from omegaconf import OmegaConf  # benchmarks/common_args.py, beside this script
from results_table import (
    cell_numbers,
    decay_of,
    fmt,
    paired_table,
    summarize,
    summarize_rows,
    write_study_table,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "benchmarks" / "configs"
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_OUTPUT_DIR = ROOT / "runs" / "ablation"  # common_args.add_sweep's default
# The table's rows in this order, then any other method with a config here (a new method
# joins the study by adding benchmarks/configs/<name>.yaml; stress_*.yaml are not cells).
ORDER = (
    *("simclr", "byol", "simsiam", "mocov2", "barlowtwins", "vicreg", "dino"),
    *("swav", "nnclr", "dcl", "mocov3", "ibot", "dinov2", "mae", "lejepa"),
)
METHODS = tuple(
    sorted(
        (p.stem for p in CONFIGS.glob("*.yaml") if not p.stem.startswith("stress_")),
        key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name),
    )
)
MODES = ("decoupled", "coupled")  # ssl_syre.syre.MODES; this script runs train.py, imports no torch

# Overrides on top of benchmarks/configs/<method>.yaml for each scale.
SCALES: dict[str, dict[str, Any]] = {
    # 2 CPU cores: test_resnet, 20k-image subset, 300 steps of batch 256 (~3.8 epochs).
    "cpu": {"max_steps": 300, "overrides": []},
    # The all-methods table on one busy core: 100 steps of batch 128 on a 5k subset, 2k test
    # images, a 10-epoch probe. Enough to see a method collapse or not, not to rank methods.
    "cpu_small": {
        "max_steps": 100,
        "overrides": [
            "data.batch_size=128",
            "data.train_subset=5000",
            "data.test_subset=2000",
            "eval.linear_epochs=10",
            "data.num_workers=0",
        ],
    },
    # One GPU: ResNet-18 with the 3x3 stem, all 60k images, 4680 steps (20 epochs of batch 256).
    "gpu": {
        "max_steps": 4680,
        "overrides": [
            "backbone.name=resnet18",
            "backbone.small_image_stem=true",
            "data.train_subset=null",
            "data.num_workers=8",
            "trainer.accelerator=gpu",
            "trainer.precision=bf16-mixed",
        ],
        # The ViT cells (mocov3, ibot, dinov2, mae, lejepa: patch tokens, no ResNet): ViT-S/16
        # in 4-px patches at their 32 px (the prototype study's GPU backbone).
        "vit_overrides": [
            "backbone.name=vit_small_patch16_224",
            "backbone.kwargs.patch_size=4",
            "data.train_subset=null",
            "data.num_workers=8",
            "trainer.accelerator=gpu",
            "trainer.precision=bf16-mixed",
        ],
    },
}


def config_mode(method: str) -> str:
    """syre.mode 'auto' of a method's config: coupled under sgd/lars, decoupled under adamw
    (ssl_syre.config.syre_mode, read from the YAML without importing torch)."""
    import yaml

    cfg = yaml.safe_load((CONFIGS / f"{method}.yaml").read_text()) or {}
    mode = (cfg.get("syre") or {}).get("mode", "auto")
    if mode != "auto":
        return mode
    return "decoupled" if (cfg.get("optimizer") or {}).get("name") == "adamw" else "coupled"


def cell_overrides(method: str, scale: str) -> list[str]:
    """The scale's overrides for a method's cell: its `vit_overrides`, where it has them, for a
    cell whose config trains a ViT."""
    import yaml

    cfg = yaml.safe_load((CONFIGS / f"{method}.yaml").read_text()) or {}
    vit = "vit" in str((cfg.get("backbone") or {}).get("name", ""))
    settings = SCALES[scale]
    return list(
        settings["vit_overrides"] if vit and "vit_overrides" in settings else settings["overrides"]
    )


def modes_of(method: str, modes: list[str]) -> list[str]:
    """The cells' modes for a method: 'auto' becomes the method's own convention."""
    resolved = [config_mode(method) if mode == "auto" else mode for mode in modes]
    return list(dict.fromkeys(resolved))


def run_name(method: str, mode: str, sigma0: float, seed: int, max_steps: int) -> str:
    """sigma0 = 0 is the off cell (decay toward 0)."""
    syre = f"sigma{sigma0:g}" if sigma0 else "off"
    return f"{method}_{mode}_{syre}_seed{seed}_steps{max_steps}"


def syre_overrides(mode: str, sigma0: float) -> list[str]:
    if not sigma0:
        return ["syre.enabled=false", f"syre.mode={mode}"]
    return ["syre.enabled=true", f"syre.mode={mode}", f"syre.sigma0={sigma0:g}"]


def train_cell(
    method: str,
    mode: str,
    sigma0: float,
    seed: int,
    args: argparse.Namespace,
    max_steps: int,
    config: Path | None = None,
    scale_overrides: list[str] | None = None,
) -> Path:
    """Train one cell unless it is finished (benchmarks/cells.py); return its run directory.

    `config` and `scale_overrides` stand in for benchmarks/configs/<method>.yaml and the
    scale's overrides, for another study's cells (benchmarks/prototype_study.py).
    """
    if scale_overrides is None:
        scale_overrides = cell_overrides(method, args.scale)
    run_dir = Path(args.output_dir) / args.scale / run_name(method, mode, sigma0, seed, max_steps)
    overrides = [
        *syre_overrides(mode, sigma0),
        f"seed={seed}",
        f"trainer.max_steps={max_steps}",
        "export=false",
        *scale_overrides,
        *args.set,
    ]
    return cells.run_cell(
        run_dir,
        CONFIGS / f"{method}.yaml" if config is None else config,
        overrides,
        threads=args.threads,
        force=args.force,
        dry_run=args.dry_run,
    )


def image_size_of(seed0_dir: Path) -> str:
    """The image size a cell ran at ('native' unless data.image_size is set), from the resolved
    config.yaml of any seed of it."""
    configs = sorted(
        seed0_dir.parent.glob(seed0_dir.name.replace("_seed0_", "_seed*_") + "/config.yaml")
    )
    if not configs:
        return "native"
    size = OmegaConf.load(configs[0]).get("data", {}).get("image_size")
    return "native" if size is None else str(size)


def collect(args: argparse.Namespace, max_steps: int) -> dict[str, Any]:
    """Mean and std over seeds for every (method, mode, sigma0) that has finished runs."""
    output_dir = Path(args.output_dir) / args.scale
    rows: list[dict[str, Any]] = []
    raw: dict[str, dict[str, dict[int, float]]] = {}
    for method in METHODS:
        for mode in modes_of(method, args.modes):
            for sigma0 in [0.0, *args.sigma0]:
                per_seed, decay = {}, "-"
                pattern = run_name(method, mode, sigma0, 0, max_steps).replace("_seed0_", "_seed*_")
                for path in sorted(output_dir.glob(f"{pattern}/metrics.json")):
                    seed = int(path.parent.name.split("_seed")[1].split("_")[0])
                    if args.table_seeds is None or seed in args.table_seeds:
                        metrics = json.loads(path.read_text())
                        per_seed[seed] = cell_numbers(metrics)
                        decay = decay_of(metrics)
                if not per_seed:
                    continue
                # Raw pixels depend only on the seed's data subset and the image size (the ViT
                # cells run at 32 px), not on the method: once per size and seed.
                size = image_size_of(output_dir / run_name(method, mode, sigma0, 0, max_steps))
                for key in ("knn200_raw_pixels", "knn20_raw_pixels"):
                    for seed, numbers in per_seed.items():
                        if key in numbers:
                            raw.setdefault(size, {}).setdefault(key, {})[seed] = numbers[key]
                rows.append(
                    {
                        "method": method,
                        "mode": mode,
                        "sigma0": sigma0,
                        "decay": decay,
                        "seeds": sorted(per_seed),
                        "stats": summarize_rows(per_seed),
                        "per_seed": per_seed,
                    }
                )
    return {
        "scale": args.scale,
        "max_steps": max_steps,
        "config_overrides": SCALES[args.scale]["overrides"] + list(args.set),
        "protocol": {
            "knn": "cosine similarity, weighted vote exp(s/t), t=0.1, k=200 and k=20; "
            "bank = SSL training subset (eval transform), queries = full test split",
            "linear_probe": "ssl_syre.evaluation.linear.linear_probe on frozen cached "
            "features (eval.linear_epochs, default 30), top-1 on the test split",
            "collapse": "RankMe and low-rankness of test-split embeddings "
            "(ssl_syre.evaluation.collapse)",
        },
        "rows": rows,
        "raw_pixels": {
            size: {key: summarize(list(values.values())) for key, values in by_key.items()}
            for size, by_key in sorted(raw.items(), key=lambda item: (item[0] != "native", item[0]))
        },
    }


def markdown(table: dict[str, Any]) -> str:
    lines = [
        f"Scale `{table['scale']}`, trainer.max_steps={table['max_steps']}, "
        f"overrides: `{' '.join(table['config_overrides']) or '-'}`. "
        "Mean ± std over the seeds listed (std only when n > 1). Accuracies in % on the "
        "Fashion-MNIST test split (all 10k images unless data.test_subset is overridden). "
        "'Decay' is what each row decays toward, in which mode, and the pull per step at the "
        "peak lr; rows of one method and mode differ in the anchor alone.",
        "",
        "| method | SyRe | decay | seeds | kNN k=200 | kNN k=20 | linear (backbone) | "
        "linear (projector) | RankMe backbone | low-rank backbone % | RankMe projector | "
        "low-rank projector % | wall time s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table["rows"]:
        s = row["stats"]
        dim_b = int(s["dim_backbone"]["mean"]) if "dim_backbone" in s else "?"
        dim_p = int(s["dim_projector"]["mean"]) if "dim_projector" in s else "?"
        lines.append(
            "| "
            + " | ".join(
                [
                    row["method"],
                    f"sigma0={row['sigma0']:g}" if row["sigma0"] else "off (toward 0)",
                    row["decay"],
                    ",".join(map(str, row["seeds"])),
                    fmt(s.get("knn200_backbone")),
                    fmt(s.get("knn20_backbone")),
                    fmt(s.get("linear_backbone")),
                    fmt(s.get("linear_projector")),
                    f"{fmt(s.get('rankme_backbone'))} / {dim_b}",
                    fmt(s.get("lowrank_backbone")),
                    f"{fmt(s.get('rankme_projector'))} / {dim_p}",
                    fmt(s.get("lowrank_projector")),
                    fmt(s.get("wall_time_s"), 0),
                ]
            )
            + " |"
        )
    for size, raw in table["raw_pixels"].items():
        label = (
            "raw pixels (784-d)"
            if size == "native"
            else f"raw pixels at {size} px (the cells at {size} px)"
        )
        lines.append(
            f"| {label} | - | - | same splits | {fmt(raw.get('knn200_raw_pixels'))} | "
            f"{fmt(raw.get('knn20_raw_pixels'))} | - | - | - | - | - | - | - |"
        )
    full_bank = RESULTS_DIR / "raw_pixel_knn_fashion_mnist.json"
    if full_bank.is_file():  # the published baseline: benchmarks/raw_pixel_knn.py, 60k bank
        knn = json.loads(full_bank.read_text())["knn"]
        top1 = {(r["k"], r["t"]): f"{100 * r['top1']:.1f}" for r in knn}
        lines.append(
            f"| raw pixels, full 60k bank (`raw_pixel_knn.py`; k=10 t=0.07: "
            f"{top1.get((10, 0.07), '-')}) | - | - | all | {top1.get((200, 0.1), '-')} | "
            f"{top1.get((20, 0.1), '-')} | - | - | - | - | - | - | - |"
        )
    return "\n".join(lines + paired_differences(table))


PAIRED_KEYS = {
    "knn200_backbone": "kNN k=200",
    "knn20_backbone": "kNN k=20",
    "linear_backbone": "linear (backbone)",
    "linear_projector": "linear (projector)",
    "rankme_backbone": "RankMe backbone",
    "rankme_projector": "RankMe projector",
}


def paired_differences(table: dict[str, Any]) -> list[str]:
    """Each sigma0 minus off of the same method and mode, seed by seed: the anchor alone."""
    off = {(r["method"], r["mode"]): r["per_seed"] for r in table["rows"] if not r["sigma0"]}
    pairs = [
        ([row["method"], row["mode"], f"sigma0={row['sigma0']:g}"], row["per_seed"], control)
        for row in table["rows"]
        if row["sigma0"] and (control := off.get((row["method"], row["mode"]))) is not None
    ]
    title = (
        "Paired difference SyRe − off (same method, mode and seed: the anchor alone), "
        "mean ± std over seeds (points for accuracies):"
    )
    return paired_table(title, ["method", "mode", "SyRe"], pairs, PAIRED_KEYS)


def write_results(table: dict[str, Any], args: argparse.Namespace) -> None:
    name = f"ablation_{table['scale']}_steps{table['max_steps']}"
    write_study_table(
        name,
        "ablation",
        table,
        markdown(table),
        args.output_dir,
        DEFAULT_OUTPUT_DIR,
        args.checkout_results,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: the cells to run and how to collect them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--syre", choices=["on", "off", "both"], default="both")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=[*MODES, "auto"],
        default=list(MODES),
        help="syre.mode of the cells; auto: each method's own (coupled for sgd/lars, "
        "decoupled for adamw), so every method runs in the mode of its recipe",
    )
    parser.add_argument(
        "--sigma0",
        type=float,
        nargs="+",
        default=[1.0],
        help="sigma0 of the SyRe-on cells (default: the config default)",
    )
    common_args.add_seeds(parser)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--max-steps", type=int, help="override the scale's step budget")
    common_args.add_sweep(
        parser,
        "ablation",
        set_help="extra train.py overrides (key=value) for every cell",
        threads_help="OMP_NUM_THREADS for each cell (default: inherit)",
    )
    common_args.add_jobs(parser)
    common_args.add_checkout_results(parser)
    common_args.add_rerun(parser)
    parser.add_argument(
        "--table-seeds",
        type=int,
        nargs="+",
        help="seeds that the table averages over (default: every finished seed)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    max_steps = args.max_steps or SCALES[args.scale]["max_steps"]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not args.collect_only:
        on = [s for s in args.sigma0 if s > 0]
        sigma0s = {"on": on, "off": [0.0], "both": [0.0, *on]}[args.syre]
        # Seed-major order: a partial table already covers every method and both SyRe settings.
        tasks = [
            partial(train_cell, method, mode, sigma0, seed, args, max_steps)
            for seed in args.seeds
            for method in args.method
            for mode in modes_of(method, args.modes)
            for sigma0 in sigma0s
        ]
        cells.run_cells(tasks, args.jobs)
    if args.dry_run:
        return
    table = collect(args, max_steps)
    if table["rows"]:
        write_results(table, args)
        print(markdown(table))


if __name__ == "__main__":
    main()
