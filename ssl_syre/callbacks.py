"""Lightning callbacks: exact-resume seeding, the online kNN / collapse monitor, the online
linear probe and the UMAP picture every N epochs."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
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


class ReseedEachEpoch(pl.Callback):
    """Seed every RNG from (seed, epoch) as each epoch starts, for exact resume.

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
        seed_all(epoch_seed(self.seed, trainer.current_epoch, _MAIN))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before ModelCheckpoint's hook (Lightning calls monitoring callbacks last), so
        # the epoch-end checkpoint records the epoch after this one.
        self.next_epoch = trainer.current_epoch + 1

    def state_dict(self) -> dict[str, Any]:
        return {"next_epoch": self.next_epoch}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Checkpoints written before this callback had a state: they were all epoch-end ones.
        self._set_epoch(int(checkpoint.get("epoch", -1)) + 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._set_epoch(int(state_dict["next_epoch"]))


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
        probe: OnlineLinearProbe | None = None,
    ) -> None:
        self.bank, self.test = bank, test
        self.probe = probe  # its accuracy on the same test features, beside the kNN's
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
        if self.probe is not None:
            metrics["linear_top1_backbone"] = self.probe.accuracy(
                test.by_kind["backbone"], test.labels
            )
        return metrics


class OnlineLinearProbe(pl.Callback):
    """solo-learn's online linear classifier: trained on detached backbone features of the
    training batches, beside the SSL loss, to follow how linearly separable the features are.

    A forward hook on the backbone catches its first output in each training step (the first
    view's features, as solo-learn takes them), so the probe costs one linear layer and no
    extra forward pass. The classifier and its AdamW live here, not in the method: the SSL
    loss, optimizer, weights and export never see them. It starts at zero (no draw from the
    global RNG, which seeds the augmentations); under DDP its gradients are averaged over the
    processes. Its training accuracy is logged as online_probe/train_top1; its accuracy on
    the online kNN's test subset as online/linear_top1_backbone (`OnlineEvaluation`).

    - [0] solo-learn, 2022, https://jmlr.org/papers/v23/21-1155.html
    """

    def __init__(self, feature_dim: int, num_classes: int, lr: float) -> None:
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from it
            self.classifier = nn.Linear(feature_dim, num_classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        self.lr = lr
        self.optimizer = torch.optim.AdamW(self.classifier.parameters(), lr=lr)
        self._features: Tensor | None = None
        self._capture = False
        self._handle: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        state = self.optimizer.state_dict()
        self.classifier.to(pl_module.device)
        self.optimizer = torch.optim.AdamW(self.classifier.parameters(), lr=self.lr)
        self.optimizer.load_state_dict(state)  # moves its state to the parameters' device
        if self._handle is None:
            self._handle = pl_module.backbone.register_forward_hook(self._catch)  # type: ignore[union-attr]

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _catch(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if self._capture and module.training:
            self._features = output.detach()
            self._capture = False

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._features, self._capture = None, True

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        features, self._features, self._capture = self._features, None, False
        if features is None:
            return
        labels = torch.as_tensor(batch[1]).to(features.device).reshape(-1)
        if len(features) != len(labels):  # views batched together: one label per view
            labels = labels.repeat(len(features) // len(labels))
        # -1 marks unlabelled images: left out by ignore_index and the division, not by a
        # boolean mask, whose size the host would have to wait for on a GPU.
        labelled = (labels >= 0).float()
        count = labelled.sum().clamp_min(1)
        with torch.enable_grad():
            logits = self.classifier(features.flatten(1).float())
            loss = nn.functional.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
            loss = loss / count
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if trainer.world_size > 1:
            for param in self.classifier.parameters():
                param.grad = trainer.strategy.reduce(param.grad, reduce_op="mean")
        self.optimizer.step()
        top1 = ((logits.detach().argmax(1) == labels).float() * labelled).sum() / count
        pl_module.log("online_probe/train_loss", loss.detach(), on_step=False, on_epoch=True)
        pl_module.log("online_probe/train_top1", top1, on_step=False, on_epoch=True)

    @torch.no_grad()
    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        """Top-1 accuracy of the probe on (eval-mode) backbone features."""
        weight = self.classifier.weight
        logits = self.classifier(features.to(weight.device, weight.dtype).flatten(1))
        return float((logits.argmax(1).cpu() == labels.cpu()).float().mean())

    def state_dict(self) -> dict[str, Any]:
        return {
            "classifier": self.classifier.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.classifier.load_state_dict(state_dict["classifier"])
        self.optimizer.load_state_dict(state_dict["optimizer"])


class UmapEveryNEpochs(pl.Callback):
    """Every N epochs: a UMAP of the backbone features of a fixed test subset, to the loggers
    that store pictures (TensorBoard, W&B, MLflow), as solo-learn's AutoUMAP does. Rank 0."""

    def __init__(
        self, test: Dataset, every_n_epochs: int, seed: int, max_points: int, batch_size: int
    ) -> None:
        self.test = test
        self.every_n_epochs = every_n_epochs
        self.seed, self.max_points, self.batch_size = seed, max_points, batch_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        if trainer.is_global_zero:
            from ssl_syre.evaluation.umap_plot import umap_plot
            from ssl_syre.loggers import log_figure

            test = extract_features(pl_module.backbone, eval_loader(self.test, self.batch_size))
            figure = umap_plot(
                test.by_kind["backbone"],
                test.labels,
                self.seed,
                self.max_points,
                f"backbone features, epoch {trainer.current_epoch}",
            )
            log_figure(trainer.loggers, "umap/backbone", figure, trainer.global_step)
        trainer.strategy.barrier()
