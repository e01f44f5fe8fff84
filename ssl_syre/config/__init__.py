"""Typed config schema, loading (YAML + dotted overrides) and validation with clear errors.

The schema lives in `schema`, YAML reading in `yaml_io`, the checks in `validation` and `checks`,
train.py's --help in `usage`; this module merges them into a config and re-exports their names.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_syre.config.checks import (  # noqa: F401 (re-exported: imported from config)
    _type_name,
    check_ranges,
    check_trainer_types,
    ranged,
)
from ssl_syre.config.schema import (  # noqa: F401 (re-exported)
    DEFAULT_CONFIG,
    BackboneConfig,
    Config,
    DataConfig,
    EvalConfig,
    ExportConfig,
    OptimizerConfig,
    SyReConfig,
)
from ssl_syre.config.validation import (  # noqa: F401 (re-exported)
    METHOD_DEFAULTS,
    REGISTRY_CHECKS,
    _check_choice,
    check_syre_parts,
    syre_mode,
    validate,
)
from ssl_syre.config.yaml_io import (  # noqa: F401 (re-exported)
    MAX_YAML_NODES,
    YamlTooLargeError,
    _parse_overrides,
    _read_yaml,
    check_override_value,
    export_as_section,
    safe_yaml,
)
from ssl_syre.errors import UserError, suggest_key


def format_omegaconf_error(error: OmegaConfBaseException, schema: DictConfig) -> str:
    """Turn an OmegaConf error into one line naming the key and, if possible, the fix."""
    key = getattr(error, "full_key", None) or ""
    message = getattr(error, "msg", None) or str(error).splitlines()[0]
    if "not in" in message or "Key '" in message and "not" in message:
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(schema, parent_key) if parent_key else schema
        choices = list(parent.keys()) if isinstance(parent, DictConfig) else []
        hint = suggest_key(key, [*_dotted_keys(schema), *(f"trainer.{k}" for k in _trainer_args())])
        return f"unknown config key '{key}'{hint}; valid keys here: {', '.join(map(str, choices))}"
    if key:
        return f"bad value for config key '{key}': {message.splitlines()[0]}"
    return message.splitlines()[0]


def _dotted_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config ('optimizer.lr', ...), sections included."""
    keys: list[str] = []
    for name in node.keys():
        key = f"{prefix}{name}"
        keys.append(key)
        child = node._get_node(name)  # no value access: '???' and interpolations stay unread
        if isinstance(child, DictConfig):
            keys += _dotted_keys(child, f"{key}.")
    return keys


def _trainer_args() -> list[str]:
    """The keyword arguments of lightning's Trainer: the valid `trainer.*` keys."""
    from lightning.pytorch import Trainer

    return sorted(set(inspect.signature(Trainer.__init__).parameters) - {"self"})


def _failing_interpolation(cfg: DictConfig) -> str | None:
    """The first dotted key whose ${...} interpolation cannot be resolved, or None."""
    for key in _dotted_keys(cfg):
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except OmegaConfBaseException:
            node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
            if not isinstance(node, DictConfig):
                return key
    return None


def load_config(
    path: str | Path | Sequence[str | Path] | None = None, overrides: list[str] | None = None
) -> DictConfig:
    """Merge schema defaults, YAML files in order and dotted overrides; validate; return a DictConfig.

    Several files compose: a later file's keys win (`configs/data/cifar10.yaml
    configs/method/vicreg.yaml`), and the overrides win over every file.

    Raises:
        UserError: the file is missing or not YAML, a key is unknown, a value has the wrong
            type, or a name (method, backbone, data set, trainer argument) is unknown.
    """
    schema = OmegaConf.structured(Config)
    paths = [path] if isinstance(path, str | Path) else list(path or [])
    layers = [_read_yaml(Path(p)) for p in paths]
    layers.append(_parse_overrides(list(overrides or [])))
    layers = [export_as_section(layer) for layer in layers]
    try:
        cfg = OmegaConf.merge(schema, *layers)
        layers = _without_other_methods_optimizer(layers, str(cfg.method), paths)
        cfg = OmegaConf.merge(schema, *layers)
        # The method's own recipe (VICReg: LARS) under the files and overrides, over the schema.
        recipe = _method_defaults(str(cfg.method), layers)
        if recipe:
            cfg = OmegaConf.merge(schema, recipe, *layers)
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or (
            _failing_interpolation(cfg) if "cfg" in locals() else None
        )
        if key and not getattr(error, "full_key", None):
            raise UserError(
                f"bad value for config key '{key}': its ${{...}} interpolation cannot be resolved "
                f"({str(error).splitlines()[0]}); give {key} a value"
            ) from None
        raise UserError(format_omegaconf_error(error, schema)) from None
    # Merging '???' over a default keeps the default, so look for it in the file itself.
    missing = sorted(
        key
        for index, layer in enumerate(layers[:-1])
        for key in OmegaConf.missing_keys(layer)
        if all(
            OmegaConf.select(later, key, default=None) in (None, "???")
            for later in layers[index + 1 :]
        )
    )
    if missing:
        raise UserError(f"config key '{missing[0]}' needs a value; add {missing[0]}=VALUE")
    validate(cfg)
    return cfg


def _without_other_methods_optimizer(
    layers: list[DictConfig], method: str, paths: list[str | Path]
) -> list[DictConfig]:
    """Drop the `optimizer` section of each file written for another method than the run's.

    A file's optimizer is tuned for the method it names (the quick start's lr for SimCLR); with
    `method=M` on the command line, M's own recipe (MAE's AdamW at 1.5e-4, VICReg's LARS) must
    apply, not SimCLR's lr. Overrides (the last layer) always stay.
    """
    kept = []
    for index, layer in enumerate(layers):
        named = OmegaConf.select(layer, "method")
        is_file = index < len(paths)
        if is_file and named is not None and str(named) != method and "optimizer" in layer:
            layer = OmegaConf.masked_copy(layer, [key for key in layer if key != "optimizer"])
            warnings.warn(
                f"{paths[index]}: its optimizer settings are for {named}, not {method}; "
                f"{method} uses its own recipe's (set optimizer.* to change them)",
                UserWarning,
                stacklevel=3,
            )
        kept.append(layer)
    return kept


def _method_defaults(method: str, layers: list[DictConfig]) -> dict[str, Any]:
    """A method's `config_defaults`, less each section whose `name` a file or override sets
    (a config that picks optimizer.name=sgd gets the schema's SGD lr, not LARS's)."""
    defaults: dict[str, Any] = {}
    for hook in METHOD_DEFAULTS:
        defaults.update(hook(method))
    return {
        section: values
        for section, values in defaults.items()
        if not any(OmegaConf.select(layer, f"{section}.name") is not None for layer in layers)
    }


def with_defaults(saved: dict[str, Any]) -> DictConfig:
    """A config saved by an older version, with this version's defaults for keys it lacks.

    Checkpoints and exports keep the config they were trained with; keys added since (e.g.
    syre.anchor_scale, data.augment_on) take their defaults, which reproduce the old behaviour.
    """
    saved = export_as_section(saved)
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), saved)  # type: ignore[return-value]
    except OmegaConfBaseException:  # a key this version no longer has: keep the file as it is
        return OmegaConf.create(saved)
