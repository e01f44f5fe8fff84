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
    """The config checks that need the registries: method and its kwargs, data set name.

    Wired here, at the top of the package, because ssl_syre.config sits below the registries
    (they import its dataclasses); the registries import torch, so they load at the first check.
    """
    from ssl_syre.data import check_config as check_data
    from ssl_syre.methods import check_config as check_method

    check_method(cfg)
    check_data(cfg)


config.REGISTRY_CHECKS.append(_check_registry_names)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssl_syre' has no attribute {name!r}")
