"""Collapse stress test: decay toward 0 vs SyRe (sigma0 and d_eps sweeps), per decay mode and seed.

Trains benchmarks/configs/stress_simclr.yaml (or --config) once per mode, variant and seed with
train.py. A variant is `off` (decay toward 0: SyRe's own update with sigma0 = 0) or
`SIGMA0[:D_EPS]` (SyRe with that sigma0 and, when given, advanced removal
D ~ U[1 - d_eps, 1 + d_eps]). Within a mode every variant shares gamma and the update rule, so
a variant and `off` differ in the anchor alone; across modes the pull per step differs
(decoupled lr·γ, coupled lr·γ/(1 − momentum)), and the table says so per row. Reads every
run's metrics.json and writes mean +- std over seeds, and each variant minus `off` paired by
seed, as a markdown block in its study page under benchmarks/results/ (between markers) and as JSON; reloads the
first seed's final checkpoint of each row and overlays the singular value spectra of the
projector outputs and of the backbone features with `ssl_syre.evaluation.collapse.plot_spectra`.
Finished runs are skipped unless --force, so an interrupted sweep resumes.

Run:
  python benchmarks/collapse_stress.py --threads 1        # both modes x off, 0.01, 0.1; seeds 0-2
  python benchmarks/collapse_stress.py --modes coupled --variants off,0.01,0.1,0.3,1.0,0.3:0.1
  python benchmarks/collapse_stress.py --config benchmarks/configs/stress_simsiam.yaml \
      --tag stress_simsiam
  python benchmarks/collapse_stress.py --collect-only                     # table and plots only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cells  # benchmarks/cells.py, beside this script: the one cell runner
import common_args  # benchmarks/common_args.py, beside this script
import torch
from results_table import (
    cell_numbers,
    decay_of,
    fmt,
    paired_table,
    study_page,
    summarize_rows,
    write_block,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ssl_syre.data import build_eval_datasets  # noqa: E402
from ssl_syre.evaluation.collapse import plot_spectra, singular_value_spectrum  # noqa: E402
from ssl_syre.evaluation.features import eval_loader, extract_features  # noqa: E402
from ssl_syre.export import model_from_checkpoint  # noqa: E402
from ssl_syre.syre import MODES  # noqa: E402


def variant_overrides(variant: str) -> list[str]:
    """'off' is decay toward 0 (sigma0 = 0); 'SIGMA0[:D_EPS]' is SyRe (same gamma and mode)."""
    if variant == "off":
        return ["syre.enabled=false"]
    sigma0, _, d_eps = variant.partition(":")
    try:
        overrides = ["syre.enabled=true", f"syre.sigma0={float(sigma0)}"]
        return overrides + [f"syre.d_eps={float(d_eps or 0)}"]
    except ValueError:
        raise SystemExit(
            f"error: variant {variant!r} is not 'off' or SIGMA0[:D_EPS] (e.g. 0.01 or 0.01:0.1)"
        ) from None


def variant_label(variant: str) -> str:
    if variant == "off":
        return "decay toward 0"
    sigma0, _, d_eps = variant.partition(":")
    return f"SyRe sigma0={sigma0}" + (f", D eps={d_eps}" if d_eps else "")


def shown_path(path: Path) -> str:
    """Relative to the repository when inside it: no machine-specific paths in the results pages."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def run_dir_of(mode: str, variant: str, seed: int, args: argparse.Namespace) -> Path:
    name = f"{args.tag}_{mode}_{variant.replace(':', '-d')}_seed{seed}"
    return Path(args.output_dir) / name


def train_variant(mode: str, variant: str, seed: int, args: argparse.Namespace) -> Path:
    """Train one run unless it is finished (benchmarks/cells.py); return its run directory."""
    overrides = [
        *variant_overrides(variant),
        f"syre.mode={mode}",
        f"seed={seed}",
        "export=false",
        *args.set,
    ]
    run_dir = run_dir_of(mode, variant, seed, args)
    return cells.run_cell(run_dir, args.config, overrides, threads=args.threads, force=args.force)


def spectra_of(run_dir: Path) -> dict[str, torch.Tensor]:
    """Singular values of backbone and projector embeddings of the run's test subset."""
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    model, state = model_from_checkpoint(checkpoint)  # weights_only=True: no pickle of code
    hparams = state["hyper_parameters"]
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(hparams["cfg"])
    _, test = build_eval_datasets(cfg.data, cfg.seed)
    features = extract_features(model.backbone, eval_loader(test, 512), projector=model.project)
    return {kind: singular_value_spectrum(z) for kind, z in features.by_kind.items()}


PAIRED_KEYS = {
    "knn200_backbone": "kNN k=200",
    "linear_backbone": "linear (backbone)",
    "linear_projector": "linear (projector)",
    "rankme_projector": "RankMe projector",
    "lowrank_projector": "low-rank projector %",
    "rankme_backbone": "RankMe backbone",
    "dead_backbone": "dead backbone units %",
}


def markdown(args: argparse.Namespace, rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"`{' '.join([shown_path(args.config), *args.set])}`, tag `{args.tag}`. "
        "Mean ± std over the seeds listed. Accuracies in % on the config's test subset; "
        "kNN k=200 t=0.1 on backbone features. Low-rank = share of singular values below "
        "1e-3 of the largest; dead = share of constant units. 'Decay' names what each row "
        "decays toward, in which mode, and the pull per step at the peak lr (decoupled lr·γ, "
        "coupled lr·γ/(1 − momentum)); rows of one mode differ in the anchor alone.",
        "",
        "| mode | variant | decay | seeds | RankMe projector | low-rank projector % | "
        "RankMe backbone | low-rank backbone % | dead backbone units % | kNN k=200 | "
        "linear (backbone) | linear (projector) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        s = row["stats"]
        dim_p = int(s["dim_projector"]["mean"]) if "dim_projector" in s else "?"
        dim_b = int(s["dim_backbone"]["mean"]) if "dim_backbone" in s else "?"
        cells = [
            row["mode"],
            variant_label(row["variant"]),
            row["decay"],
            ",".join(map(str, row["seeds"])),
            f"{fmt(s.get('rankme_projector'))} / {dim_p}",
            fmt(s.get("lowrank_projector")),
            f"{fmt(s.get('rankme_backbone'))} / {dim_b}",
            fmt(s.get("lowrank_backbone")),
            fmt(s.get("dead_backbone")),
            fmt(s.get("knn200_backbone")),
            fmt(s.get("linear_backbone")),
            fmt(s.get("linear_projector")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    raw = summarize_rows(
        {
            seed: {"knn200_raw_pixels": numbers["knn200_raw_pixels"]}
            for row in rows.values()
            for seed, numbers in row["per_seed"].items()
            if "knn200_raw_pixels" in numbers
        }
    )
    if raw:
        lines.append(
            f"| | raw pixels (same test subset and bank) | | | | | | | | "
            f"{fmt(raw['knn200_raw_pixels'])} | | |"
        )
    return "\n".join(lines + paired_lines(rows))


def paired_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Each variant minus `off` of the same mode, seed by seed: the anchor's effect alone."""
    pairs = [
        ([row["mode"], variant_label(row["variant"])], row["per_seed"], control["per_seed"])
        for row in rows.values()
        if row["variant"] != "off" and (control := rows.get(f"{row['mode']}/off")) is not None
    ]
    title = (
        "Paired difference variant − decay toward 0, same mode and seed (the anchor alone; "
        "points for accuracies):"
    )
    return paired_table(title, ["mode", "variant"], pairs, PAIRED_KEYS)


def build_parser() -> argparse.ArgumentParser:
    """The command line: config, variants, modes, seeds and where runs and tables go."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=ROOT / "benchmarks/configs/stress_simclr.yaml"
    )
    parser.add_argument("--variants", default="off,0.01,0.1", help="off or SIGMA0[:D_EPS], ...")
    parser.add_argument("--modes", default="decoupled,coupled", help="syre.mode values, ...")
    common_args.add_seeds(parser)
    parser.add_argument("--tag", default="stress_simclr")
    common_args.add_sweep(parser, "collapse_stress", threads_help="OMP_NUM_THREADS for each run")
    common_args.add_rerun(
        parser, force_help=None, collect_help="table and plots only", dry_run=False
    )
    common_args.add_results(parser, md_help="table goes here (default: its study page)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.config = args.config.resolve()
    variants = args.variants.split(",")
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"error: mode {mode!r} is not one of {', '.join(MODES)}")
    for variant in variants:
        variant_overrides(variant)  # refuse a malformed variant before hours of training
    if not args.collect_only:
        for seed in args.seeds:  # seed-major: an interrupted sweep has whole seeds
            for mode in modes:
                for variant in variants:
                    train_variant(mode, variant, seed, args)
    rows: dict[str, dict[str, Any]] = {}
    for mode in modes:
        for variant in variants:
            paths = {
                seed: run_dir_of(mode, variant, seed, args) / "metrics.json" for seed in args.seeds
            }
            metrics = {
                seed: json.loads(path.read_text()) for seed, path in paths.items() if path.is_file()
            }
            if metrics:
                per_seed = {seed: cell_numbers(m) for seed, m in metrics.items()}
                rows[f"{mode}/{variant}"] = {
                    "mode": mode,
                    "variant": variant,
                    "decay": decay_of(next(iter(metrics.values()))),
                    "seeds": sorted(per_seed),
                    "stats": summarize_rows(per_seed),
                    "per_seed": per_seed,
                }
    if not rows:
        raise SystemExit(f"error: no finished runs for tag {args.tag!r} in {args.output_dir}")
    args.results.mkdir(parents=True, exist_ok=True)
    spectra = {
        key: spectra_of(run_dir_of(row["mode"], row["variant"], row["seeds"][0], args))
        for key, row in rows.items()
    }
    for kind in ("projector", "backbone"):
        path = plot_spectra(
            {
                f"{row['mode']}: {variant_label(row['variant'])}": spectra[key][kind]
                for key, row in rows.items()
            },
            args.results / f"{args.tag}_{kind}_spectra.png",
            title=f"{args.tag}: {kind} (test subset, first seed of each row)",
        )
        print(f"wrote {path}")
    (args.results / f"{args.tag}.json").write_text(
        json.dumps(
            {"config": shown_path(args.config), "set": args.set, "rows": rows},
            indent=2,
        )
    )
    table = markdown(args, rows)
    write_block(args.tag, table, args.results_md or study_page(args.tag, "collapse_stress"))
    print(table)


if __name__ == "__main__":
    main()
