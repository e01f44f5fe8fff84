"""MAE: masked patches only, the mask ratio, a gradient-free pixel target, the plain timm ViT
for evaluation and export, the paper's optimizer, and train.py as a user types it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from lightly.transforms import MAETransform
from timm.models.vision_transformer import VisionTransformer

from ssl_syre.config import load_config
from ssl_syre.data import data_info
from ssl_syre.errors import UserError
from ssl_syre.export import export_backbone
from ssl_syre.methods.mae import MAE, pixel_target
from tests.conftest import METHOD_TINY, build_method, losses_on_fixed_views, run_train

pytestmark = pytest.mark.usefixtures("one_thread")

# test_vit with 4-px patches on 32-px images: 64 patches, 16 visible at mask ratio 0.75.
SMALL = ["data.image_size=32", "optimizer.scheduler=constant"]


def build(*extra: str):
    return build_method("mae", *SMALL, *extra)[0]


def images(count: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_loss_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)  # the masks drawn at each step
    model = build("optimizer.lr=0.002")
    views = model.views((torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8), None), 0)
    losses = losses_on_fixed_views(model, views, steps=12, optimizer=model.configure_optimizers())
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses


def test_mask_ratio_is_honoured_and_the_cls_token_always_kept() -> None:
    for ratio, kept in ((0.75, 16), (0.5, 32), (0.9, 6)):
        model = build(f"method_kwargs.mask_ratio={ratio}")
        assert model.num_patches == 64 and model.num_prefix_tokens == 1
        idx_keep, idx_mask = model.random_mask(8, torch.device("cpu"))
        assert idx_keep.shape == (8, 1 + kept) and idx_mask.shape == (8, 64 - kept)
        assert (idx_keep[:, 0] == 0).all()  # the cls token, never masked
        every = torch.cat([idx_keep, idx_mask], dim=1).sort(dim=1).values
        assert torch.equal(every, torch.arange(65).expand(8, -1))  # a partition of the tokens
        assert not torch.equal(idx_mask[0].sort().values, idx_mask[1].sort().values)


def test_loss_counts_the_masked_patches_only() -> None:
    model = build()
    x = images()
    torch.manual_seed(1)
    idx_keep, idx_mask = model.random_mask(8, x.device)
    loss = model.masked_loss(x, idx_keep, idx_mask)

    def shift_tokens(index: torch.Tensor):
        def hook(module, inputs, output):
            output = output.clone()
            rows = torch.arange(output.shape[0]).unsqueeze(1)
            output[rows, index] += 100.0
            return output

        return hook

    # Whatever the decoder says at the visible places is never scored.
    handle = model.decoder.register_forward_hook(shift_tokens(idx_keep))
    assert torch.equal(model.masked_loss(x, idx_keep, idx_mask), loss)
    handle.remove()
    # The test can fail: the same change at one masked place moves the loss.
    handle = model.decoder.register_forward_hook(shift_tokens(idx_mask[:, :1]))
    assert model.masked_loss(x, idx_keep, idx_mask) > loss + 1.0
    handle.remove()
    # The encoder sees the visible patches only: masked pixels do not reach its tokens.
    hidden = x.clone()
    patch = model.patch_size
    for row, place in enumerate(idx_mask[:, 0] - 1):
        top, left = divmod(int(place), 32 // patch)
        hidden[row, :, top * patch : (top + 1) * patch, left * patch : (left + 1) * patch] = 0
    torch.testing.assert_close(
        model.encoder.encode(images=hidden, idx_keep=idx_keep),
        model.encoder.encode(images=x, idx_keep=idx_keep),
    )


def test_target_is_the_normalised_patch_with_no_gradient_path() -> None:
    x = images().requires_grad_()
    target = pixel_target(x, 4, norm_pix_loss=True)
    assert target.shape == (8, 64, 16) and not target.requires_grad
    torch.testing.assert_close(target.mean(-1), torch.zeros(8, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.var(-1), torch.ones(8, 64), atol=1e-3, rtol=0)
    raw = pixel_target(x, 4, norm_pix_loss=False)
    assert torch.equal(raw[0, 0], x.detach()[0, 0, :4, :4].reshape(-1))  # patch 0, row major
    # The loss's gradient reaches the images only through the encoder, never the target.
    model = build("method_kwargs.norm_pix_loss=false")
    for module in model.trainable_parts().values():
        module.requires_grad_(False)
    idx_keep, idx_mask = model.random_mask(8, x.device)
    model.masked_loss(x, idx_keep, idx_mask).backward()
    masked_pixels = x.grad.flatten(2)  # (B, 1, 1024); patch places of the masked tokens
    grid = torch.zeros(8, 64, dtype=torch.bool)
    grid[torch.arange(8).unsqueeze(1), idx_mask - 1] = True
    per_patch = masked_pixels.view(8, 8, 4, 8, 4).permute(0, 1, 3, 2, 4).reshape(8, 64, 16)
    assert per_patch[grid].abs().sum() == 0 and per_patch[~grid].abs().sum() > 0


def test_eval_features_are_the_unmasked_plain_vit() -> None:
    model = build().eval()
    assert isinstance(model.backbone, VisionTransformer)
    assert "encoder" not in dict(model.named_modules())  # no second copy in checkpoints
    assert not any(key.startswith("encoder.") for key in model.state_dict())
    assert copy.deepcopy(model).encoder.vit is not model.backbone  # a copy routes its own ViT
    x = images()
    with torch.no_grad():
        features = model(x)
        # lightly's wrapper without a mask, pooled as timm pools: the same function.
        torch.testing.assert_close(features, model.encoder(images=x))
        torch.testing.assert_close(
            features,
            model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True),
        )
    assert features.shape == (8, model.backbone.num_features)


def test_export_loads_in_plain_timm(tmp_path: Path) -> None:
    model = build().eval()
    with torch.no_grad():
        for param in model.backbone.parameters():  # away from any init timm would redo
            param.add_(0.01 * torch.randn_like(param))
    export_backbone(model, tmp_path / "export")
    x = images(4)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(
        f"""
        import sys, json, timm, torch
        model = timm.create_model("local-dir:{tmp_path / "export"}", pretrained=True).eval()
        x = torch.load("{tmp_path / "x.pt"}", weights_only=True)
        with torch.no_grad():
            torch.save(model(x), "{tmp_path / "out.pt"}")
        print(json.dumps({{"ssl_syre": "ssl_syre" in sys.modules, "type": type(model).__name__}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"ssl_syre": False, "type": "VisionTransformer"}
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), expected)


def test_refuses_a_backbone_it_cannot_mask() -> None:
    cfg = load_config(None, ["method=mae", *METHOD_TINY])  # test_resnet
    with pytest.raises(UserError, match="needs a timm VisionTransformer"):
        MAE(cfg, data_info(cfg.data))
    # One 16-px patch of a 16-px digit: nothing to keep and mask at once.
    with pytest.raises(UserError, match="at least one visible and one masked"):
        build_method("mae", "backbone.kwargs.patch_size=16")


def test_view_is_lightlys_mae_transform() -> None:
    model, cfg = build_method("mae", *SMALL, "data.min_scale=0.3")
    (recipe,) = model.view_recipes(model.info, cfg.data)
    crop, flip, _, normalize = MAETransform(
        input_size=32, min_scale=0.3, normalize={"mean": [0.5], "std": [0.25]}
    ).transform.transforms
    assert (recipe.input_size, recipe.min_scale, recipe.max_scale) == (32, *crop.scale)
    assert recipe.interpolation == str(crop.interpolation.value).lower() == "bicubic"
    assert recipe.hf_prob == flip.p and recipe.vf_prob == 0
    assert recipe.cj_prob == recipe.random_gray_scale == recipe.gaussian_blur == 0
    assert recipe.solarization_prob == 0
    assert recipe.mean == tuple(model.info.mean) and recipe.std == tuple(model.info.std)
    assert type(normalize).__name__ == "Normalize"


@pytest.mark.parametrize("enabled", ["true", "false"])
def test_paper_optimizer_and_what_syre_covers(enabled: str) -> None:
    model = build(f"syre.enabled={enabled}")
    opt = model.cfg.optimizer
    assert (opt.name, opt.weight_decay, list(opt.betas)) == ("adamw", 0.05, [0.9, 0.95])
    optimizer = model.configure_optimizers()
    assert all(group["betas"] == (0.9, 0.95) for group in optimizer.param_groups)
    group_of = {id(p): g["name"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    covered = set(model.syre.covered_names)
    # Every trainable part has anchored weights: encoder, decoder, its embedding and head.
    assert {name.split(".")[0] for name in covered} == set(model.parts)
    for name in ("decoder.mask_token", "backbone.cls_token"):
        assert name not in covered and group_of[id(params[name])] == "no_decay"
    for name in ("backbone.pos_embed", "decoder.pos_embed"):  # fixed sine-cosine
        assert not params[name].requires_grad and id(params[name]) not in group_of
    assert all(group_of[id(params[name])] == "syre" for name in covered)
    assert group_of[id(params["decoder.norm.weight"])] == "no_decay"


@pytest.mark.slow
def test_train_py_runs_mae_as_a_user_types_it(tmp_path: Path) -> None:
    done = run_train(
        "method=mae",
        "backbone.name=test_vit",
        "data.image_size=32",
        "trainer.max_steps=3",
        "data.train_subset=256",
        "data.test_subset=256",
        "data.batch_size=64",
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
        f"output_dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics,) = tmp_path.glob("*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["run"]["steps"] == 3
    assert (metrics.parent / "export" / "model.safetensors").is_file()
