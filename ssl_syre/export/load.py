"""Reading exports and checkpoints back: the backbone of an export (`load_backbone`), the SSL
method of a checkpoint (`model_from_checkpoint`), and the checks that refuse weights which
would load silently wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ssl_syre.backbones import apply_custom_stem, custom_stem
from ssl_syre.errors import UserError

if TYPE_CHECKING:
    from ssl_syre.methods import SSLMethod

EXPORT_KEY = "ssl_syre"  # our section in config.json; timm ignores keys it does not know


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


def exported_stem(config: dict[str, Any]) -> dict[str, bool]:
    """The stems timm cannot express (`custom_stem`) of an export's config.json, from its model
    arguments or, for exports written before they carried them, its `ssl_syre` section."""
    model_args = config.get("model_args") or {}
    section = config.get(EXPORT_KEY) or {}
    return custom_stem(
        bool(model_args.get("small_image_stem") or section.get("small_image_stem")),
        bool(model_args.get("stem_max_pool", True) and section.get("stem_max_pool", True)),
    )


def load_backbone(export_dir: str | Path) -> nn.Module:
    """Rebuild an exported backbone, including stems timm cannot express (`custom_stem`).

    Equivalent to `timm.create_model("local-dir:DIR", pretrained=True)` for exports with
    timm's own stem. Weights are read with safetensors (no pickle); the model is
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
    stem = exported_stem(config)
    model_args = {
        key: value
        for key, value in model_args.items()
        if key not in ("num_classes", "small_image_stem", "stem_max_pool")
    }
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
    apply_custom_stem(model, **stem)
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
