"""ssl_syre: self-supervised learning with SyRe symmetry removal (lightly + timm + Lightning)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ssl_syre import config

if TYPE_CHECKING:
    from omegaconf import DictConfig

__version__ = "0.1.0"
__all__ = ["SyRe", "rankme", "load_backbone"]

# Public names resolve lazily, so `import ssl_syre.config` does not pull in torch and faiss.
_EXPORTS = {
    "SyRe": "ssl_syre.syre",
    "rankme": "ssl_syre.evaluation.collapse",
    "load_backbone": "ssl_syre.export",
}


def _check_registry_names(cfg: DictConfig) -> None:
    """The config checks that need modules above ssl_syre.config: method and its kwargs, data
    set name, loggers, the Hub push settings.

    Wired here, at the top of the package, because ssl_syre.config sits below the registries
    (they import its dataclasses); the registries import torch, so they load at the first check.
    """
    from ssl_syre.data import check_config as check_data
    from ssl_syre.export.hub import check_push_settings
    from ssl_syre.methods import check_config as check_method
    from ssl_syre.training.loggers import check_logger_settings

    check_method(cfg)
    check_data(cfg)
    check_logger_settings(cfg)
    check_push_settings(cfg)


def _method_defaults(method: str) -> dict[str, Any]:
    from ssl_syre.methods import config_defaults

    return config_defaults(method)


config.REGISTRY_CHECKS.append(_check_registry_names)
config.METHOD_DEFAULTS.append(_method_defaults)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssl_syre' has no attribute {name!r}")
