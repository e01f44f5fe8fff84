"""Split BatchNorm: per-subset statistics in training, plain BatchNorm2d in eval and in its
tensors, and MoCo's keys no longer normalized with their queries' statistics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ssl_syre.methods.split_batchnorm import SplitBatchNorm2d, split_batch_norms, subset_count
from tests.conftest import build_method

pytestmark = pytest.mark.usefixtures("one_thread")


def plain_and_split(num_splits: int = 4) -> tuple[nn.BatchNorm2d, SplitBatchNorm2d]:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    holder = nn.Sequential(plain)
    split_batch_norms(holder, num_splits)
    reference = nn.BatchNorm2d(3)
    reference.load_state_dict(plain.state_dict())
    return reference, holder[0]


def test_each_subset_is_normalized_by_its_own_statistics() -> None:
    plain, split = plain_and_split(4)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    out = split(x)
    expected = torch.empty_like(x)
    means, variances = [], []
    for j in range(4):  # subset j: samples j, j + 4
        subset = x[j::4]
        one = nn.BatchNorm2d(3)
        one.load_state_dict(plain.state_dict())
        expected[j::4] = one(subset)
        means.append(one.running_mean)
        variances.append(one.running_var)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(split.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack(variances).mean(0))
    assert not torch.allclose(out, plain(x))  # the whole batch's statistics differ
    assert int(split.num_batches_tracked) == 1


def test_in_eval_and_in_its_tensors_it_is_plain_batchnorm() -> None:
    plain, split = plain_and_split(4)
    split(torch.randn(8, 3, 5, 5))  # move the running statistics
    plain.load_state_dict(split.state_dict())  # strict: the same names and shapes
    plain.eval(), split.eval()
    x = torch.randn(6, 3, 5, 5)
    torch.testing.assert_close(split(x), plain(x))


def test_subsets_divide_the_batch_with_two_samples_or_more() -> None:
    assert subset_count(512, 8) == 8
    assert subset_count(8, 8) == 4
    assert subset_count(12, 8) == 6
    assert subset_count(7, 8) == 1
    assert subset_count(64, 1) == 1


def test_moco_keys_no_longer_share_their_queries_statistics() -> None:
    """Key and query encoders start equal; on the same images, plain BatchNorm after a batch
    shuffle gives each key exactly its query (the statistics are the whole batch's either way);
    with split BatchNorm the shuffled key lands in another subset, with other statistics."""

    def query_and_key(*overrides: str) -> tuple[torch.Tensor, torch.Tensor]:
        model, _ = build_method("mocov2", *overrides)
        size = model.info.image_size
        x = torch.randn(16, 1, size, size, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)  # the shuffle
        with torch.no_grad():
            return model.projection_head(model.backbone(x)), model.keys(x)

    query, key = query_and_key("method_kwargs.split_bn=1")
    torch.testing.assert_close(key, query, rtol=1e-4, atol=1e-5)  # the leak
    query, key = query_and_key()  # the default: split
    assert not torch.allclose(key, query, rtol=1e-3, atol=1e-4)


def test_split_bn_keeps_syre_coverage_weights_and_a_plain_backbone() -> None:
    from ssl_syre.backbones import create_backbone

    torch.manual_seed(0)
    split, _ = build_method("mocov2")
    torch.manual_seed(0)
    plain, _ = build_method("mocov2", "method_kwargs.split_bn=1")
    assert split.kwargs.split_bn == 8
    assert any(isinstance(m, SplitBatchNorm2d) for m in split.backbone.modules())
    assert any(isinstance(m, SplitBatchNorm2d) for m in split.backbone_momentum.modules())
    assert not any(isinstance(m, SplitBatchNorm2d) for m in plain.backbone.modules())
    assert split.syre.covered_names == plain.syre.covered_names
    split_state, plain_state = split.state_dict(), plain.state_dict()
    assert split_state.keys() == plain_state.keys()
    assert all(torch.equal(split_state[k], plain_state[k]) for k in split_state)
    backbone = create_backbone("test_resnet", in_chans=1, small_image_stem=True)
    backbone.load_state_dict(split.backbone.state_dict())  # strict


def test_under_ddp_moco_batchnorm_is_not_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several processes: the key batch is shuffled across them, and BatchNorm is plain."""
    model, _ = build_method("mocov2")
    world = SimpleNamespace(world_size=2)
    monkeypatch.setattr(type(model), "trainer", property(lambda self: world))
    model.on_fit_start()
    for part in (model.backbone, model.backbone_momentum):
        norms = [m for m in part.modules() if isinstance(m, SplitBatchNorm2d)]
        assert norms and all(m.num_splits == 1 for m in norms)


def test_a_backbone_with_other_batchnorm_types_is_refused_with_the_fix() -> None:
    """timm's BatchNormAct2d (EfficientNet) is not split: one error line naming the key."""
    from ssl_syre.errors import UserError

    with pytest.raises(UserError, match="method_kwargs.split_bn=1"):
        build_method("mocov2", "backbone.name=test_efficientnet", "backbone.small_image_stem=false")
    model, _ = build_method(
        "mocov2",
        "backbone.name=test_efficientnet",
        "backbone.small_image_stem=false",
        "method_kwargs.split_bn=1",
    )
    assert not any(isinstance(m, SplitBatchNorm2d) for m in model.backbone.modules())
