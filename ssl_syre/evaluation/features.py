"""Feature extraction from frozen models: eval mode (BN frozen), no gradients, once per run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from ssl_syre.config import Config

FEATURE_KINDS = ("backbone", "projector", "raw_pixels")


@dataclass
class Features:
    """Cached embeddings of one split: `by_kind` maps 'backbone'/'projector'/... to N x D."""

    labels: Tensor
    by_kind: dict[str, Tensor] = field(default_factory=dict)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
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
    loader: DataLoader,
    projector: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
    progress: str | None = None,
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
    try:
        iterator = tqdm(loader, desc=progress, leave=False) if progress else loader
        for images, targets in iterator:
            features = backbone(images.to(device, dtype, non_blocking=True)).flatten(1)
            outputs["backbone"].append(features.float().cpu())
            if projector is not None:
                outputs["projector"].append(projector(features).float().cpu())
            labels.append(torch.as_tensor(targets).cpu())
    finally:
        for module, mode in modes.items():
            module.training = mode  # per module: BYOL's momentum copies stay as they were
    return Features(labels=torch.cat(labels), by_kind={k: torch.cat(v) for k, v in outputs.items()})


def raw_pixels(loader: DataLoader) -> Features:
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
    splits: list[Features] = []
    if any(kind != "raw_pixels" for kind in kinds):
        for dataset, split in named:
            features = extract_features(
                backbone,
                eval_loader(dataset, batch),
                projector=projector if "projector" in kinds else None,
                device=device,
                progress=f"features ({split})",
            )
            splits.append(features)
    if "raw_pixels" in kinds:
        unnormalised = build_eval_datasets(cfg.data, cfg.seed, normalize=False)
        raw = [
            raw_pixels(eval_loader(dataset, batch))
            for dataset in unnormalised
            if dataset is not None
        ]
        splits = splits or raw
        for features, pixels in zip(splits, raw, strict=True):
            features.by_kind.update(pixels.by_kind)
    for features in splits:
        features.by_kind = {kind: features.by_kind[kind] for kind in kinds}
    return splits[0], (splits[1] if len(splits) > 1 else None)
