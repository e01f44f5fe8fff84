"""Lightning callbacks: exact-resume seeding, the online kNN / collapse monitor, the online
linear probe and the UMAP picture every N epochs."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from ssl_syre.evaluation.collapse import collapse_metrics
from ssl_syre.evaluation.features import eval_loader, extract_features
from ssl_syre.evaluation.knn import knn_classify
from ssl_syre.evaluation.prototypes import flat_prototype_metrics, prototype_summary
from ssl_syre.evaluation.symmetry import summary_of
from ssl_syre.evaluation.symmetry_report import diagnose_method


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
        self.skip = 0  # leading items of this epoch's order already trained on (see skip_items)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.skip = 0
        self.epoch = int(epoch)

    def skip_items(self, epoch: int, count: int) -> None:
        """Leave out the first `count` items of `epoch`'s order: a resume inside an epoch.

        Kept for every iterator of that epoch (Lightning may build more than one) and
        dropped when the epoch changes.
        """
        self.set_epoch(epoch)
        self.skip = int(count)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, _ORDER))
        return iter(torch.randperm(self.size, generator=generator).tolist()[self.skip :])

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

    A run stopped inside an epoch (`trainer.max_steps`) checkpoints there: this callback then
    records how many batches of the epoch were trained and the RNG state after them, and a
    resume skips those batches of the epoch's order and restores that state. Lightning's own
    loop state is mended on load (`mend_loop_state`), because under `max_steps` it counts
    a finished epoch as unfinished (and the other way round after a stop inside one).
    """

    def __init__(self, seed: int, sampler: EpochSampler | None = None, batch_size: int = 1) -> None:
        self.seed = seed
        self.sampler = sampler
        self.batch_size = batch_size
        self.next_epoch = 0  # the epoch a checkpoint written now resumes at
        self.done_batches = 0  # batches of next_epoch already trained (a stop inside it)
        self.rng: dict[str, Any] | None = None  # RNG state after those batches
        self._restore_rng: dict[str, Any] | None = None

    def _set_epoch(self, epoch: int) -> None:
        self.next_epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_epoch(trainer.current_epoch)
        self.done_batches, self.rng = 0, None
        seed_all(main_seed(self.seed, trainer.current_epoch, trainer.global_rank))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resume inside an epoch calls no on_train_epoch_start: restore the RNG state here.
        if self._restore_rng is not None:
            set_rng_state(self._restore_rng)
            self._restore_rng = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before ModelCheckpoint's hook (Lightning calls monitoring callbacks last), so
        # the epoch-end checkpoint records the epoch after this one, or, when max_steps
        # stopped the run inside this epoch, this epoch and the batches it trained.
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)
        # An epoch of unknown length (an iterable data set) ends when its data does.
        if math.isfinite(trainer.num_training_batches) and done < trainer.num_training_batches:
            self.next_epoch, self.done_batches = trainer.current_epoch, done
            self.rng = rng_state()
        else:
            self.next_epoch, self.done_batches, self.rng = trainer.current_epoch + 1, 0, None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"next_epoch": self.next_epoch, "done_batches": self.done_batches}
        if self.rng is not None:
            state["rng"] = self.rng
        return state

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # For a checkpoint without this callback's state (load_state_dict overrides this).
        self._set_epoch(int(checkpoint.get("epoch", -1)) + 1)
        state = next(
            (v for k, v in checkpoint.get("callbacks", {}).items() if k == type(self).__name__),
            {},
        )
        done = int(state.get("done_batches", 0))
        mend_loop_state(checkpoint, inside_epoch=done > 0)
        # One process: skip the trained batches. Under DDP Lightning's sampler wrapper needs
        # the whole order (a resume inside an epoch there replays its first batches).
        if done > 0 and self.sampler is not None and trainer.world_size == 1:
            self.sampler.skip_items(int(state["next_epoch"]), done * self.batch_size)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._set_epoch(int(state_dict["next_epoch"]))
        self.done_batches = int(state_dict.get("done_batches", 0))
        self.rng = state_dict.get("rng")
        self._restore_rng = self.rng if self.done_batches > 0 else None


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's global RNG state, in types weights_only loading takes."""
    name, keys, position, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(
        tuple(state["python"]) if isinstance(state["python"], list) else state["python"]
    )
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def mend_loop_state(checkpoint: dict[str, Any], inside_epoch: bool) -> None:
    """Make Lightning's loop counters say where the checkpointed run really stopped.

    A checkpoint written in `on_train_epoch_end` counts the epoch as processed but not yet
    completed. Lightning then resumes it as finished only in epoch-based training: under
    `trainer.max_steps` it restarts the epoch (the next batch is numbered past the epoch's
    end, in the finished epoch), and a run stopped by max_steps inside an epoch would be
    resumed at the next epoch by max_epochs training. Here an epoch-end checkpoint says the
    epoch is completed and no batch of the next one has run; one written inside an epoch
    says that epoch is still running (its batch counters are kept).
    """
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not isinstance(fit, dict) or "epoch_progress" not in fit:
        return
    for counts in fit["epoch_progress"].values():
        if counts.get("completed") != counts.get("processed", 0) - 1:
            return  # not written in on_train_epoch_end: Lightning's own logic applies
    for counts in fit["epoch_progress"].values():
        if inside_epoch:
            counts["processed"] = counts["completed"]
        else:
            counts["completed"] = counts["processed"]
    if inside_epoch:
        return
    for key, progress in fit.items():
        if key.startswith("epoch_loop.") and isinstance(progress, dict):
            _zero_current(progress)
    batches = fit.get("epoch_loop.batch_progress")
    if isinstance(batches, dict) and "is_last_batch" in batches:
        batches["is_last_batch"] = False


def _zero_current(progress: dict[str, Any]) -> None:
    """Zero the per-epoch ("current") counters of a Lightning progress record."""
    for key, value in progress.items():
        if key == "current" and isinstance(value, dict):
            for name in value:
                value[name] = 0
        elif isinstance(value, dict):
            _zero_current(value)


class OnlineEvaluation(pl.Callback):
    """Every N epochs: kNN accuracy and collapse metrics of backbone and projector features,
    and the weight diagnostics' totals (dead, duplicated, low-rank units: `symmetry_*`).

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
        # A collapse of the weights shows here as it happens, not only in symmetry.png at the end.
        symmetry = diagnose_method(pl_module, self.test, samples=512)
        for name, value in summary_of(symmetry).items():
            metrics[f"symmetry_{name}"] = float(value)
        # Partial prototype collapse (distinct prototypes), here only: no cost between evaluations.
        prototypes = getattr(pl_module, "prototype_weights", dict)()
        metrics.update(flat_prototype_metrics(prototype_summary(prototypes)))
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
            from ssl_syre.training.loggers import log_figure

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


class LossProgressBar(TQDMProgressBar):
    """Lightning's progress bar, with the training loss as the method last read it back from
    the device (`SSLMethod.shown_loss`, at logging steps): a progress-bar metric would be read
    back (a host sync) at every batch."""

    def get_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "shown_loss", None)
        if loss is not None:
            metrics["loss"] = f"{loss:.3g}"
        return metrics
