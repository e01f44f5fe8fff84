"""Checks that keep multi-process (DDP) runs honest; the training itself is Lightning's DDP."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from ssl_syre.errors import UserError
from ssl_syre.syre import SyRe


def anchor_fingerprint(syre: SyRe) -> float:
    """A number that differs when any anchor or D entry differs: a hash folded into [0, 1) of
    the anchors the update uses (regenerated ones as this process's device draws them)."""
    return syre.fingerprint()


class SyReAnchorCheck(pl.Callback):
    """At the start of fit, compare the SyRe anchors of every process; stop if they differ.

    Kept anchors are drawn from (seed, parameter name) on the CPU, so they agree by
    construction; this check catches runs whose processes were given different configs or
    seeds, and, with syre.anchor_storage=regenerate, processes whose devices draw other
    numbers from the same seeds (another GPU model).
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
