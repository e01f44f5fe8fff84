"""Tests for ssl_syre.data.subsets: one seeded rule, over torch's Subset, that a reader can redo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from ssl_syre.data import ArrayImageDataset, seeded_subset, subset_record, whole_split
from ssl_syre.errors import UserError


def split(size: int = 50) -> ArrayImageDataset:
    images = np.arange(size, dtype=np.uint8).reshape(size, 1, 1).repeat(2, 1).repeat(2, 2)
    return ArrayImageDataset(images, np.arange(size) % 7)


def test_the_documented_rule_with_torch_alone() -> None:
    dataset = split()
    subset = seeded_subset(dataset, 20, seed=3)
    drawn = torch.randperm(50, generator=torch.Generator().manual_seed(3))[:20]
    assert isinstance(subset, Subset) and list(subset.indices) == sorted(drawn.tolist())
    assert np.array_equal(subset.labels, dataset.labels[subset.indices])
    image, label = subset[4]  # the item of the split at that position, untouched
    assert (
        np.asarray(image)[0, 0] == subset.indices[4] and label == dataset.labels[subset.indices[4]]
    )
    assert list(seeded_subset(dataset, 20, seed=3).indices) == list(subset.indices)
    assert list(seeded_subset(dataset, 20, seed=4).indices) != list(subset.indices)
    record = subset_record(subset, 20, 3)
    assert record["size"] == 20 and record["of"] == 50
    assert "torch.randperm(50, generator=torch.Generator().manual_seed(3))[:20]" in record["rule"]


def test_all_of_it_when_the_size_does_not_cut() -> None:
    dataset = split()
    assert seeded_subset(dataset, None, seed=0) is dataset
    assert seeded_subset(dataset, 50, seed=0) is dataset
    assert seeded_subset(dataset, 500, seed=0) is dataset
    assert subset_record(dataset, 500, 0)["rule"] == "all items, in the split's order"
    with pytest.raises(UserError, match="eval.online_train_subset must be a positive"):
        seeded_subset(dataset, 0, seed=0, key="eval.online_train_subset")


def test_a_subset_of_a_subset_maps_back_to_the_split() -> None:
    dataset = split()
    outer = seeded_subset(dataset, 30, seed=1)
    inner = seeded_subset(outer, 10, seed=2)
    base, positions = whole_split(inner)
    assert base is dataset and len(positions) == 10
    assert positions == [outer.indices[i] for i in inner.indices]
    assert np.array_equal(inner.labels, dataset.labels[positions])
    assert [inner[i][1] for i in range(10)] == dataset.labels[positions].tolist()
    assert whole_split(dataset) == (dataset, list(range(50)))
    assert subset_record(inner, 10, 2)["of"] == 50
