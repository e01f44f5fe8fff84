"""MAE's training step written from the paper's description (He et al. 2021, §3 and A.1), in
plain torch on the same weights, against `ssl_syre.methods.mae`.

The paper's recipe, step by step:
- "we generate a token for every input patch (by linear projection with an added positional
  embedding). Next we randomly shuffle the list of tokens and remove the last portion of the
  list, based on the masking ratio." The encoder (a ViT with its class token) sees the rest.
- "we append a list of mask tokens to the list of encoded patches, and unshuffle this full list
  ... The decoder is applied to this full list (with positional embeddings added)"; a linear
  layer after the encoder matches the decoder's width (A.1).
- "The last layer of the decoder is a linear projection whose number of output channels
  equals the number of pixel values in a patch"; the loss is "the mean squared error (MSE)
  between the reconstructed and original images in the pixel space ... only on masked
  patches"; with normalized pixels the target patch is normalized by its own mean and std.
- Optimizer (Table 8): AdamW, betas (0.9, 0.95), weight decay 0.05, lr = 1.5e-4 · batch/256.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from tests.conftest import build_method

pytestmark = pytest.mark.usefixtures("one_thread")

BATCH = 8


def paper_loss(model, images: Tensor, noise: Tensor, mask_ratio: float) -> Tensor:
    vit, decoder = model.backbone, model.decoder
    batch, patch = images.shape[0], model.patch_size
    assert isinstance(vit.norm_pre, nn.Identity)  # test_vit: no norm before the blocks
    # A token for every patch, with its position embedding.
    tokens = vit.patch_embed(images)
    tokens = tokens.flatten(1, 2) if tokens.ndim == 4 else tokens  # test_vit: NHWC tokens
    tokens = tokens + vit.pos_embed[:, 1:]
    count = tokens.shape[1]
    keep = int(count * (1 - mask_ratio))
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    visible = torch.gather(tokens, 1, shuffle[:, :keep, None].expand(-1, -1, tokens.shape[-1]))
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(batch, -1, -1)
    encoded = vit.norm(vit.blocks(torch.cat([cls, visible], dim=1)))
    # Decoder: width-matching linear layer, mask tokens appended, unshuffled, positions added.
    embedded = model.decoder_embed(encoded)
    masks = decoder.mask_token.expand(batch, count - keep, -1)
    full = torch.cat([embedded[:, 1:], masks], dim=1)
    full = torch.gather(full, 1, restore[:, :, None].expand(-1, -1, full.shape[-1]))
    full = torch.cat([embedded[:, :1], full], dim=1) + decoder.pos_embed
    predicted = model.prediction_head(decoder.norm(decoder.blocks(full)))[:, 1:]
    # Target: each patch's pixels (row, column, channel order), normalized per patch.
    target = images.unfold(2, patch, patch).unfold(3, patch, patch)  # B, C, h, w, p, p
    target = target.permute(0, 2, 3, 4, 5, 1).reshape(batch, count, -1)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    masked = torch.ones(batch, count)
    masked[:, :keep] = 0
    masked = torch.gather(masked, 1, restore)
    per_patch = (predicted - target).square().mean(-1)
    return (per_patch * masked).sum() / masked.sum()


def paper_optimizer(model) -> torch.optim.AdamW:
    """AdamW as Table 8, decay 0.05 on the weight matrices; no decay on biases and norms (the
    official repo), nor on the class and mask tokens (timm's ViT convention, which this
    package keeps for every ViT; the official repo decays the two tokens)."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # the fixed sine-cosine position embeddings
        tokens = name in ("backbone.cls_token", "decoder.mask_token")
        (plain if param.ndim <= 1 or name.endswith(".bias") or tokens else decay).append(param)
    lr = 1.5e-4 * BATCH / 256
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def test_one_step_equals_the_papers_step(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = build_method(
        "mae",
        "data.image_size=32",
        f"data.batch_size={BATCH}",
        "syre.enabled=false",  # decay toward 0: the paper's AdamW
        "optimizer.scheduler=constant",
    )
    reference = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 1, 32, 32, generator=generator)
    noise = torch.rand(BATCH, model.num_patches, generator=generator)
    keep = int(model.num_patches * (1 - model.kwargs.mask_ratio))
    shuffle = noise.argsort(dim=1)
    cls = torch.zeros(BATCH, 1, dtype=torch.long)
    mask = (torch.cat([cls, shuffle[:, :keep] + 1], dim=1), shuffle[:, keep:] + 1)
    monkeypatch.setattr(model, "random_mask", lambda batch, device: mask)

    before = model.decoder_embed.weight.detach().clone()
    optimizer = model.configure_optimizers()
    assert model.learning_rate() == pytest.approx(1.5e-4 * BATCH / 256)
    loss = model.training_loss([images])
    expected = paper_loss(reference, images, noise, model.kwargs.mask_ratio)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)

    loss.backward()
    optimizer.step()
    expected.backward()
    paper_optimizer(reference).step()
    ours, theirs = dict(model.named_parameters()), dict(reference.named_parameters())
    moved = 0
    for name, param in theirs.items():
        torch.testing.assert_close(ours[name], param, rtol=1e-5, atol=1e-7, msg=name)
        moved += int(param.requires_grad)
    assert moved > 50
    assert not torch.equal(model.decoder_embed.weight, before)  # the step moved the weights
