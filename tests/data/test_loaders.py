"""Tests for ssl_syre.data.loaders: what each augmentation path hands the training step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_syre.config import DataConfig
from ssl_syre.data import build_ssl_dataset, data_info, uint8_transform
from ssl_syre.data.loaders import train_loader
from ssl_syre.methods import METHODS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_device_path_serves_uint8_batches_in_the_epoch_samplers_order() -> None:
    cfg = DataConfig(name="digits", batch_size=100, num_workers=2)
    dataset = build_ssl_dataset(cfg, transform=None, seed=0)
    loader, sampler = train_loader(dataset, cfg, seed=0, augment_on="device")
    assert loader.num_workers == 0  # one gather per batch: nothing for workers to do
    assert len(loader) == len(dataset) // 100
    sampler.set_epoch(3)
    batches = list(loader)
    images = torch.cat([batch[0] for batch in batches])
    labels = torch.cat([batch[1] for batch in batches])
    assert images.dtype == torch.uint8 and images.shape == (1400, 1, 8, 8)
    order = list(sampler)[:1400]
    for position in (0, 7, 1399):  # the PIL image of the item the sampler put there
        expected = np.asarray(dataset[order[position]][0])
        assert np.array_equal(images[position, 0].numpy(), expected)
        assert labels[position] == dataset.labels[order[position]]
    sampler.set_epoch(4)
    assert not torch.equal(next(iter(loader))[0], batches[0][0])


def test_workers_path_serves_lightlys_views() -> None:
    cfg = DataConfig(name="digits", batch_size=16, num_workers=0)
    info = data_info(cfg)
    transform = METHODS["simclr"].build_transform(info, cfg)
    loader, _ = train_loader(build_ssl_dataset(cfg, transform, 0), cfg, 0, "workers")
    views, labels = next(iter(loader))
    assert len(views) == 2 and views[0].shape == (16, 1, 16, 16) and views[0].dtype == torch.float32
    assert labels.shape == (16,)


def test_image_folder_device_path_decodes_to_uint8_in_workers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, size in (("a", (30, 20)), ("b", (17, 41))):
        (tmp_path / name).mkdir()
        for index in range(3):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{index}.png")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=12, batch_size=4)
    cfg.num_workers = 1
    dataset = build_ssl_dataset(cfg, uint8_transform(data_info(cfg), min_scale=0.25), 0)
    loader, _ = train_loader(dataset, cfg, 0, "device")
    (images, sizes), labels = next(iter(loader))
    # The whole picture, squashed to 12 / sqrt(0.25) = 24 px, with its own (height, width).
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 24, 24)
    assert {tuple(size) for size in sizes.tolist()} <= {(30, 20), (17, 41)}
    assert set(labels.tolist()) <= {0, 1}


def test_resident_split_serves_the_same_batches_and_never_pins() -> None:
    cfg = DataConfig(name="digits", batch_size=100, num_workers=0)
    dataset = build_ssl_dataset(cfg, transform=None, seed=0)
    reference, sampler = train_loader(dataset, cfg, seed=0, augment_on="device")
    cfg.on_device = True
    resident, resident_sampler = train_loader(dataset, cfg, 0, "device", torch.device("cpu"))
    assert not resident.pin_memory
    for epoch in (0, 5):
        sampler.set_epoch(epoch)
        resident_sampler.set_epoch(epoch)
        for ours, theirs in zip(resident, reference, strict=True):
            assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def test_training_device_follows_the_trainer_config() -> None:
    from ssl_syre.data.loaders import training_device

    assert training_device({"accelerator": "cpu"}) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert training_device({"accelerator": "auto", "devices": 1}).type == expected
    assert training_device({"accelerator": "auto", "devices": 2}) == torch.device("cpu")
