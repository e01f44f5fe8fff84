"""Lightning callbacks: exact-resume seeding and the online kNN / collapse monitor."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import Dataset, Sampler

from ssl_syre.evaluation.collapse import collapse_metrics
from ssl_syre.evaluation.features import eval_loader, extract_features
from ssl_syre.evaluation.knn import knn_classify


def epoch_seed(seed: int, epoch: int, *stream: int) -> int:
    """A 31-bit seed that depends only on (seed, epoch, stream...), well mixed by SeedSequence."""
    state = np.random.SeedSequence([seed, epoch, *stream]).generate_state(1)[0]
    return int(state) & 0x7FFF_FFFF


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Streams of epoch_seed, so that shuffling, workers and the main process draw unrelated numbers.
_MAIN, _ORDER, _WORKER = 0, 1, 2


class EpochSampler(Sampler[int]):
    """Shuffle `range(size)` by (seed, epoch) alone; seed DataLoader workers the same way.

    torch's RandomSampler draws its order from the global RNG when the DataLoader iterator is
    created, and Lightning creates the first iterator of a process before
    `on_train_epoch_start` (in `FitLoop.setup_data`), later ones after it. An uninterrupted
    run and a resumed one would then shuffle epoch k differently. Here the order is a pure
    function of the epoch, which `ReseedEachEpoch` sets from the checkpoint before the first
    iterator exists. Use with `DataLoader(sampler=s, worker_init_fn=s.seed_worker,
    generator=torch.Generator())`: the private generator keeps the iterator's own seed draw
    out of the global RNG, and `seed_worker` replaces that seed in each worker.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, _ORDER))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def seed_worker(self, worker_id: int) -> None:
        """DataLoader `worker_init_fn`: seed from (seed, epoch, process rank, worker id).

        A worker is started with a copy of this sampler as it was when the iterator was
        created, so its epoch is the one whose order it loads.
        """
        seed_all(epoch_seed(self.seed, self.epoch, _WORKER, rank_zero_only.rank, worker_id))


def main_seed(seed: int, epoch: int, rank: int) -> int:
    """The main process's seed for `epoch` on global `rank`.

    Each DDP rank draws its own numbers (lightly's per-image transforms with num_workers=0,
    dropout masks), not copies of rank 0's. Rank 0 keeps the seed of a single process, so a
    one-device run is the same run as before ranks were mixed in.
    """
    return epoch_seed(seed, epoch, _MAIN) if rank == 0 else epoch_seed(seed, epoch, _MAIN, rank)


class ReseedEachEpoch(pl.Callback):
    """Seed every RNG from (seed, epoch, global rank) as each epoch starts, for exact resume.

    The main process's generators (augmentations when data.num_workers=0, dropout, ...) are
    reseeded in `on_train_epoch_start`; the data order and the workers' generators come from
    an `EpochSampler`, whose epoch this callback restores from the checkpoint, because
    Lightning builds the first data iterator of a process before any epoch hook. A run
    resumed from an epoch-end checkpoint then replays exactly the epochs an uninterrupted
    run would.
    """

    def __init__(self, seed: int, sampler: EpochSampler | None = None) -> None:
        self.seed = seed
        self.sampler = sampler
        self.next_epoch = 0  # the epoch a checkpoint written now resumes at

    def _set_epoch(self, epoch: int) -> None:
        self.next_epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_epoch(trainer.current_epoch)
        seed_all(main_seed(self.seed, trainer.current_epoch, trainer.global_rank))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before ModelCheckpoint's hook (Lightning calls monitoring callbacks last), so
        # the epoch-end checkpoint records the epoch after this one.
        self.next_epoch = trainer.current_epoch + 1

    def state_dict(self) -> dict[str, Any]:
        return {"next_epoch": self.next_epoch}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # For a checkpoint without this callback's state (load_state_dict overrides this).
        self._set_epoch(int(checkpoint.get("epoch", -1)) + 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._set_epoch(int(state_dict["next_epoch"]))


class OnlineEvaluation(pl.Callback):
    """Every N epochs: kNN accuracy and collapse metrics of backbone and projector features.

    Runs on rank 0 only, on fixed subsets (a kNN bank and a test sample) so that it costs
    little whatever the data set's size; the final, full evaluation happens after training.
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
