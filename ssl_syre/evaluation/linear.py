"""Linear probe: a linear classifier trained on frozen, cached features (seconds on a CPU)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_syre.evaluation.knn import as_features, as_labels

ArrayLike = torch.Tensor | np.ndarray

# Standardisation epsilon, as in BatchNorm: dead feature dimensions become 0, not NaN.
_STD_EPS = 1e-5


def linear_probe(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike | None,
    num_classes: int,
    epochs: int = 30,
    batch_size: int = 1024,
    lr: float | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train a linear classifier on frozen features and report its test accuracy.

    The protocol (recorded in the result's ``"protocol"``):

    1. Standardise each feature dimension with the mean and standard deviation of the
       train features (a BatchNorm without affine parameters, frozen after the train set;
       the same role as the BN layer before the linear head in MAE's probe).
    2. ``nn.Linear(D, num_classes)`` initialised at zero (the problem is convex; zero init
       makes the result depend on ``seed`` only through the batch order).
    3. AdamW (default lr 2e-3), cosine decay of the learning rate to 0 over all steps,
       cross-entropy, ``epochs`` full passes over the reshuffled cached features.

    The defaults (30 epochs of batch 1024) were tuned on Fashion-MNIST pixels, random ReLU
    features of them and Gaussian class clusters, where longer training with smaller batches
    gave the same test accuracy at a higher cost. Pure tensor work, no Lightning and no data
    loading (training runs single-threaded on CPU, see ``_one_thread_on_cpu``).
    Deterministic given ``seed``.

    Args:
        train_features, train_labels, test_features, test_labels, num_classes: the
            features (N, D) and (M, D), torch or numpy, and their labels in
            [0, num_classes), as for ``ssl_syre.evaluation.knn.knn_classify``.
        epochs: Passes over the train features.
        batch_size: Features per optimiser step.
        lr: Peak learning rate of AdamW; ``None`` means 2e-3.
        weight_decay: AdamW's decoupled weight decay.
        seed: Seed of the batch order.
        device: Device to train on; ``None`` means CUDA when available, else CPU.

    Returns:
        ``{"top1": fraction, "top5": fraction, "epochs": epochs, "protocol": str}``, top-5
        meaning top-min(5, num_classes).

    Raises:
        ValueError: On missing, negative or out-of-range labels, mismatched shapes or
            non-positive ``epochs`` / ``batch_size``.

    Examples:
        >>> result = linear_probe(train_z, train_y, test_z, test_y, num_classes=10)
        >>> result["top1"], result["protocol"]
        (0.91, 'linear probe: train-standardised features, zero-init nn.Linear, AdamW ...')
    """
    if test_labels is None:
        raise ValueError("a linear probe needs test labels; skip it for unlabelled data")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    lr = 2e-3 if lr is None else lr
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x_train = as_features(train_features, "train_features").to(device)
    x_test = as_features(test_features, "test_features").to(device)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"train and test features differ in dimension: {x_train.shape[1]} vs {x_test.shape[1]}"
        )
    y_train = as_labels(train_labels, len(x_train), num_classes, "train_labels").to(device)
    y_test = as_labels(test_labels, len(x_test), num_classes, "test_labels").to(device)

    mean = x_train.mean(dim=0)
    std = (x_train.var(dim=0, correction=0) + _STD_EPS).sqrt()
    x_train = (x_train - mean) / std
    x_test = (x_test - mean) / std

    classifier = nn.Linear(x_train.shape[1], num_classes).to(device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(seed)
    with _one_thread_on_cpu(device):
        _train(classifier, optimizer, scheduler, x_train, y_train, epochs, batch_size, generator)

    with torch.no_grad():
        top = min(5, num_classes)
        hits = classifier(x_test).topk(top, dim=1).indices == y_test[:, None]
    return {
        "top1": hits[:, 0].sum().item() / len(hits),
        "top5": hits.any(dim=1).sum().item() / len(hits),
        "epochs": epochs,
        "protocol": (
            f"linear probe: train-standardised features, zero-init nn.Linear, AdamW "
            f"lr={lr:g} wd={weight_decay:g}, cosine to 0, cross-entropy, batch {batch_size}, "
            f"{epochs} epochs, seed {seed}"
        ),
    }


def _train(
    classifier: nn.Linear,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    for _ in range(epochs):
        # One gather per epoch, then contiguous slices: cheaper than a gather per batch.
        order = torch.randperm(len(x_train), generator=generator).to(x_train.device)
        for inputs, targets in zip(
            x_train[order].split(batch_size), y_train[order].split(batch_size), strict=True
        ):
            loss = F.cross_entropy(classifier(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()


@contextmanager
def _one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run torch single-threaded on CPU, restoring the thread count afterwards.

    A probe step multiplies a (batch x D) by a (D x classes) matrix: too little work for
    intra-op threads to pay off, and on a busy machine OpenMP threads waiting on each other
    make it several times slower than one thread.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
