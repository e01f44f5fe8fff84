"""Backbone export in timm's own format, so that timm alone loads it (no ssl_syre needed).

`python -m ssl_syre.export CHECKPOINT [--out DIR] [--push-to-hub USER/NAME]` exports from any
ssl_syre checkpoint (and pushes it to the Hugging Face Hub, ssl_syre.export.hub; the command line is
export/__main__.py);
`load_model(PATH)` loads a run directory, checkpoint or export with its config, for eval/*.py.

An export directory holds config.json (architecture, model arguments, preprocessing, and an
`ssl_syre` section with method, SyRe settings, data, evaluation protocol and kNN results) and
model.safetensors: no pickle anywhere. Backbones with the small-image stem, which timm cannot
express, record `small_image_stem: true` in their model arguments, so that timm alone refuses
them loudly (an unexpected keyword argument) instead of loading the weights into a model
with the wrong stem; `load_backbone` rebuilds them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import load_file
from torch import Tensor, nn

from ssl_syre.atomic_write import publish, staging_folder
from ssl_syre.backbones import apply_small_image_stem
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
from ssl_syre.training.run_dir import (
    EXPORT,
    LAST_CHECKPOINT,
    METRICS,
    is_run_dir,
    last_checkpoint,
    run_dir_of,
)

if TYPE_CHECKING:
    from ssl_syre.methods import SSLMethod

EXPORT_KEY = "ssl_syre"  # our section in config.json; timm ignores keys it does not know


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
    section = {
        "method": cfg.method,
        "backbone": cfg.backbone.name,
        "small_image_stem": small_image_stem,
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
    if small_image_stem:
        # Not a timm argument: timm.create_model("local-dir:...") then fails with "unexpected
        # keyword argument 'small_image_stem'" rather than silently building the wrong stem
        # (test_resnet's stem has the same weight shapes either way).
        model_args["small_image_stem"] = True
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


def state_dict_mismatch(error: BaseException) -> str:
    """torch's load_state_dict error in one line: the first missing and unexpected key and
    the first shape mismatch (torch's own first line names none of them)."""
    text = str(error)
    parts = []
    for label, pattern in (
        ("missing", r'Missing key\(s\) in state_dict: "([^"]+)"'),
        ("unexpected", r'Unexpected key\(s\) in state_dict: "([^"]+)"'),
    ):
        found = re.search(pattern, text)
        if found:
            parts.append(f"{label} key '{found.group(1)}'")
    shape = re.search(
        r"size mismatch for ([^:]+): copying a param with shape torch.Size\((\[[^\]]*\])\) "
        r"from checkpoint, the shape in current model is torch.Size\((\[[^\]]*\])\)",
        text,
    )
    if shape:
        parts.append(f"'{shape.group(1)}' has shape {shape.group(2)}, the model {shape.group(3)}")
    if parts:
        return "; ".join(parts)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else type(error).__name__


def check_weights(weights: dict[str, Tensor], model: nn.Module, source: str | Path) -> None:
    """Refuse weights that would load silently wrong: NaN/inf, or a whole-number tensor where
    the model has a floating-point one (load_state_dict casts it, so 0.3 becomes 0).

    Raises:
        UserError: naming the first such tensor, checked before the weights are loaded.
    """
    expected = model.state_dict()
    for name, tensor in weights.items():
        if not isinstance(tensor, Tensor):
            continue
        wanted = expected.get(name)
        if wanted is not None and wanted.is_floating_point() and not tensor.is_floating_point():
            raise UserError(
                f"'{source}' holds '{name}' as {str(tensor.dtype).removeprefix('torch.')}, not "
                f"as floating-point weights ({str(wanted.dtype).removeprefix('torch.')}); these "
                "are not trained weights: re-export from the run's checkpoint"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(
                f"'{source}' holds NaN or inf in '{name}', so features from it mean nothing; use "
                "a checkpoint from before training diverged (checkpoints/epochNNN.ckpt)"
            )


def read_export_config(export_dir: str | Path) -> dict[str, Any]:
    """The parsed config.json of an export directory.

    Raises:
        UserError: no config.json there, or one that is not a JSON object.
    """
    path = Path(export_dir) / "config.json"
    if not path.is_file():
        raise UserError(
            f"'{export_dir}' is not an export directory (no config.json); pass DIR/export"
        )
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"'{path}' is not valid JSON ({error}); re-export the checkpoint") from None
    if not isinstance(config, dict):
        raise UserError(f"'{path}' does not hold a JSON object; re-export the checkpoint")
    return config


def load_backbone(export_dir: str | Path) -> nn.Module:
    """Rebuild an exported backbone, including stems timm cannot express (small_image_stem).

    Equivalent to `timm.create_model("local-dir:DIR", pretrained=True)` for exports without
    the small-image stem. Weights are read with safetensors (no pickle); the model is
    returned in eval mode.

    Raises:
        UserError: no config.json or model.safetensors, or weights that do not fit.
    """
    export_dir = Path(export_dir)
    config = read_export_config(export_dir)
    weights = export_dir / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"'{export_dir}' has no model.safetensors; re-export the checkpoint")
    if "architecture" not in config:
        raise UserError(f"'{export_dir / 'config.json'}' names no architecture; re-export it")
    if not isinstance(config["architecture"], str) or ":" in config["architecture"]:
        # timm reads 'hf-hub:NAME' and 'local-dir:PATH' as places to fetch weights from: a
        # local export that named one would make loading it reach for the Hub or another folder.
        raise UserError(
            f"'{export_dir / 'config.json'}' names architecture {config['architecture']!r}, not "
            "a timm model name (an export names one, e.g. 'resnet18'); re-export the checkpoint"
        )
    model_args = config.get("model_args", {})
    section = config.get(EXPORT_KEY, {})
    if not isinstance(model_args, dict) or not isinstance(section, dict):
        raise UserError(f"'{export_dir / 'config.json'}' is malformed; re-export the checkpoint")
    model_args = dict(model_args)
    model_args.pop("num_classes", None)
    small_image_stem = bool(model_args.pop("small_image_stem", False)) or bool(
        section.get("small_image_stem")
    )
    try:
        model = timm.create_model(
            config["architecture"],
            pretrained=False,
            num_classes=config.get("num_classes", 0),
            **model_args,
        )
    except (RuntimeError, TypeError, ValueError) as error:
        # An unknown architecture (another timm version) or arguments it does not take.
        raise UserError(
            f"timm {timm.__version__} cannot build '{config['architecture']}' as "
            f"'{export_dir / 'config.json'}' describes it ({str(error).splitlines()[0][:160]}); "
            "use the timm version that trained it, or re-export the checkpoint"
        ) from None
    if small_image_stem:
        apply_small_image_stem(model)
    try:
        state_dict = load_file(str(weights))
    except Exception as error:  # safetensors' SafetensorError: truncated, empty, not safetensors
        raise UserError(
            f"cannot read '{weights}': it is truncated or not a safetensors file "
            f"({str(error).splitlines()[0][:160]}); re-export the checkpoint"
        ) from None
    check_weights(state_dict, model, weights)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise UserError(
            f"weights in '{weights}' do not fit {config['architecture']} "
            f"({state_dict_mismatch(error)}); re-export the checkpoint"
        ) from None
    model.pretrained_cfg = {
        **getattr(model, "pretrained_cfg", {}),
        **config.get("pretrained_cfg", {}),
    }
    return model.eval()


def model_from_checkpoint(checkpoint: str | Path) -> tuple[SSLMethod, dict[str, Any]]:
    """Rebuild the SSL method (backbone and heads) of an ssl_syre checkpoint.

    The checkpoint is loaded with weights_only=True; its config and data description are
    the ones saved in it (`hyper_parameters["cfg"]`, `["info"]`).

    Returns:
        `(model, checkpoint dict)`; the model is on CPU.

    Raises:
        UserError: the file is missing, unreadable, or not an ssl_syre checkpoint.
    """
    from ssl_syre.methods import METHODS
    from ssl_syre.training.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    hparams = state.get("hyper_parameters", {}) if isinstance(state, dict) else {}
    if "cfg" not in hparams or "info" not in hparams or "state_dict" not in state:
        raise UserError(f"'{checkpoint}' is not an ssl_syre checkpoint (no config inside)")
    method = hparams["cfg"].get("method")
    if method not in METHODS:
        raise UserError(
            f"'{checkpoint}' was made by method '{method}', which this ssl_syre does not have"
        )
    model = METHODS[method](hparams["cfg"], hparams["info"])
    check_weights(state["state_dict"], model, checkpoint)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        raise UserError(
            f"weights in '{checkpoint}' do not fit its own config "
            f"({state_dict_mismatch(error)}); was it written by another ssl_syre version?"
        ) from None
    return model, state


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


def broken_export(export_dir: Path) -> str | None:
    """Why the export in `export_dir` cannot be loaded (the `load_backbone` error), or None.

    Broken means: config.json missing, not JSON or not describing the weights beside it,
    or model.safetensors missing, truncated or holding weights that do not fit. Such an
    export is what a kill or a full disk leaves; `export_checkpoint` replaces it.
    """
    try:
        load_backbone(export_dir)
    except UserError as error:
        return str(error)
    return None


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


# --------------------------------------------------------------------------------------------
# Loading a model and its config for evaluation (eval/knn.py, eval/linear_probe.py)

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
