"""Collapse stress test: plain weight decay vs SyRe (several sigma0) in a collapse-prone setting.

Trains benchmarks/configs/stress_simclr.yaml (or --config) once per variant with train.py,
then reloads each run's final checkpoint, embeds the test subset and overlays the singular
value spectra of the projector outputs (and of the backbone features) of all variants with
`ssl_syre.evaluation.collapse.plot_spectra`. Prints RankMe, low-rankness, kNN and linear-probe
numbers from each run's metrics.json and writes them as JSON. Finished runs are skipped
unless --force.

Run: python benchmarks/collapse_stress.py [--variants off,0.01,0.1] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ssl_syre.data import build_eval_datasets  # noqa: E402
from ssl_syre.evaluation.collapse import plot_spectra, singular_value_spectrum  # noqa: E402
from ssl_syre.evaluation.features import eval_loader, extract_features  # noqa: E402
from ssl_syre.export import model_from_checkpoint  # noqa: E402


def variant_overrides(variant: str) -> list[str]:
    """'off' is plain weight decay; a number is SyRe with that sigma0 (same gamma)."""
    if variant == "off":
        return ["syre.enabled=false"]
    return ["syre.enabled=true", f"syre.sigma0={float(variant)}"]


def train_variant(variant: str, args: argparse.Namespace) -> Path:
    run_dir = Path(args.output_dir) / f"{args.tag}_{variant}"
    if (run_dir / "metrics.json").is_file() and not args.force:
        print(f"skip (done): {run_dir}", flush=True)
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        str(args.config),
        *variant_overrides(variant),
        f"seed={args.seed}",
        f"output_dir={args.output_dir}",
        f"run_name={run_dir.name}",
        "export=false",
        *args.set,
    ]
    print("$ " + " ".join(command), flush=True)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    with (Path(args.output_dir) / f"{run_dir.name}.log").open("w") as log:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"run failed (exit {result.returncode}); see {log.name}")
    return run_dir


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


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for record in metrics["collapse"]:
        row[f"rankme_{record['features']}"] = record["rankme"]
        row[f"dim_{record['features']}"] = record["dim"]
        row[f"lowrank_{record['features']}"] = record["low_rankness"]
    for record in metrics["knn"]:
        row[f"knn{record['k']}_{record['features']}"] = record["top1"]
    for record in metrics["linear_probe"]:
        row[f"linear_{record['features']}"] = record["top1"]
    row["wall_time_s"] = metrics["run"]["wall_time_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=ROOT / "benchmarks/configs/stress_simclr.yaml"
    )
    parser.add_argument("--variants", default="off,0.01,0.1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="stress_simclr")
    parser.add_argument("--set", nargs="*", default=[], help="extra train.py overrides")
    parser.add_argument("--output-dir", default=str(ROOT / "runs" / "collapse_stress"))
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for each run")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    variants = args.variants.split(",")
    run_dirs = {variant: train_variant(variant, args) for variant in variants}
    label = {v: "plain wd" if v == "off" else f"SyRe sigma0={v}" for v in variants}
    rows, spectra = {}, {}
    for variant, run_dir in run_dirs.items():
        rows[variant] = summary(json.loads((run_dir / "metrics.json").read_text()))
        spectra[variant] = spectra_of(run_dir)
    args.results.mkdir(parents=True, exist_ok=True)
    for kind in ("projector", "backbone"):
        path = plot_spectra(
            {label[v]: spectra[v][kind] for v in variants},
            args.results / f"{args.tag}_{kind}_spectra.png",
            title=f"{args.tag}: {kind} (test subset)",
        )
        print(f"wrote {path}")
    (args.results / f"{args.tag}.json").write_text(
        json.dumps({"config": str(args.config), "set": args.set, "rows": rows}, indent=2)
    )
    print(
        f"\n{'variant':<18}{'RankMe proj':>12}{'lowrank proj':>13}{'RankMe bb':>10}"
        f"{'kNN200 bb':>10}{'linear bb':>10}{'linear proj':>12}"
    )
    for variant, row in rows.items():
        print(
            f"{label[variant]:<18}{row.get('rankme_projector', 0):>12.1f}"
            f"{100 * row.get('lowrank_projector', 0):>12.1f}%{row.get('rankme_backbone', 0):>10.1f}"
            f"{100 * row.get('knn200_backbone', 0):>9.2f}%{100 * row.get('linear_backbone', 0):>9.2f}%"
            f"{100 * row.get('linear_projector', 0):>11.2f}%"
        )


if __name__ == "__main__":
    main()
