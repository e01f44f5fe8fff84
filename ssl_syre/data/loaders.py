"""The training DataLoader for either augmentation path, with exact-resume ordering.

- workers: items are lightly's views of one image, made in DataLoader workers (PIL).
- device, in-memory data sets: the split is one uint8 tensor, and each batch is a single
  `index_select` in the main process (no workers, no per-image Python); the views are made on
  the training device by the method's `BatchAugment`.
- device, image folders: workers only decode each whole picture to a uint8 square (with its
  size, `DeviceDecode`); the views are made on the device as above.

The order comes from `EpochSampler` (a pure function of seed and epoch) in every case.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset

from ssl_syre.config import DataConfig
from ssl_syre.data.datasets import ArrayImageDataset
from ssl_syre.data.subsets import whole_split
from ssl_syre.training.callbacks import EpochSampler


class TensorBatches(Dataset):
    """uint8 images (N, C, H, W) and labels served a batch at a time: item = list of indices.

    Use with `sampler=BatchSampler(...)` and `batch_size=None`, so that a batch is one gather.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.images.device.type != "cpu":
            # Pinned and non-blocking: a pageable host-to-device copy waits for the GPU.
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        return self.images.index_select(0, index), self.labels.index_select(0, index)

    def to(self, device: torch.device | str) -> TensorBatches:
        """Keep the split on `device` (config data.on_device): each batch is gathered there."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self


def training_device(trainer_cfg: Any) -> torch.device:
    """The device a single-process run trains on: CUDA when present, unless the config asks
    for the CPU (or several processes, where each rank picks its own GPU later)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    devices = trainer_cfg.get("devices", "auto")
    single = devices in (1, "1", [0]) or (devices == "auto" and torch.cuda.device_count() <= 1)
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") and single:
        return torch.device("cuda", 0)
    return torch.device("cpu")


def train_loader(
    dataset: Dataset,
    data_cfg: DataConfig,
    seed: int,
    augment_on: str,
    device: torch.device | str = "cpu",
) -> tuple[DataLoader, EpochSampler]:
    """The SSL training loader and the sampler whose epoch `ReseedEachEpoch` sets.

    `dataset` carries the transform of its path: lightly's views (workers), None (device,
    in memory) or `uint8_transform` (device, image folders). With `data.on_device`, an
    in-memory split on the device path is moved to `device` once and batches are gathered
    there (the same batches).
    """
    sampler = EpochSampler(len(dataset), seed)  # type: ignore[arg-type]
    batch_size = int(data_cfg.batch_size)
    pin = torch.cuda.is_available()
    split, positions = whole_split(dataset)
    if augment_on == "device" and isinstance(split, ArrayImageDataset):
        batches = TensorBatches(
            split.uint8_images(positions), torch.from_numpy(split.labels[positions])
        )
        resident = bool(getattr(data_cfg, "on_device", False))
        if resident:
            batches.to(device)
        loader = DataLoader(
            batches,
            sampler=BatchSampler(sampler, batch_size, drop_last=True),
            batch_size=None,
            num_workers=0,
            pin_memory=pin and not resident,
        )
        return loader, sampler
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=int(data_cfg.num_workers),
        persistent_workers=False,
        pin_memory=pin,
        worker_init_fn=sampler.seed_worker,
        generator=torch.Generator(),  # keeps the iterator's seed draw off the global RNG
    )
    return loader, sampler
