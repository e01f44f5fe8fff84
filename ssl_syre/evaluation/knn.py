"""Weighted kNN classification of frozen features with an exact faiss inner-product search.

The protocol is the one of InstDisc and of lightly's ``knn_predict``: L2-normalise the
features, find the k train features with the highest cosine similarity to each test feature,
and let each neighbour vote for its class with weight exp(similarity / t).

- [0] InstDisc, Wu et al., 2018, https://arxiv.org/abs/1805.01978
- [1] lightly, ``lightly.utils.benchmarking.knn_predict``
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = torch.Tensor | np.ndarray


def knn_search(
    train: ArrayLike,
    test: ArrayLike,
    k: int,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the k train features with the highest cosine similarity to each test feature.

    Features are L2-normalised here, then searched exactly (``faiss.IndexFlatIP``) in
    batches of ``batch_size`` test queries, so that memory stays bounded by the batch and
    not by the size of the test set.

    Args:
        train: Train (database) features, shape (N, D).
        test: Test (query) features, shape (M, D).
        k: Number of neighbours; must be at most N.
        batch_size: Number of test queries per faiss search.
        device: ``"cpu"`` forces the CPU index; otherwise a faiss GPU index is used when
            faiss was built with GPU support, sees a GPU and k <= 2048 (faiss's GPU limit).

    Returns:
        ``(similarities, indices)``, both of shape (M, k), sorted by decreasing cosine
        similarity; similarities are float32, indices int64 rows of ``train``.

    Raises:
        ValueError: If shapes do not match or k is not in [1, N].

    Examples:
        >>> sims, idx = knn_search(torch.randn(100, 8), torch.randn(5, 8), k=3)
        >>> sims.shape, idx.shape
        (torch.Size([5, 3]), torch.Size([5, 3]))
    """
    train_x, test_x = as_features(train, "train"), as_features(test, "test")
    _check_dimensions(train_x, test_x)
    if not 1 <= k <= len(train_x):
        raise ValueError(f"k must be in [1, {len(train_x)}] (the train set size), got {k}")
    index = _build_index(train_x, device, k)
    sims, indices = [], []
    for batch_sims, batch_indices in _search_batches(index, test_x, k, batch_size):
        sims.append(batch_sims)
        indices.append(batch_indices)
    return torch.cat(sims), torch.cat(indices)


def knn_predictions(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    num_classes: int,
    ks: Sequence[int] = (200,),
    temperature: float = 0.1,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
) -> dict[int, torch.Tensor]:
    """Rank the classes of each test feature by weighted kNN votes, for several k at once.

    One search at the largest k serves all k: neighbours come back sorted, so the first k
    of them are the k nearest.

    Args:
        train_features: Train features, shape (N, D).
        train_labels: Train labels in [0, num_classes), shape (N,).
        test_features: Test features, shape (M, D).
        num_classes: Number of classes.
        ks: Numbers of neighbours. A k above N is clamped to N with a warning.
        temperature: t in the vote weight exp(cosine similarity / t).
        batch_size: Number of test queries per search and vote.
        device: Device of the vote computation and, unless ``"cpu"``, of the faiss index
            when faiss has GPU support. ``None``: CUDA when available, else CPU.

    Returns:
        A dict from the k used (after clamping) to the top min(5, num_classes) predicted
        classes of each test feature, shape (M, min(5, num_classes)), best first.

    Raises:
        ValueError: On missing or out-of-range labels, an empty ``ks`` or a k below 1.
    """
    train_x = as_features(train_features, "train_features")
    test_x = as_features(test_features, "test_features")
    labels = as_labels(train_labels, len(train_x), num_classes, "train_labels")
    _check_dimensions(train_x, test_x)
    used_ks = clamp_ks(ks, len(train_x))
    torch_device = _torch_device(device)
    labels = labels.to(torch_device)
    top = min(5, num_classes)
    index = _build_index(train_x, device, max(used_ks))
    predictions: dict[int, list[torch.Tensor]] = {k: [] for k in used_ks}
    for sims, indices in _search_batches(index, test_x, max(used_ks), batch_size):
        # exp(s/t) of the sorted similarities once; each k takes the first k columns. Each
        # query's votes are scaled by exp(-s_nearest/t), which ranks its classes the same
        # but keeps exp finite: exp(s/t) is inf in float32 once s/t > 88 (t < 0.0113).
        sims = sims.to(torch_device)
        weights = ((sims - sims[:, :1]) / temperature).exp()
        neighbour_labels = labels[indices.to(torch_device)]
        for k in used_ks:
            # scatter_add keeps memory at (B, C) where a one-hot vote tensor is (B, k, C).
            scores = torch.zeros(len(sims), num_classes, device=torch_device)
            scores.scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])
            predictions[k].append(scores.topk(top, dim=1).indices.cpu())
    return {k: torch.cat(parts) for k, parts in predictions.items()}


def knn_classify(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike | None,
    num_classes: int,
    ks: Sequence[int] = (200,),
    temperature: float = 0.1,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """Weighted kNN accuracy of frozen features, the InstDisc / lightly protocol [0, 1].

    Features are L2-normalised; each test feature takes its k train neighbours of highest
    cosine similarity s (exact search with faiss), each voting for its class with weight
    exp(s / t); classes are ranked by summed votes. Top-1 predictions agree with
    ``lightly.utils.benchmarking.knn_predict`` on the same features (as there, classes
    without votes fill the top 5 in arbitrary order when fewer than 5 classes got votes).

    Memory stays near one copy of the train features (the faiss index) plus one query
    batch, where lightly's ``knn_predict`` holds a (queries x train) similarity matrix per
    chunk (``benchmarks/knn_benchmark.py`` compares the two).

    - [0] InstDisc, Wu et al., 2018, https://arxiv.org/abs/1805.01978

    Args:
        train_features: Train features, shape (N, D), torch or numpy.
        train_labels: Train labels in [0, num_classes), shape (N,).
        test_features: Test features, shape (M, D).
        test_labels: Test labels in [0, num_classes), shape (M,).
        num_classes: Number of classes.
        ks: Numbers of neighbours, all answered by one search at the largest k. A k above
            N is clamped to N (with a warning) and recorded as the k used.
        temperature: t in the vote weight exp(s / t).
        batch_size: Number of test queries per search, which bounds memory.
        device: See :func:`knn_predictions`.

    Returns:
        One record per entry of ``ks``, in order: ``{"k": k used, "t": temperature,
        "top1": fraction, "top5": fraction}``; top-5 means top-min(5, num_classes).

    Raises:
        ValueError: If labels are missing (None, or negative as for unlabelled data),
            out of range or of the wrong length, or a k is below 1.

    Examples:
        >>> records = knn_classify(train_z, train_y, test_z, test_y, 10, ks=(20, 200))
        >>> records[1]
        {'k': 200, 't': 0.1, 'top1': 0.87, 'top5': 0.99}
    """
    if test_labels is None:
        raise ValueError("kNN accuracy needs test labels; skip kNN for unlabelled data")
    test_x = as_features(test_features, "test_features")
    targets = as_labels(test_labels, len(test_x), num_classes, "test_labels")
    predictions = knn_predictions(
        train_features,
        train_labels,
        test_x,
        num_classes,
        ks=ks,
        temperature=temperature,
        batch_size=batch_size,
        device=device,
    )
    records = []
    for k in clamp_ks(ks, len(train_features), warn=False):
        hits = predictions[k] == targets[:, None]
        records.append(
            {
                "k": k,
                "t": temperature,
                "top1": hits[:, 0].sum().item() / len(hits),
                "top5": hits.any(dim=1).sum().item() / len(hits),
            }
        )
    return records


def as_features(features: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D float32 CPU tensor, sharing memory with the input where it already is one."""
    tensor = torch.as_tensor(features).detach().to("cpu", torch.float32)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(tensor.shape)}")
    if len(tensor) == 0:
        raise ValueError(f"{name} is empty")
    return tensor


def _normalised(features: torch.Tensor) -> np.ndarray:
    """L2-normalised C-contiguous float32 numpy rows, as faiss wants them.

    F.normalize is the normalisation of lightly's examples, so that results match. Callers
    pass chunks: a normalised copy of the whole train set would double its memory.
    """
    return np.ascontiguousarray(F.normalize(features, dim=1).numpy())


def _check_dimensions(train: torch.Tensor, test: torch.Tensor) -> None:
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train and test features differ in dimension: {train.shape[1]} vs {test.shape[1]}"
        )


def as_labels(labels: ArrayLike | None, length: int, num_classes: int, name: str) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"{name} is missing; kNN needs labels")
    tensor = torch.as_tensor(labels).detach().cpu()
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got dtype {tensor.dtype}")
    tensor = tensor.long().reshape(-1)
    if len(tensor) != length:
        raise ValueError(f"{name} has {len(tensor)} entries for {length} features")
    if len(tensor) and tensor.min() < 0:
        raise ValueError(f"{name} has negative entries (unlabelled samples); kNN needs labels")
    if len(tensor) and tensor.max() >= num_classes:
        raise ValueError(f"{name} has class {int(tensor.max())} >= num_classes={num_classes}")
    return tensor


def clamp_ks(ks: Sequence[int], num_train: int, warn: bool = True) -> list[int]:
    """The ks a bank of `num_train` features can answer: each k capped at it, repeats dropped."""
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty; give at least one number of neighbours")
    if min(ks) < 1:
        raise ValueError(f"every k must be >= 1, got {ks}")
    if warn and max(ks) > num_train:
        warnings.warn(
            f"k={max(ks)} exceeds the {num_train} train features; clamping to {num_train}",
            stacklevel=3,
        )
    # Equal ks after clamping (or repeated in the request) are one search result, one record.
    return list(dict.fromkeys(min(k, num_train) for k in ks))


def _torch_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# Train rows normalised and added to the index at a time.
_ADD_CHUNK = 16384
# faiss GPU brute-force search answers at most this many neighbours per query.
_FAISS_GPU_MAX_K = 2048
# One set of GPU resources per process: creating them is slow and the index must not outlive them.
_gpu_resources: Any = None


def _faiss_has_gpu() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _build_index(train: torch.Tensor, device: str | torch.device | None, k: int) -> faiss.Index:
    global _gpu_resources
    index = faiss.IndexFlatIP(train.shape[1])
    wants_gpu = device is None or torch.device(device).type != "cpu"
    if wants_gpu and k <= _FAISS_GPU_MAX_K and _faiss_has_gpu():
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        gpu = torch.device(device).index if device is not None else None
        index = faiss.index_cpu_to_gpu(_gpu_resources, gpu or 0, index)
    for chunk in train.split(_ADD_CHUNK):
        index.add(_normalised(chunk))
    return index


def _search_batches(
    index: faiss.Index, queries: torch.Tensor, k: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for batch in queries.split(batch_size):
        sims, indices = index.search(_normalised(batch), k)
        yield torch.from_numpy(sims), torch.from_numpy(indices)
