"""Loading a model and its config for evaluation (eval/knn.py, eval/linear_probe.py,
ssl-syre-diagnose): `load_model(PATH)` takes a run directory, checkpoint or export."""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from ssl_syre.config import (
    Config,
    DataConfig,
    EvalConfig,
    SyReConfig,
    check_override_value,
    export_as_section,
    format_omegaconf_error,
    validate,
)
from ssl_syre.data import DataInfo
from ssl_syre.errors import UserError
from ssl_syre.export.load import (
    EXPORT_KEY,
    load_backbone,
    model_from_checkpoint,
    read_export_config,
)
from ssl_syre.training.run_dir import (
    EXPORT,
    is_run_dir,
    last_checkpoint,
    run_dir_of,
)

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
    """What a run directory, checkpoint or export resolves to.

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


def load_model(path: str | Path, overrides: list[str] | None = None) -> LoadedModel:
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
            return _loaded_from_export(path.parent, overrides)
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise UserError(f"'{path}' is not a checkpoint (.ckpt); pass {PATH_KINDS}")
        return _loaded_from_checkpoint(path, overrides)
    if last_checkpoint(path).is_file():
        return _loaded_from_checkpoint(last_checkpoint(path), overrides)
    if (path / "config.json").is_file():
        return _loaded_from_export(path, overrides)
    if (path / EXPORT / "config.json").is_file():
        print(f"note: '{path}' has no checkpoints/last.ckpt; using its export/", file=sys.stderr)
        return _loaded_from_export(path / EXPORT, overrides)
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
        check_override_value(item)


def merged_config(stored: dict[str, Any], overrides: list[str], origin: str) -> DictConfig:
    """The schema, then the config stored with the weights, then the allowed overrides."""
    check_overrides(overrides)
    schema = OmegaConf.structured(Config)
    try:
        cfg = OmegaConf.merge(schema, export_as_section(stored))
    except OmegaConfBaseException as error:
        raise UserError(
            f"the config saved in '{origin}' does not fit this version of ssl_syre "
            f"({format_omegaconf_error(error, schema)})"
        ) from None
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as error:
        raise UserError(format_omegaconf_error(error, schema)) from None
    cfg.resume = None  # a resumed run's directory is no business of an evaluation
    validate(cfg)
    if len(cfg.eval.knn_k) == 0:
        raise UserError("eval.knn_k is empty; give at least one k, e.g. eval.knn_k=[200]")
    return cfg


def _loaded_from_checkpoint(checkpoint: Path, overrides: list[str]) -> LoadedModel:
    model, state = model_from_checkpoint(checkpoint)
    hparams = state["hyper_parameters"]
    info = DataInfo(**hparams["info"])
    stored = copy.deepcopy(hparams["cfg"])
    if isinstance(stored.get("data"), dict):
        # The size the weights were trained at, as an export records it: a data.name=...
        # override must not switch to that data set's default size (data.image_size may).
        stored["data"]["image_size"] = info.image_size
    cfg = merged_config(stored, overrides, str(checkpoint))
    return LoadedModel(
        backbone=model.backbone,
        projector=model.project,
        modules=model,
        cfg=cfg,
        in_chans=info.in_chans,
        source="checkpoint",
        loaded=checkpoint,
        out_dir=run_dir_of(checkpoint),
        details={"epoch": state.get("epoch"), "steps": state.get("global_step")},
    )


def _dataclass_keys(schema: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(schema)}
    return {key: value for key, value in values.items() if key in names}


def _loaded_from_export(export_dir: Path, overrides: list[str]) -> LoadedModel:
    section = read_export_config(export_dir).get(EXPORT_KEY)
    if not isinstance(section, dict) or "method" not in section:
        raise UserError(
            f"'{export_dir}' is not an ssl_syre export (config.json has no '{EXPORT_KEY}' "
            "section); evaluate the run directory or checkpoint instead"
        )
    for key in ("syre", "data", "eval"):
        if not isinstance(section.get(key) or {}, dict):
            raise UserError(
                f"'{export_dir / 'config.json'}' has a malformed '{EXPORT_KEY}.{key}' section "
                "(not a JSON object); re-export the checkpoint"
            )
    backbone = load_backbone(export_dir)
    stored = {
        "method": section["method"],
        "backbone": {
            "name": section.get("backbone", "resnet18"),
            "small_image_stem": bool(section.get("small_image_stem", False)),
            "stem_max_pool": bool(section.get("stem_max_pool", True)),
        },
        "syre": _dataclass_keys(SyReConfig, section.get("syre") or {}),
        "data": _dataclass_keys(DataConfig, section.get("data") or {}),
        "eval": _dataclass_keys(EvalConfig, section.get("eval") or {}),
        "seed": section.get("seed", 0),
    }
    cfg = merged_config(stored, overrides, str(export_dir / "config.json"))
    parent = export_dir.resolve().parent
    return LoadedModel(
        backbone=backbone,
        projector=None,
        modules=backbone,
        cfg=cfg,
        in_chans=int(section.get("in_chans", 3)),
        source="export",
        loaded=export_dir,
        out_dir=parent if is_run_dir(parent) else export_dir,
        details={},
    )
