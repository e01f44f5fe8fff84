"""Method registry: a new method is one file with an SSLMethod subclass, added here."""

from ssl_syre.methods.base import SSLMethod
from ssl_syre.methods.byol import BYOL
from ssl_syre.methods.dino import DINO
from ssl_syre.methods.simclr import SimCLR
from ssl_syre.methods.simsiam import SimSiam

METHODS: dict[str, type[SSLMethod]] = {cls.name: cls for cls in (SimCLR, BYOL, SimSiam, DINO)}

__all__ = ["METHODS", "SSLMethod", "SimCLR", "BYOL", "SimSiam", "DINO"]
