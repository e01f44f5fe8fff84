"""Method registry: a new method is one file with an SSLMethod subclass, added here."""

from ssl_syre.methods.barlowtwins import BarlowTwins
from ssl_syre.methods.base import SSLMethod
from ssl_syre.methods.byol import BYOL
from ssl_syre.methods.mocov2 import MoCoV2
from ssl_syre.methods.momentum import MomentumMethod
from ssl_syre.methods.simclr import SimCLR
from ssl_syre.methods.simsiam import SimSiam
from ssl_syre.methods.vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {
    cls.name: cls for cls in (SimCLR, BYOL, SimSiam, MoCoV2, BarlowTwins, VICReg)
}

__all__ = [
    "METHODS",
    "BYOL",
    "BarlowTwins",
    "MoCoV2",
    "MomentumMethod",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "VICReg",
]
