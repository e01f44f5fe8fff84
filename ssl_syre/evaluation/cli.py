"""Shared logic of eval/knn.py and eval/linear_probe.py: resolve PATH, extract features once,
evaluate, print a table and write the records as JSON.

PATH is a run directory (checkpoints/last.ckpt), a .ckpt file (its config is inside) or an
export directory (config.json + model.safetensors, backbone only). The data set and the
protocol come from the run's own config; `data.*`, `eval.*` and `seed` may be overridden
with dotted keys, the model may not (it is fixed by the weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from ssl_syre.config import Config, _format_omegaconf_error, validate
from ssl_syre.data import DataInfo, build_eval_datasets, data_info
from ssl_syre.errors import UserError, suggest
from ssl_syre.evaluation.features import Features, eval_loader, extract_features, raw_pixels
from ssl_syre.evaluation.report import (
    Records,
    format_results,
    knn_records,
    linear_probe_records,
)

FEATURE_KINDS = ("backbone", "projector", "raw_pixels")
# Everything else in the config describes the model, which the weights fix.
OVERRIDABLE_PREFIXES = ("data.", "eval.")
OVERRIDABLE_KEYS = ("seed",)
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
PATH_KINDS = (
    "a run directory (checkpoints/last.ckpt), a .ckpt file, or an export directory "
    "(config.json + model.safetensors)"
)


@dataclass
class LoadedModel:
    """What PATH resolves to.

    Attributes:
        backbone: The feature extractor (eval mode is set during extraction).
        projector: The method's projection head as a function of backbone features
            (`SSLMethod.project`), or None for an export, which holds the backbone only.
        modules: Every module to move to the device (the whole method, or the backbone).
        cfg: The run's config with the command line's overrides applied.
        in_chans: Input channels the backbone takes.
        source: "checkpoint" or "export".
        loaded: The file or directory the weights came from.
        out_dir: Where the JSON goes by default (the run directory when there is one).
        details: Facts about the weights for the JSON (epoch, steps).
    """

    backbone: nn.Module
    projector: Callable[[Tensor], Tensor] | None
    modules: nn.Module
    cfg: DictConfig
    in_chans: int
    source: str
    loaded: Path
    out_dir: Path
    details: dict[str, Any]


# --------------------------------------------------------------------------------------------
# PATH and config


def resolve(path: str | Path, overrides: list[str] | None = None) -> LoadedModel:
    """Load the model behind PATH and its config with `overrides` applied.

    Raises:
        UserError: PATH does not exist or is none of the three kinds, the checkpoint or
            export is unreadable, or an override is malformed, unknown or not allowed.
    """
    path = Path(path)
    overrides = list(overrides or [])
    check_overrides(overrides)  # before loading anything: fail fast
    if not path.exists():
        raise UserError(f"'{path}' does not exist; pass {PATH_KINDS}")
    if path.is_file():
        if path.name in ("config.json", "model.safetensors"):
            return _from_export(path.parent, overrides)
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise UserError(f"'{path}' is not a checkpoint (.ckpt); pass {PATH_KINDS}")
        return _from_checkpoint(path, overrides)
    if (path / "checkpoints" / "last.ckpt").is_file():
        return _from_checkpoint(path / "checkpoints" / "last.ckpt", overrides)
    if (path / "config.json").is_file():
        return _from_export(path, overrides)
    if (path / "export" / "config.json").is_file():
        print(f"note: '{path}' has no checkpoints/last.ckpt; using its export/", file=sys.stderr)
        return _from_export(path / "export", overrides)
    raise UserError(
        f"'{path}' holds no checkpoints/last.ckpt and no config.json; pass {PATH_KINDS}"
    )


def check_overrides(overrides: list[str]) -> None:
    """Only data.*, eval.* and seed: everything else describes the model, fixed by the weights."""
    for item in overrides:
        key, equals, _ = item.partition("=")
        if not equals or not key:
            raise UserError(f"cannot read argument '{item}': overrides look like dotted.key=value")
        if not (key.startswith(OVERRIDABLE_PREFIXES) or key in OVERRIDABLE_KEYS):
            raise UserError(
                f"cannot override '{key}' at evaluation: the weights fix the model; only data.*, "
                "eval.* and seed can change"
            )


def merged_config(stored: dict[str, Any], overrides: list[str], origin: str) -> DictConfig:
    """The schema, then the config stored with the weights, then the allowed overrides."""
    check_overrides(overrides)
    schema = OmegaConf.structured(Config)
    try:
        cfg = OmegaConf.merge(schema, stored)
    except OmegaConfBaseException as error:
        raise UserError(
            f"the config saved in '{origin}' does not fit this version of ssl_syre "
            f"({_format_omegaconf_error(error, schema)})"
        ) from None
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as error:
        raise UserError(_format_omegaconf_error(error, schema)) from None
    cfg.resume = None  # a resumed run's directory is no business of an evaluation
    validate(cfg)
    if len(cfg.eval.knn_k) == 0:
        raise UserError("eval.knn_k is empty; give at least one k, e.g. eval.knn_k=[200]")
    return cfg


def _run_dir_of(checkpoint: Path) -> Path:
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def _from_checkpoint(checkpoint: Path, overrides: list[str]) -> LoadedModel:
    from ssl_syre.export import model_from_checkpoint

    model, state = model_from_checkpoint(checkpoint)
    hparams = state["hyper_parameters"]
    cfg = merged_config(hparams["cfg"], overrides, str(checkpoint))
    info = DataInfo(**hparams["info"])
    return LoadedModel(
        backbone=model.backbone,
        projector=model.project,
        modules=model,
        cfg=cfg,
        in_chans=info.in_chans,
        source="checkpoint",
        loaded=checkpoint,
        out_dir=_run_dir_of(checkpoint),
        details={"epoch": state.get("epoch"), "steps": state.get("global_step")},
    )


def _dataclass_keys(schema: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(schema)}
    return {key: value for key, value in values.items() if key in names}


def _from_export(export_dir: Path, overrides: list[str]) -> LoadedModel:
    from ssl_syre.config import DataConfig, EvalConfig, SyReConfig
    from ssl_syre.export import EXPORT_KEY, load_backbone, read_export_config

    section = read_export_config(export_dir).get(EXPORT_KEY)
    if not isinstance(section, dict) or "method" not in section:
        raise UserError(
            f"'{export_dir}' is not an ssl_syre export (config.json has no '{EXPORT_KEY}' "
            "section); evaluate the run directory or checkpoint instead"
        )
    backbone = load_backbone(export_dir)
    stored = {
        "method": section["method"],
        "backbone": {
            "name": section.get("backbone", "resnet18"),
            "small_image_stem": bool(section.get("small_image_stem", False)),
        },
        "syre": _dataclass_keys(SyReConfig, section.get("syre") or {}),
        "data": _dataclass_keys(DataConfig, section.get("data") or {}),
        "eval": _dataclass_keys(EvalConfig, section.get("eval") or {}),
        "seed": section.get("seed", 0),
    }
    cfg = merged_config(stored, overrides, str(export_dir / "config.json"))
    parent = export_dir.resolve().parent
    is_run_dir = (parent / "config.yaml").is_file() or (parent / "checkpoints").is_dir()
    return LoadedModel(
        backbone=backbone,
        projector=None,
        modules=backbone,
        cfg=cfg,
        in_chans=int(section.get("in_chans", 3)),
        source="export",
        loaded=export_dir,
        out_dir=parent if is_run_dir else export_dir,
        details={},
    )


# --------------------------------------------------------------------------------------------
# Features


def parse_kinds(text: str) -> list[str]:
    """'backbone,projector' -> ['backbone', 'projector'], checked against FEATURE_KINDS."""
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    if not kinds:
        raise UserError(f"--features is empty; choose from {', '.join(FEATURE_KINDS)}")
    for kind in kinds:
        if kind not in FEATURE_KINDS:
            raise UserError(
                f"unknown feature kind '{kind}'{suggest(kind, FEATURE_KINDS)}; "
                f"choose from {', '.join(FEATURE_KINDS)}"
            )
    return list(dict.fromkeys(kinds))


def extract(
    loaded: LoadedModel, kinds: list[str], device: str
) -> tuple[Features, Features, DataInfo]:
    """Features of the train and test splits for every kind in `kinds`, extracted once.

    The same datasets, eval transform and batch size as the end of training, so that the
    numbers of metrics.json are reproduced exactly from the same weights.

    Raises:
        UserError: projector features of an export, a channel mismatch, or data without
            labels or without a test split.
    """
    cfg = loaded.cfg
    if "projector" in kinds and loaded.projector is None:
        raise UserError(
            f"'{loaded.loaded}' is an export, which holds the backbone only; evaluate the run "
            "directory or its checkpoint for projector features"
        )
    info = data_info(cfg.data)
    if info.in_chans != loaded.in_chans:
        raise UserError(
            f"the backbone takes {loaded.in_chans}-channel images and data.name={info.name} has "
            f"{info.in_chans}; evaluate on a data set with {loaded.in_chans} channel(s)"
        )
    train_set, test_set = build_eval_datasets(cfg.data, cfg.seed)
    if test_set is None:
        raise UserError(
            f"data set '{info.name}' has no test split to evaluate on; set data.test_root=FOLDER"
        )
    if info.num_classes <= 0:
        raise UserError(
            f"data set '{info.name}' is unlabelled here (data.labelled=false): kNN and the "
            "linear probe need class labels; pass data.labelled=true with class sub-folders"
        )
    for dataset in (train_set, test_set):
        labels = getattr(dataset, "labels", None)
        if labels is not None and len(labels) and labels.min() < 0:
            raise UserError(f"data set '{info.name}' has unlabelled samples; kNN needs labels")
    batch = int(cfg.eval.batch_size)
    splits: list[Features] = []
    learned = [kind for kind in kinds if kind != "raw_pixels"]
    if learned:
        loaded.modules.to(device)
        projector = loaded.projector if "projector" in learned else None
        for dataset, split in ((train_set, "train"), (test_set, "test")):
            features = extract_features(
                loaded.backbone,
                eval_loader(dataset, batch),
                projector=projector,
                device=device,
                progress=f"features ({split})",
            )
            splits.append(features)
    if "raw_pixels" in kinds:
        raw_train, raw_test = build_eval_datasets(cfg.data, cfg.seed, normalize=False)
        raw = [raw_pixels(eval_loader(raw_train, batch)), raw_pixels(eval_loader(raw_test, batch))]
        splits = splits or raw
        for features, pixels in zip(splits, raw, strict=True):
            features.by_kind.update(pixels.by_kind)
    for features in splits:
        features.by_kind = {kind: features.by_kind[kind] for kind in kinds}
    train, test = splits
    return train, test, info


# --------------------------------------------------------------------------------------------
# The command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if "required: path" in message:  # argparse also names the optional overrides there
            message = f"pass PATH: {PATH_KINDS}"
        raise UserError(f"{message}; see {self.prog} --help")


def parse_args(protocol: str, argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog=f"python eval/{protocol}.py",
        description=(
            f"{'Weighted kNN' if protocol == 'knn' else 'Linear probe'} on frozen features of "
            f"{PATH_KINDS}. Data set and protocol come from the run's config; override them "
            "with dotted keys, e.g. eval.knn_k=[10,200] eval.knn_t=0.07 data.test_subset=1000."
        ),
    )
    parser.add_argument("path", help="run directory, .ckpt file or export directory")
    parser.add_argument("overrides", nargs="*", help="data.*, eval.* or seed as dotted.key=value")
    parser.add_argument(
        "--features",
        default="backbone",
        help=f"comma-separated feature kinds from {', '.join(FEATURE_KINDS)} (default: backbone)",
    )
    parser.add_argument(
        "--out", default=None, help=f"JSON path (default: RUN_DIR/eval_{protocol}.json)"
    )
    parser.add_argument(
        "--device", default=None, help="cuda or cpu (default: cuda when available, else cpu)"
    )
    return parser.parse_intermixed_args(argv)


def evaluate(protocol: str, argv: list[str]) -> dict[str, Any]:
    """Run `protocol` ("knn" or "linear_probe") as the command line asks; return the JSON."""
    args = parse_args(protocol, argv)
    kinds = parse_kinds(args.features)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but torch sees no GPU; pass --device cpu")
    loaded = resolve(args.path, args.overrides)
    train, test, info = extract(loaded, kinds, device)
    cfg = loaded.cfg
    if protocol == "knn":
        records: Records = knn_records(train, test, info.num_classes, cfg.eval, kinds, device)
    else:
        learned = [kind for kind in kinds if kind != "raw_pixels"]
        if not learned:
            raise UserError("the linear probe is for learned features; pass --features backbone")
        records = linear_probe_records(train, test, info.num_classes, cfg.eval, learned, device)
    payload = {
        "evaluated": {
            "path": str(args.path),
            "source": loaded.source,
            "loaded": str(loaded.loaded),
            **loaded.details,
            "method": cfg.method,
            "backbone": cfg.backbone.name,
            "data": cfg.data.name,
            "train_size": len(train.labels),
            "test_size": len(test.labels),
            "seed": cfg.seed,
            "overrides": list(args.overrides),
            "device": device,
        },
        protocol: records,
    }
    out = Path(args.out) if args.out else loaded.out_dir / f"eval_{protocol}.json"
    if out.is_dir():
        out = out / f"eval_{protocol}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(format_results({protocol: records}))
    print(f"wrote {out}")
    return payload


def main_knn(argv: list[str]) -> dict[str, Any]:
    return evaluate("knn", argv)


def main_linear_probe(argv: list[str]) -> dict[str, Any]:
    return evaluate("linear_probe", argv)
