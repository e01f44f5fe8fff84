"""ssl_syre: self-supervised learning with SyRe symmetry removal (lightly + timm + Lightning)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SyRe", "rankme", "load_backbone"]

# Public names resolve lazily, so `import ssl_syre.config` does not pull in torch and faiss.
_EXPORTS = {
    "SyRe": "ssl_syre.syre",
    "rankme": "ssl_syre.evaluation.collapse",
    "load_backbone": "ssl_syre.export",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssl_syre' has no attribute {name!r}")
