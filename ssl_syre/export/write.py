"""Writing an export: a backbone in timm's own format (`export_backbone`), from a live model
or from a checkpoint (`export_checkpoint`), written whole or not at all."""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
from omegaconf import OmegaConf

from ssl_syre.atomic_write import publish, staging_folder
from ssl_syre.backbones import custom_stem
from ssl_syre.errors import UserError
from ssl_syre.export.load import (
    EXPORT_KEY,
    broken_export,
    model_from_checkpoint,
)
from ssl_syre.training.run_dir import (
    EXPORT,
    LAST_CHECKPOINT,
    METRICS,
    run_dir_of,
)

if TYPE_CHECKING:
    from ssl_syre.methods import SSLMethod


def export_backbone(
    model: SSLMethod, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write config.json + model.safetensors for `model.backbone` with `timm.models.save_for_hf`.

    config.json carries the preprocessing (input size, mean, std) and the model arguments, so
    `timm.create_model("local-dir:DIR", pretrained=True)` rebuilds the backbone; its
    `ssl_syre` section records method, SyRe settings, data and results (`extra`).
    """
    out_dir = Path(out_dir)
    cfg, info = model.cfg, model.info
    # contiguous_format: safetensors refuses channels_last (strided) tensors.
    backbone = copy.deepcopy(model.backbone).cpu().float().eval()
    backbone.to(memory_format=torch.contiguous_format)
    data_config = {
        "input_size": (info.in_chans, info.image_size, info.image_size),
        "mean": tuple(info.mean),
        "std": tuple(info.std),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    small_image_stem = bool(cfg.backbone.small_image_stem)
    stem = custom_stem(
        small_image_stem, cfg.backbone.stem_max_pool, has_max_pool=hasattr(backbone, "maxpool")
    )
    section = {
        "method": cfg.method,
        "backbone": cfg.backbone.name,
        "small_image_stem": small_image_stem,
        "stem_max_pool": "stem_max_pool" not in stem,  # false only where a pool was dropped
        "in_chans": info.in_chans,
        "syre": OmegaConf.to_container(cfg.syre, resolve=True),
        # The whole data section (root, subsets, ...) so that eval/knn.py can rebuild the
        # evaluation data from an export alone; image_size and num_classes as resolved.
        "data": {
            **OmegaConf.to_container(cfg.data, resolve=True),
            "name": info.name,
            "image_size": info.image_size,
            "num_classes": info.num_classes,
        },
        "eval": OmegaConf.to_container(cfg.eval, resolve=True),
        "seed": cfg.seed,
        **(extra or {}),
    }
    section = json.loads(json.dumps(section, default=str))  # plain JSON types only
    model_args = {"in_chans": info.in_chans, **dict(model.backbone_kwargs)}
    # Not timm arguments: timm.create_model("local-dir:...") then fails with "unexpected
    # keyword argument 'small_image_stem'" (or 'stem_max_pool') rather than silently building
    # the wrong stem (the weight shapes are the same either way).
    model_args.update(stem)
    # Written whole or not at all: timm writes into a staging folder beside out_dir, whose
    # files then replace the export's one by one (config.json last), each by a rename.
    staging = staging_folder(out_dir.parent, out_dir.name)
    try:
        timm.models.save_for_hf(
            backbone,
            str(staging),
            model_config={EXPORT_KEY: section},
            model_args=model_args,
            safe_serialization=True,
            data_config=data_config,
        )
        publish(staging, out_dir, last=("config.json",))  # gives model.safetensors umask's mode
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _final_results(checkpoint: Path, state: dict[str, Any]) -> dict[str, Any] | None:
    """The backbone kNN records of metrics.json and the images they used (`eval_data`), as
    train.py's export holds them, when they describe this checkpoint's weights (the run's
    last.ckpt at the step metrics.json reports)."""
    metrics_path = run_dir_of(checkpoint) / METRICS
    if checkpoint.name != LAST_CHECKPOINT or not metrics_path.is_file():
        return None
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        return None
    if metrics.get("run", {}).get("steps") != state.get("global_step"):
        return None
    knn = [r for r in metrics.get("knn", []) if r.get("features") == "backbone"]
    if not knn:
        return None
    return {"knn": knn, **({"eval_data": metrics["eval_data"]} if "eval_data" in metrics else {})}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None) -> Path:
    """Export the backbone of an ssl_syre checkpoint (loaded with weights_only=True).

    Args:
        checkpoint: An ssl_syre .ckpt file.
        out_dir: Where to write; default RUN_DIR/export next to the run's checkpoints/.

    Raises:
        UserError: a bad checkpoint, or `out_dir` already holds an export that loads (never
            overwritten; a broken one, `broken_export`, is replaced).
    """
    checkpoint = Path(checkpoint)
    out = Path(out_dir) if out_dir else run_dir_of(checkpoint.resolve()) / EXPORT
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out}' is a file, not a directory; pass --out NEW_DIR")
    broken = None
    if (out / "model.safetensors").exists() or (out / "config.json").exists():
        broken = broken_export(out)
        if broken is None:
            raise UserError(
                f"export directory '{out}' already holds an export that loads; pass --out NEW_DIR"
            )
    model, state = model_from_checkpoint(checkpoint)
    if broken is not None:
        print(f"note: replacing the broken export in '{out}' ({broken})", file=sys.stderr)
    try:
        return export_backbone(model, out, extra=_final_results(checkpoint.resolve(), state))
    except OSError as error:
        raise UserError(
            f"cannot write the export to '{out}' ({error.strerror or error}); "
            "pass --out NEW_DIR in a writable folder"
        ) from None
