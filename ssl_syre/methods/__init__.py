"""Method registry: a new method is one file with an SSLMethod subclass, added here."""

import dataclasses
import warnings

from omegaconf import DictConfig

from ssl_syre.config import check_syre_parts
from ssl_syre.errors import check_choice
from ssl_syre.methods.barlowtwins import BarlowTwins
from ssl_syre.methods.base import SSLMethod
from ssl_syre.methods.byol import BYOL
from ssl_syre.methods.dcl import DCL
from ssl_syre.methods.dino import DINO
from ssl_syre.methods.dinov2 import DINOv2
from ssl_syre.methods.ibot import IBOT
from ssl_syre.methods.lejepa import LeJEPA
from ssl_syre.methods.mae import MAE
from ssl_syre.methods.mocov2 import MoCoV2
from ssl_syre.methods.mocov3 import MoCoV3
from ssl_syre.methods.momentum import MomentumMethod
from ssl_syre.methods.nnclr import NNCLR
from ssl_syre.methods.simclr import SimCLR
from ssl_syre.methods.simsiam import SimSiam
from ssl_syre.methods.swav import SwAV
from ssl_syre.methods.vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {
    cls.name: cls
    for cls in (
        SimCLR,
        BYOL,
        SimSiam,
        MoCoV2,
        BarlowTwins,
        VICReg,
        DINO,
        SwAV,
        NNCLR,
        DCL,
        MoCoV3,
        IBOT,
        DINOv2,
        MAE,
        LeJEPA,
    )
}


def check_config(cfg: DictConfig) -> None:
    """Check `method` and `method_kwargs` (run by `ssl_syre.config.validate`).

    method_kwargs that only another method defines are dropped with a warning: a config written
    for one method (the quick start's SimCLR temperature) then still runs with method=byol on
    the command line; a key no method knows stays an error.

    Raises:
        UserError: For an unknown method, or method_kwargs the method refuses.
    """
    check_choice("method", cfg.method, METHODS)
    own = {f.name for f in dataclasses.fields(METHODS[cfg.method].Kwargs)}
    others = {
        f.name
        for name, cls in METHODS.items()
        if name != cfg.method
        for f in dataclasses.fields(cls.Kwargs)
    }
    for key in [str(k) for k in cfg.method_kwargs if k not in own and k in others]:
        warnings.warn(
            f"method_kwargs.{key} is not a setting of {cfg.method} (another method's); ignored",
            stacklevel=2,
        )
        del cfg.method_kwargs[key]
    METHODS[cfg.method].check_kwargs(cfg.method_kwargs)
    check_syre_parts(cfg, METHODS[cfg.method].parts)


def config_defaults(method: str) -> dict:
    """The method's own config defaults (VICReg: LARS), for ssl_syre.config.load_config."""
    cls = METHODS.get(method)
    return dict(cls.config_defaults) if cls is not None else {}


__all__ = [
    "METHODS",
    "BYOL",
    "DCL",
    "DINO",
    "DINOv2",
    "IBOT",
    "LeJEPA",
    "MAE",
    "BarlowTwins",
    "MoCoV2",
    "MoCoV3",
    "NNCLR",
    "MomentumMethod",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "SwAV",
    "VICReg",
    "check_config",
    "config_defaults",
]
