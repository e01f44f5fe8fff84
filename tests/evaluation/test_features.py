"""extract_features: BatchNorm in eval mode for the backbone and a bound-method projector."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ssl_syre.evaluation.features import eval_loader, extract_features


class Method(nn.Module):
    """Like SSLMethod: a backbone, a head with BatchNorm, `project` as a method."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        self.projection_head = nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3))
        self.frozen_copy = nn.BatchNorm1d(3).eval()  # like BYOL's momentum networks

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection_head(features)


def test_bound_method_projector_runs_in_eval_mode_and_modes_are_restored() -> None:
    torch.manual_seed(0)
    method = Method().train()
    method.frozen_copy.eval()
    state = {k: v.clone() for k, v in method.state_dict().items()}
    data = TensorDataset(torch.randn(10, 4) * 5 + 3, torch.zeros(10, dtype=torch.long))
    features = extract_features(method.backbone, eval_loader(data, 4), projector=method.project)
    # Running statistics untouched: BN saw no batch statistics.
    assert all(torch.equal(state[k], v) for k, v in method.state_dict().items())
    # Batch size does not matter in eval mode (train-mode BN would differ per batch).
    again = extract_features(method.backbone, eval_loader(data, 10), projector=method.project)
    torch.testing.assert_close(features.by_kind["projector"], again.by_kind["projector"])
    assert method.training and method.projection_head.training and method.backbone.training
    assert not method.frozen_copy.training


def test_fp64_backbone_takes_fp32_images() -> None:
    """trainer.precision=64-true trains fp64 weights; evaluation images stay fp32."""
    torch.manual_seed(0)
    method = Method()
    data = TensorDataset(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))
    reference = extract_features(method.backbone, eval_loader(data, 3), projector=method.project)
    method.double()
    features = extract_features(method.backbone, eval_loader(data, 3), projector=method.project)
    assert features.by_kind["backbone"].dtype == torch.float32  # stored as fp32 either way
    torch.testing.assert_close(features.by_kind["projector"], reference.by_kind["projector"])


def test_uint8_batches_give_the_per_image_loaders_features_bit_for_bit(one_thread) -> None:
    from ssl_syre.config import DataConfig
    from ssl_syre.data import build_eval_datasets
    from ssl_syre.evaluation.features import UInt8Batches, raw_pixels
    from tests.conftest import build_method

    model, _ = build_method("simclr")
    train, _ = build_eval_datasets(DataConfig(name="digits", train_subset=300), seed=0)
    fast, slow = eval_loader(train, 64), eval_loader(train, 64, on_device=False)
    assert isinstance(fast, UInt8Batches) and not isinstance(slow, UInt8Batches)
    ours = extract_features(model.backbone, fast, projector=model.project)
    theirs = extract_features(model.backbone, slow, projector=model.project)
    assert torch.equal(ours.labels, theirs.labels)
    for kind in ("backbone", "projector"):
        assert torch.equal(ours.by_kind[kind], theirs.by_kind[kind]), kind
    raw, _ = build_eval_datasets(DataConfig(name="digits", train_subset=300), 0, normalize=False)
    fast_pixels = raw_pixels(eval_loader(raw, 64))
    slow_pixels = raw_pixels(eval_loader(raw, 64, on_device=False))
    assert torch.equal(fast_pixels.by_kind["raw_pixels"], slow_pixels.by_kind["raw_pixels"])


def test_other_transforms_keep_the_per_image_loader() -> None:
    from ssl_syre.config import DataConfig
    from ssl_syre.data import build_ssl_dataset
    from ssl_syre.evaluation.features import UInt8Batches

    data = TensorDataset(torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
    assert not isinstance(eval_loader(data, 4), UInt8Batches)
    views = build_ssl_dataset(DataConfig(name="digits"), transform=lambda image: image, seed=0)
    assert not isinstance(eval_loader(views, 4), UInt8Batches)
