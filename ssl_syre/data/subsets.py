"""Seeded subsets of data sets: torch's `Subset`, drawn by one rule that metrics.json spells out.

`data.train_subset`, `data.test_subset` and the online kNN's bank and queries
(`eval.online_train_subset`, `eval.online_test_subset`) all take their items this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ssl_syre.errors import UserError


class LabelledSubset(Subset):
    """torch's `Subset`, plus the labels of its items read without decoding any image.

    `labels` follows the wrapped data set's `labels` (a whole split's, or another subset's).
    """

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.dataset.labels)[np.asarray(self.indices, dtype=np.int64)]


def seeded_subset(dataset: Dataset, size: int | None, seed: int, key: str = "size") -> Dataset:
    """`size` items of `dataset` drawn with `seed`, in the data set's order; all of it when
    `size` is None or not smaller than the data set.

    The positions are `sorted(torch.randperm(len(dataset), generator=torch.Generator()
    .manual_seed(seed))[:size])`: the same seed and length give the same items, on any
    machine, and a reader can redo the draw with torch alone (see `subset_record`).

    Raises:
        UserError: `size` is zero or negative; `key` names the setting in the message.
    """
    if size is None:
        return dataset
    if size <= 0:
        raise UserError(f"{key} must be a positive integer or null (all), got {size}")
    total = len(dataset)  # type: ignore[arg-type]
    if size >= total:
        return dataset
    positions = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:size]
    return LabelledSubset(dataset, positions.sort().values.tolist())


def whole_split(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The data set beneath any `Subset`s, and the positions in it of `dataset`'s items."""
    positions: Sequence[int] = range(len(dataset))  # type: ignore[arg-type]
    while isinstance(dataset, Subset):
        positions = [int(dataset.indices[position]) for position in positions]
        dataset = dataset.dataset
    return dataset, list(positions)


def subset_record(dataset: Dataset, size: int | None, seed: int) -> dict[str, Any]:
    """How an evaluation split was drawn, in words a reader can redo without this package.

    `size` and `seed` are what `seeded_subset` was given (`data.train_subset` /
    `data.test_subset`, the run's seed).
    """
    total = len(whole_split(dataset)[0])  # type: ignore[arg-type]
    record: dict[str, Any] = {"size": len(dataset), "of": total}  # type: ignore[arg-type]
    if size is None or size >= total:
        record["rule"] = "all items, in the split's order"
    else:
        record["rule"] = (
            f"positions sorted(torch.randperm({total}, generator=torch.Generator()"
            f".manual_seed({seed}))[:{size}]) of the split, in its order"
        )
    return record
