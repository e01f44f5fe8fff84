"""Checks that keep multi-process (DDP) runs honest; the training itself is Lightning's DDP."""

from __future__ import annotations

import hashlib

import lightning.pytorch as pl
import torch

from ssl_syre.errors import UserError
from ssl_syre.syre import SyRe


def anchor_fingerprint(syre: SyRe) -> float:
    """A number that differs when any anchor or D entry differs: a hash folded into [0, 1)."""
    digest = hashlib.sha256()
    anchors, d_diagonal = syre.anchors, syre.d_diagonal  # each property returns a copy
    for name in sorted(anchors):
        digest.update(name.encode())
        digest.update(anchors[name].contiguous().numpy().tobytes())
        if d_diagonal is not None:
            digest.update(d_diagonal[name].contiguous().numpy().tobytes())
    # 52 bits fit a float64 exactly, so the value survives all_gather unchanged.
    return int.from_bytes(digest.digest()[:6], "big") / 2**48


class SyReAnchorCheck(pl.Callback):
    """At the start of fit, compare the SyRe anchors of every process; stop if they differ.

    Anchors are drawn from (seed, parameter name) on the CPU, so they agree by construction;
    this check catches runs whose processes were given different configs or seeds.
    """

    def __init__(self) -> None:
        self.fingerprints: list[float] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        syre = getattr(pl_module, "syre", None)
        if syre is None:
            return
        mine = torch.tensor([anchor_fingerprint(syre)], dtype=torch.float64)
        gathered = trainer.strategy.all_gather(mine.to(pl_module.device))
        self.fingerprints = [float(v) for v in torch.as_tensor(gathered).flatten().cpu()]
        if len(set(self.fingerprints)) > 1:
            raise UserError(
                f"SyRe anchors differ across the {len(self.fingerprints)} processes "
                "(different syre.seed or config per process); launch every process with the same config"
            )
