"""The end of a run: final evaluation, metrics.json, pictures and export, written whole.

Rank 0 runs it after training. Every file goes into a staging folder in the run directory
first and is then moved in by renames, metrics.json last (`atomic_write.publish`): a kill or
a full disk at any moment leaves each file either as it was or whole, and a metrics.json that
does not match last.ckpt tells a resume that the results are still to be written
(`resume.results_match`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from ssl_syre.atomic_write import publish, staging_folder
from ssl_syre.data import DataInfo, subset_record, whole_split
from ssl_syre.errors import UserError
from ssl_syre.evaluation.features import split_features
from ssl_syre.evaluation.prototypes import prototype_summary
from ssl_syre.evaluation.report import evaluate_features, format_results, summary_metrics
from ssl_syre.evaluation.symmetry import summary_of
from ssl_syre.evaluation.symmetry_report import diagnose_method, write_report
from ssl_syre.evaluation.umap_plot import write_umap
from ssl_syre.export import export_backbone
from ssl_syre.export.hub import push_export
from ssl_syre.methods import SSLMethod
from ssl_syre.training.callbacks import OnlineEvaluation
from ssl_syre.training.checkpoint import user_fixable_os_error
from ssl_syre.training.run_dir import EVAL_INDICES, EXPORT, METRICS


def finish(
    cfg: DictConfig,
    model: SSLMethod,
    info: DataInfo,
    eval_train: Dataset,
    eval_test: Dataset | None,
    run_dir: Path,
    online: OnlineEvaluation | None,
    started: float,
    distributed: dict[str, Any],
) -> dict[str, float]:
    """Final evaluation on cached features, metrics.json, spectrum plot and export (rank 0);
    returns the results as flat numbers for the loggers (`summary_metrics`).

    Every file is written into a staging folder in the run directory, then moved in by
    renames with metrics.json last (`atomic_write.publish`): a kill or a full disk leaves the
    previous files whole, and a metrics.json that does not match last.ckpt, which a resume
    with the same settings repairs (`resume.results_match`).
    """
    try:
        staging = staging_folder(run_dir, "results")
        return _finish(
            cfg, model, info, eval_train, eval_test, run_dir, staging, online, started, distributed
        )
    except OSError as error:
        cause = user_fixable_os_error(error)
        if cause is None:
            raise
        raise UserError(
            f"cannot write the results of run '{run_dir}' ({os.strerror(cause.errno)}); its "
            "checkpoints and every file it had written before are intact: fix this, then "
            f"resume={run_dir} with the same settings writes them"
        ) from None
    finally:
        if "staging" in locals():
            shutil.rmtree(staging, ignore_errors=True)


def _finish(
    cfg: DictConfig,
    model: SSLMethod,
    info: DataInfo,
    eval_train: Dataset,
    eval_test: Dataset | None,
    run_dir: Path,
    staging: Path,
    online: OnlineEvaluation | None,
    started: float,
    distributed: dict[str, Any],
) -> dict[str, float]:
    device = (
        "cuda" if torch.cuda.is_available() and cfg.trainer.get("accelerator") != "cpu" else "cpu"
    )
    model.to(device)
    kinds = ["backbone", "projector"] if cfg.eval.projector else ["backbone"]
    if cfg.eval.raw_pixel_baseline and info.num_classes > 0 and eval_test is not None:
        kinds.insert(0, "raw_pixels")  # the baseline's row first in metrics.json and the table
    train_features, test_features = split_features(
        model.backbone, model.project, cfg, kinds, device, datasets=(eval_train, eval_test)
    )
    results = evaluate_features(
        train_features, test_features, info.num_classes, cfg.eval, out_dir=staging
    )
    eval_data = eval_data_record(cfg, eval_train, eval_test, staging)
    metrics: dict[str, Any] = {
        "run": {
            "method": cfg.method,
            "backbone": cfg.backbone.name,
            "data": cfg.data.name,
            "syre": bool(cfg.syre.enabled),
            "decay": model.decay_summary(),
            "seed": cfg.seed,
            "epochs": model.current_epoch,
            "steps": model.global_step,
            "wall_time_s": round(time.time() - started, 1),
            **distributed,
            "build": build_record(device),
        },
        "eval_data": eval_data,
        **results,
        "online": online.history if online is not None else [],
    }
    if not model.syre.zero_anchors:
        prefixes = {part: f"{part}." for part in model.trainable_parts()}
        metrics["syre_distance_to_anchor"] = model.syre.distance_to_anchor(prefixes)
    # Weight diagnostics (dead, duplicated, low-rank units): symmetry.json/.png, totals here.
    symmetry = diagnose_method(model, eval_test if eval_test is not None else eval_train)
    write_report(symmetry, staging, title=f"{cfg.method}, {cfg.backbone.name}: {run_dir.name}")
    metrics["symmetry"] = summary_of(symmetry)
    prototypes = prototype_summary(model.prototype_weights())
    if prototypes:  # partial prototype collapse: distinct prototypes per prototype layer
        metrics["prototypes"] = prototypes
    if cfg.eval.umap and eval_test is not None:
        write_umap(
            test_features.by_kind["backbone"],
            test_features.labels if info.num_classes > 0 else None,
            staging / "umap.png",
            cfg.seed,
            cfg.eval.umap_points,
        )
    export_dir = None
    if cfg.export.enabled:
        knn = [r for r in results["knn"] if r["features"] == "backbone"]
        export_backbone(model, staging / EXPORT, extra={"knn": knn, "eval_data": eval_data})
        export_dir = run_dir / EXPORT
        metrics["export"] = str(export_dir.name)
    (staging / METRICS).write_text(json.dumps(metrics, indent=2))
    publish(staging, run_dir, last=(METRICS,))
    print()
    print(format_results(results))
    summary = headline(results, cfg)
    if summary:
        print(summary)
    print(
        f"run directory: {run_dir}  (metrics.json, spectrum.png, symmetry.png, checkpoints/, logs/"
        + (", export/)" if export_dir else ")")
    )
    if export_dir is not None and cfg.export.push_to_hub:
        url = push_export(export_dir, cfg.export.push_to_hub, cfg.export.private)
        print(f"pushed the export to the Hugging Face Hub: {url}")
    return summary_metrics(results, metrics["symmetry"])


def build_record(device: str) -> dict[str, Any]:
    """The software and hardware a run's numbers depend on, bit for bit.

    Same seed, same build: same numbers. Another CPU instruction set (AVX2 vs AVX-512 kernels),
    thread count or library version rounds floating-point sums differently, which moves kNN
    accuracy by about a point after a few epochs; recording the build makes that checkable.
    """
    import lightly
    import lightning
    import timm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "lightly": lightly.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


def eval_data_record(
    cfg: DictConfig, eval_train: Dataset, eval_test: Dataset | None, run_dir: Path
) -> dict[str, Any]:
    """Which images the final evaluation used: the kNN bank (train) and the queries (test).

    Each split's size, the size of the whole split and the rule that drew the subset go into
    metrics.json; the positions themselves go to eval_indices.json, so that the numbers can be
    reproduced from the export with timm alone.
    """
    record: dict[str, Any] = {
        "train": subset_record(eval_train, cfg.data.train_subset, cfg.seed),
    }
    indices = {"train": whole_split(eval_train)[1]}
    if eval_test is not None:
        record["test"] = subset_record(eval_test, cfg.data.test_subset, cfg.seed)
        indices["test"] = whole_split(eval_test)[1]
    (run_dir / EVAL_INDICES).write_text(json.dumps(indices))
    record["indices"] = EVAL_INDICES
    return record


def headline(results: dict[str, list[dict[str, Any]]], cfg: DictConfig) -> str:
    """One line: learned kNN accuracy beside the raw-pixel baseline, same split and protocol."""
    k = cfg.eval.knn_k[0]
    by_kind = {r["features"]: r for r in results["knn"] if r["k"] == k}
    if "backbone" not in by_kind:
        return ""
    line = f"kNN top-1 (test split, k={k}, t={cfg.eval.knn_t}): learned backbone {100 * by_kind['backbone']['top1']:.2f}%"
    if "raw_pixels" in by_kind:
        line += f" vs raw pixels {100 * by_kind['raw_pixels']['top1']:.2f}%"
    return line
