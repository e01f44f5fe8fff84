"""Lightning callbacks: exact-resume seeding and the online kNN / collapse monitor."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import Dataset

from ssl_syre.evaluation.collapse import collapse_metrics
from ssl_syre.evaluation.features import eval_loader, extract_features
from ssl_syre.evaluation.knn import knn_classify


class ReseedEachEpoch(pl.Callback):
    """Seed every RNG from (seed, epoch) before each epoch's data loader starts.

    Shuffling, worker seeds and augmentations then depend only on the epoch, so a run resumed
    from an epoch-end checkpoint replays exactly the epochs an uninterrupted run would.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch_seed = (self.seed * 100_003 + trainer.current_epoch) % (2**31)
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)


class OnlineEvaluation(pl.Callback):
    """Every N epochs: kNN accuracy and collapse metrics of backbone and projector features.

    Runs on rank 0 only, on fixed subsets (a kNN bank and a test sample) so that it costs
    seconds, not minutes; the final, full evaluation happens after training.
    """

    def __init__(
        self,
        bank: Dataset,
        test: Dataset,
        num_classes: int,
        every_n_epochs: int,
        k: int,
        temperature: float,
        batch_size: int,
    ) -> None:
        self.bank, self.test = bank, test
        self.num_classes = num_classes
        self.every_n_epochs = every_n_epochs
        self.k, self.temperature = k, temperature
        self.batch_size = batch_size
        self.history: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        if trainer.is_global_zero:
            metrics = self.evaluate(pl_module)
            metrics["epoch"] = trainer.current_epoch
            self.history.append(metrics)
            for name, value in metrics.items():
                if name != "epoch":
                    pl_module.log(f"online/{name}", value, rank_zero_only=True)
        trainer.strategy.barrier()

    def evaluate(self, pl_module: pl.LightningModule) -> dict[str, float]:
        project = pl_module.project  # type: ignore[attr-defined]
        bank = extract_features(
            pl_module.backbone, eval_loader(self.bank, self.batch_size), projector=project
        )
        test = extract_features(
            pl_module.backbone, eval_loader(self.test, self.batch_size), projector=project
        )
        metrics: dict[str, float] = {}
        for kind in ("backbone", "projector"):
            record = knn_classify(
                bank.by_kind[kind],
                bank.labels,
                test.by_kind[kind],
                test.labels,
                num_classes=self.num_classes,
                ks=(self.k,),
                temperature=self.temperature,
            )[0]
            metrics[f"knn_top1_{kind}"] = record["top1"]
            collapse = collapse_metrics(test.by_kind[kind])
            metrics[f"rankme_{kind}"] = collapse["rankme"]
            metrics[f"low_rankness_{kind}"] = collapse["low_rankness"]
        return metrics
