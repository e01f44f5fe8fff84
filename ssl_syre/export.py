"""Backbone export in timm's own format, so that timm alone loads it (no ssl_syre needed).

`python -m ssl_syre.export CHECKPOINT [--out DIR]` exports from any ssl_syre checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import timm
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn

from ssl_syre.backbones import apply_small_image_stem
from ssl_syre.errors import UserError, run_cli

EXPORT_KEY = "ssl_syre"  # our section in config.json; timm ignores keys it does not know


def export_backbone(model: Any, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write config.json + model.safetensors for `model.backbone` with `timm.models.save_for_hf`.

    config.json carries the preprocessing (input size, mean, std) and the model arguments, so
    `timm.create_model("local-dir:DIR", pretrained=True)` rebuilds the backbone; its
    `ssl_syre` section records method, SyRe settings, data and results (`extra`).
    """
    out_dir = Path(out_dir)
    cfg, info = model.cfg, model.info
    backbone = copy.deepcopy(model.backbone).cpu().float().eval()
    data_config = {
        "input_size": (info.in_chans, info.image_size, info.image_size),
        "mean": tuple(info.mean),
        "std": tuple(info.std),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    section = {
        "method": cfg.method,
        "backbone": cfg.backbone.name,
        "small_image_stem": bool(cfg.backbone.small_image_stem),
        "in_chans": info.in_chans,
        "syre": OmegaConf.to_container(cfg.syre, resolve=True),
        "data": {"name": info.name, "image_size": info.image_size, "num_classes": info.num_classes},
        "seed": cfg.seed,
        **(extra or {}),
    }
    section = json.loads(json.dumps(section, default=str))  # plain JSON types only
    timm.models.save_for_hf(
        backbone,
        str(out_dir),
        model_config={EXPORT_KEY: section},
        model_args={"in_chans": info.in_chans, **dict(model.backbone_kwargs)},
        safe_serialization=True,
        data_config=data_config,
    )
    return out_dir


def read_export_config(export_dir: str | Path) -> dict[str, Any]:
    path = Path(export_dir) / "config.json"
    if not path.is_file():
        raise UserError(
            f"'{export_dir}' is not an export directory (no config.json); pass DIR/export"
        )
    return json.loads(path.read_text())


def load_backbone(export_dir: str | Path) -> nn.Module:
    """Rebuild an exported backbone, including stems timm cannot express (small_image_stem).

    Equivalent to `timm.create_model("local-dir:DIR", pretrained=True)` for exports without
    the small-image stem.
    """
    export_dir = Path(export_dir)
    config = read_export_config(export_dir)
    weights = export_dir / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"'{export_dir}' has no model.safetensors; re-export the checkpoint")
    model_args = dict(config.get("model_args", {}))
    model_args.pop("num_classes", None)
    model = timm.create_model(
        config["architecture"],
        pretrained=False,
        num_classes=config.get("num_classes", 0),
        **model_args,
    )
    if config.get(EXPORT_KEY, {}).get("small_image_stem"):
        apply_small_image_stem(model)
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as error:
        raise UserError(
            f"weights in '{weights}' do not fit {config['architecture']}: {str(error).splitlines()[0]}"
        ) from None
    model.pretrained_cfg = {
        **getattr(model, "pretrained_cfg", {}),
        **config.get("pretrained_cfg", {}),
    }
    return model.eval()


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None) -> Path:
    """Export the backbone of an ssl_syre checkpoint (loaded with weights_only=True)."""
    from ssl_syre.checkpoint import load_checkpoint
    from ssl_syre.methods import METHODS

    state = load_checkpoint(checkpoint)
    hparams = state.get("hyper_parameters", {})
    if "cfg" not in hparams or "info" not in hparams:
        raise UserError(f"'{checkpoint}' is not an ssl_syre checkpoint (no config inside)")
    method_cls = METHODS[hparams["cfg"]["method"]]
    model = method_cls(hparams["cfg"], hparams["info"])
    model.load_state_dict(state["state_dict"])
    out = Path(out_dir) if out_dir else Path(checkpoint).resolve().parent.parent / "export"
    if (out / "model.safetensors").exists():
        raise UserError(f"export directory '{out}' already holds an export; pass --out NEW_DIR")
    return export_backbone(model, out)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m ssl_syre.export", description=__doc__)
    parser.add_argument("checkpoint", help="an ssl_syre .ckpt file")
    parser.add_argument("--out", default=None, help="export directory (default: RUN_DIR/export)")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out)
    print(
        f"exported backbone to {out}; load it with timm.create_model('local-dir:{out}', pretrained=True)"
    )


if __name__ == "__main__":
    run_cli(main)
