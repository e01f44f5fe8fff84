"""Feature extraction from frozen models: eval mode (BN frozen), no gradients, once per run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from ssl_syre.config import Config

FEATURE_KINDS = ("backbone", "projector", "raw_pixels")


@dataclass
class Features:
    """Cached embeddings of one split: `by_kind` maps 'backbone'/'projector'/... to N x D."""

    labels: Tensor
    by_kind: dict[str, Tensor] = field(default_factory=dict)


class UInt8Batches:
    """An in-memory split as the eval transform makes it, a batch at a time, on any device.

    The uint8 images go to the device once; each batch is then `float / 255` and the eval
    transform's Normalize there, the same operations as ToTensor and Normalize per image, so
    the features equal the per-image loader's bit for bit on a CPU, with no PIL and no
    per-image Python. `eval_loader` returns one where the split allows it.
    """

    def __init__(
        self, images: Tensor, labels: Tensor, batch_size: int, normalize: T.Normalize | None
    ) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.normalize = normalize
        self.device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def to(self, device: torch.device | str) -> UInt8Batches:
        """Serve the batches on `device` (the uint8 split is copied there once)."""
        device = torch.device(device)
        if device != self.images.device:
            self.images = self.images.to(device, non_blocking=True)
        self.device = device
        return self

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        mean = std = None
        if self.normalize is not None:
            mean = torch.as_tensor(self.normalize.mean, device=self.images.device)
            std = torch.as_tensor(self.normalize.std, device=self.images.device)
            mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        for start in range(0, len(self.images), self.batch_size):
            batch = self.images[start : start + self.batch_size].float().div(255)
            if mean is not None:
                batch = batch.sub_(mean).div_(std)
            yield batch, self.labels[start : start + self.batch_size]


def uint8_batches(dataset: Dataset, batch_size: int) -> UInt8Batches | None:
    """The split as `UInt8Batches`, or None where its transform is not the eval transform
    (an image folder, a custom transform): those keep the per-image loader. Where the eval
    size differs from the stored one, PIL's Resize and CenterCrop run once per image here, as
    the transform would (so the pixels are the same), and never again."""
    from ssl_syre.data import whole_split
    from ssl_syre.data.datasets import ArrayImageDataset

    split, positions = whole_split(dataset)
    if not isinstance(split, ArrayImageDataset) or not isinstance(split.transform, T.Compose):
        return None
    steps = list(split.transform.transforms)
    normalize = steps.pop() if steps and isinstance(steps[-1], T.Normalize) else None
    if [type(step) for step in steps] != [T.Resize, T.CenterCrop, T.ToTensor]:
        return None
    resize, crop = steps[0], steps[1]
    height, width = split.images.shape[1:3]
    labels = torch.from_numpy(split.labels[positions])
    if resize.size in (height, [height]) and list(crop.size) == [height, width]:
        return UInt8Batches(split.uint8_images(positions), labels, batch_size, normalize)
    resized = np.stack([np.asarray(crop(resize(split._image(p)))) for p in positions])
    images = torch.from_numpy(resized)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
    return UInt8Batches(images, labels, batch_size, normalize)


def eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, on_device: bool = True
) -> DataLoader | UInt8Batches:
    """Batches of `dataset` in order: `UInt8Batches` for in-memory splits at their stored size
    when `on_device` (config eval.on_device), else a DataLoader of the eval transform."""
    if on_device:
        batches = uint8_batches(dataset, batch_size)
        if batches is not None:
            return batches
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
        drop_last=False,
    )


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: Iterable[Any],
    projector: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
    progress: str | None = None,
    autocast_bf16: bool = False,
) -> Features:
    """Embed every image of `loader` with the backbone (and the projector on top, if given).

    Every module involved is put in eval mode so that BatchNorm uses its running statistics,
    not the statistics of the evaluation batch (lightly #1440), and does not update them;
    each submodule's mode is restored afterwards. A projector given as a bound method (such
    as `SSLMethod.project`) counts as its owner module: its heads have BatchNorm too.

    Args:
        backbone: The feature extractor; its outputs are flattened to (N, D).
        loader: Yields `(images, labels)`.
        projector: A module or function applied to the backbone features, or None.
        device: Where to run; None means the device of the backbone's parameters.
        progress: A tqdm description, or None for no progress bar.
        autocast_bf16: On CUDA, run the models under bf16 autocast (config eval.autocast_bf16);
            features are returned in fp32 either way.
    """
    owner = getattr(projector, "__self__", None)  # the module of a bound method
    modules = [m for m in (backbone, projector, owner) if isinstance(m, nn.Module)]
    modes = {m: m.training for module in modules for m in module.modules()}
    for module in modules:
        module.eval()
    weight = next(backbone.parameters())
    device = torch.device(device) if device is not None else weight.device
    # Images come as fp32; a backbone trained with trainer.precision=64-true has fp64 weights.
    dtype = weight.dtype if weight.is_floating_point() else torch.float32
    outputs: dict[str, list[Tensor]] = {"backbone": []}
    if projector is not None:
        outputs["projector"] = []
    labels: list[Tensor] = []
    if isinstance(loader, UInt8Batches):
        loader = loader.to(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if autocast_bf16 and device.type == "cuda"
        else contextlib.nullcontext()
    )
    try:
        # disable=None: a bar on a terminal only; in a log or a pipe its partial lines would run
        # into the next message (a one-line error would no longer start its line).
        iterator = tqdm(loader, desc=progress, leave=False, disable=None) if progress else loader
        with autocast:
            for images, targets in iterator:
                features = backbone(images.to(device, dtype, non_blocking=True)).flatten(1)
                # Kept on the device until the end: a .cpu() per batch waits for the GPU.
                outputs["backbone"].append(features.float())
                if projector is not None:
                    outputs["projector"].append(projector(features).float())
                labels.append(torch.as_tensor(targets))
    finally:
        for module, mode in modes.items():
            module.training = mode  # per module: BYOL's momentum copies stay as they were
    return Features(
        labels=torch.cat([label.cpu() for label in labels]),
        by_kind={kind: torch.cat(values).cpu() for kind, values in outputs.items()},
    )


def raw_pixels(loader: Iterable[Any]) -> Features:
    """Flattened pixels as features: the baseline a learned representation must beat."""
    images, labels = [], []
    for batch, targets in loader:
        images.append(batch.flatten(1).float())
        labels.append(torch.as_tensor(targets))
    return Features(labels=torch.cat(labels), by_kind={"raw_pixels": torch.cat(images)})


def split_features(
    backbone: nn.Module,
    projector: Callable[[Tensor], Tensor] | None,
    cfg: Config,
    kinds: Sequence[str],
    device: torch.device | str | None = None,
    datasets: tuple[Dataset, Dataset | None] | None = None,
) -> tuple[Features, Features | None]:
    """Features of the evaluation splits (train, test) for each kind of FEATURE_KINDS in `kinds`.

    The one path from weights to features, for the end of training and for eval/*.py alike:
    the same data sets (`build_eval_datasets(cfg.data, cfg.seed)`), eval transform and batch
    size (`cfg.eval.batch_size`), so that eval/knn.py reproduces metrics.json exactly from the
    same weights. Learned features are extracted once per split; raw pixels come from the
    same images without normalisation. `by_kind` follows the order of `kinds`.

    Args:
        backbone: The feature extractor, already on `device`.
        projector: The projection head over backbone features; used for "projector" only.
        cfg: The run's config: `data`, `seed` and `eval.batch_size` are read.
        kinds: Feature kinds to compute, from FEATURE_KINDS.
        device: Where to run; None means the device of the backbone's parameters.
        datasets: The (train, test) evaluation data sets when the caller has built them
            already; built from `cfg` otherwise.

    Returns:
        `(train, test)`; `test` is None when the data have no test split.
    """
    from ssl_syre.data import build_eval_datasets

    sets = datasets if datasets is not None else build_eval_datasets(cfg.data, cfg.seed)
    named = [
        (dataset, split)
        for dataset, split in zip(sets, ("train", "test"), strict=True)
        if dataset is not None
    ]
    batch = int(cfg.eval.batch_size)
    on_device = bool(getattr(cfg.eval, "on_device", True))
    splits: list[Features] = []
    if any(kind != "raw_pixels" for kind in kinds):
        for dataset, split in named:
            features = extract_features(
                backbone,
                eval_loader(dataset, batch, on_device=on_device),
                projector=projector if "projector" in kinds else None,
                device=device,
                progress=f"features ({split})",
                autocast_bf16=bool(getattr(cfg.eval, "autocast_bf16", False)),
            )
            splits.append(features)
    if "raw_pixels" in kinds:
        unnormalised = build_eval_datasets(cfg.data, cfg.seed, normalize=False)
        raw = [
            raw_pixels(eval_loader(dataset, batch, on_device=on_device))
            for dataset in unnormalised
            if dataset is not None
        ]
        splits = splits or raw
        for features, pixels in zip(splits, raw, strict=True):
            features.by_kind.update(pixels.by_kind)
    for features in splits:
        features.by_kind = {kind: features.by_kind[kind] for kind in kinds}
    return splits[0], (splits[1] if len(splits) > 1 else None)
