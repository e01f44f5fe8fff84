"""Publishing an export on the Hugging Face Hub with timm's `push_to_hf_hub`.

The export is already in timm's format; pushing it through timm writes the same config.json
(architecture, model arguments, preprocessing as `pretrained_cfg`, our `ssl_syre` section)
and model.safetensors, so `timm.create_model("hf-hub:USER/NAME", pretrained=True)` rebuilds
the backbone with its preprocessing, no ssl_syre needed. `python -m ssl_syre.export RUN
--push-to-hub USER/NAME` pushes an existing run; `export.push_to_hub=USER/NAME` pushes at the
end of training. A push that fails (offline, no token) is one line; the local export stays.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_syre.backbones import custom_stem, has_stem_max_pool
from ssl_syre.errors import UserError
from ssl_syre.export import (
    EXPORT_KEY,
    export_checkpoint,
    load_backbone,
    read_export_config,
)
from ssl_syre.export.load import exported_stem
from ssl_syre.training.run_dir import EXPORT, last_checkpoint, run_dir_of

# The Hub's rule for repository ids: owner/name, letters, digits, '-', '_', '.'.
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# pretrained_cfg keys that describe preprocessing: handed to save_for_hf as data_config.
DATA_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
TOKEN_FIX = "log in with `hf auth login` (or set HF_TOKEN)"


def check_repo_id(repo_id: str, where: str) -> None:
    """Raises UserError unless `repo_id` looks like USER/NAME."""
    if not REPO_ID.match(str(repo_id)):
        raise UserError(
            f"{where}='{repo_id}' is not a Hub repository id; give USER/NAME "
            "(letters, digits, '-', '_', '.')"
        )


def check_push_settings(cfg: DictConfig) -> None:
    """Check `export.push_to_hub` against the rest of the config (no network).

    Raises:
        UserError: a malformed repository id, a push without an export, or a backbone with
            a stem timm alone cannot rebuild from the Hub (`custom_stem`).
    """
    repo = cfg.export.push_to_hub
    if repo is None:
        return
    check_repo_id(repo, "export.push_to_hub")
    if not cfg.export.enabled:
        raise UserError("export.push_to_hub needs export.enabled=true: it pushes the export")
    backbone = cfg.backbone
    stem = custom_stem(
        backbone.small_image_stem,
        backbone.stem_max_pool,
        # The meta-device build only where it matters (stem_max_pool=false).
        has_max_pool=backbone.stem_max_pool
        or has_stem_max_pool(backbone.name, OmegaConf.to_container(backbone.kwargs)),
    )
    if stem:
        setting = ", ".join(f"backbone.{key}={str(value).lower()}" for key, value in stem.items())
        raise UserError(
            f"export.push_to_hub: timm alone cannot build this stem ({setting}), so "
            "timm.create_model('hf-hub:...') would refuse the upload; share the export folder "
            "instead, or drop export.push_to_hub"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def check_hub_ready(repo_id: str) -> None:
    """Check, before training, that a push can work: a token, and the Hub accepts it.

    Raises:
        UserError: no token, the Hub unreachable (offline), or the token refused.
    """
    import huggingface_hub

    token = huggingface_hub.get_token()
    if token is None:
        raise UserError(
            f"export.push_to_hub={repo_id} needs a Hugging Face token; {TOKEN_FIX}, or drop "
            "export.push_to_hub and push later with python -m ssl_syre.export RUN --push-to-hub"
        )
    try:
        huggingface_hub.HfApi().whoami(token=token)
    except Exception as error:  # httpx connection errors, HfHubHTTPError (401), offline mode
        raise UserError(
            f"export.push_to_hub={repo_id}: cannot reach the Hugging Face Hub or it refuses the "
            f"token ({_first_line(error)}); connect and {TOKEN_FIX}, or drop export.push_to_hub "
            "and push later with python -m ssl_syre.export RUN --push-to-hub"
        ) from None


def push_backbone(
    backbone: Any,
    repo_id: str,
    config: dict[str, Any],
    section: dict[str, Any],
    export_dir: Path,
    private: bool = False,
) -> str:
    """Push a backbone rebuilt from an export (its `config` and `section`, the export's own
    config.json and its ssl_syre part) with timm's push_to_hf_hub, so the uploaded config.json
    equals the local one; only safetensors weights are uploaded.

    Returns:
        The URL of the commit.

    Raises:
        UserError: the upload failed (the export is left as it is).
    """
    from timm.models import push_to_hf_hub

    model_args = dict(config.get("model_args") or {})
    pretrained_cfg = config.get("pretrained_cfg") or {}
    data_config = {key: pretrained_cfg[key] for key in DATA_KEYS if key in pretrained_cfg}
    try:
        url = push_to_hf_hub(
            backbone,
            repo_id,
            commit_message="Add ssl_syre backbone",
            private=private,
            model_config={EXPORT_KEY: section},
            model_args=model_args,
            model_card=model_card(section, config, repo_id),
            task_name="image-feature-extraction",
            safe_serialization=True,
            data_config=data_config,
        )
    except Exception as error:  # httpx errors offline, HfHubHTTPError, missing token
        raise UserError(
            f"cannot push '{export_dir}' to the Hugging Face Hub as {repo_id} "
            f"({_first_line(error)}); the local export is kept: connect, {TOKEN_FIX}, and "
            f"run python -m ssl_syre.export {export_dir} --push-to-hub {repo_id}"
        ) from None
    return str(url)


def model_card(section: dict[str, Any], config: dict[str, Any], repo_id: str) -> dict[str, Any]:
    """The README timm writes for a new repository: what trained the backbone, and how."""
    syre = section.get("syre") or {}
    details: dict[str, Any] = {
        "Model Type": "Image feature backbone (self-supervised)",
        "Architecture": config.get("architecture"),
        "Method": section.get("method"),
        "SyRe": (
            f"decay toward a random anchor, sigma0={syre.get('sigma0')}"
            if syre.get("enabled")
            else "off (decay toward 0)"
        ),
        "Dataset": (section.get("data") or {}).get("name", "unknown"),
    }
    knn = section.get("knn") or []
    if knn:
        details["kNN top-1 (test split)"] = {
            f"k={r.get('k')}, t={r.get('t', r.get('temperature'))}": r.get("top1") for r in knn
        }
    return {
        "description": "A backbone pre-trained with ssl_syre (lightly + timm + Lightning).",
        "details": details,
        "usage": (
            f"```python\nimport timm\nmodel = timm.create_model('hf-hub:{repo_id}', pretrained=True)\n"
            "config = timm.data.resolve_data_config({}, model=model)\n```"
        ),
        "tags": ["image-feature-extraction", "timm", "self-supervised"],
        "license": "mit",
    }


def push_export(export_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Push an export directory to the Hub repository `repo_id` with timm's push_to_hf_hub.

    The backbone is rebuilt from the export (safetensors, no pickle) and handed to timm with
    the export's model arguments, preprocessing and `ssl_syre` section, so the uploaded
    config.json equals the local one; only safetensors weights are uploaded.

    Returns:
        The URL of the commit.

    Raises:
        UserError: not a pushable export, or the upload failed (the export is left as it is).
    """
    export_dir = Path(export_dir)
    check_repo_id(repo_id, "--push-to-hub")
    config = read_export_config(export_dir)
    if exported_stem(config):
        raise UserError(
            f"'{export_dir}' has a stem timm alone cannot build (small-image stem or no stem "
            "max-pool), so timm.create_model('hf-hub:...') would refuse it; share the export "
            "folder instead"
        )
    backbone = load_backbone(export_dir)
    return push_backbone(backbone, repo_id, config, config.get(EXPORT_KEY, {}), export_dir, private)


def export_and_push(path: Path, out: str | None, repo_id: str, private: bool) -> str:
    """`python -m ssl_syre.export PATH --push-to-hub USER/NAME`: push PATH's export.

    PATH is an export directory, a run directory (its export/, made from checkpoints/last.ckpt
    when missing) or a checkpoint (exported to `out` or RUN/export first when that holds none).
    """
    check_repo_id(repo_id, "--push-to-hub")
    if (path / "config.json").is_file():
        export_dir = path
    else:
        checkpoint = last_checkpoint(path) if path.is_dir() else path
        export_dir = Path(out) if out else run_dir_of(checkpoint.resolve()) / EXPORT
        if not (export_dir / "config.json").is_file():
            export_dir = export_checkpoint(checkpoint, export_dir)
            print(f"exported backbone to {export_dir}")
    url = push_export(export_dir, repo_id, private)
    print(
        f"pushed {export_dir} to {url}; load it with "
        f"timm.create_model('hf-hub:{repo_id}', pretrained=True)"
    )
    return url
