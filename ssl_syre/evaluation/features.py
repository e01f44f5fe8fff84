"""Feature extraction from frozen models: eval mode (BN frozen), no gradients, once per run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


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
