"""MAE from lightly's masked-ViT encoder wrapper and decoder, on a plain timm ViT.

- [0] Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1] https://github.com/facebookresearch/mae (models_mae.py: the loss and its norm_pix_loss)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from lightly.models import utils
from lightly.models.modules import (
    MaskedVisionTransformerDecoderTIMM,
    MaskedVisionTransformerTIMM,
)
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from lightly.transforms import MAETransform
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.errors import UserError
from ssl_syre.methods.base import SSLMethod

# MAETransform's horizontal flip (torchvision's RandomHorizontalFlip default).
FLIP_PROB = 0.5
# MAETransform's default crop scale minimum (the official main_pretrain.py's 0.2).
MAE_MIN_SCALE = 0.2
# The official norm_pix_loss: (patch - mean) / sqrt(var + 1e-6), var unbiased as torch's.
NORM_PIX_EPS = 1e-6


@dataclass
class MAEKwargs:
    # Share of the patches hidden from the encoder (the paper's 75%, its Fig. 5).
    mask_ratio: float = ranged(0.75, "(0, 1)")
    # The paper's default decoder for ViT-B/L/H: 8 blocks of width 512 (its Table 1).
    decoder_dim: int = ranged(512, "[1, inf)")
    decoder_depth: int = ranged(8, "[1, inf)")
    decoder_num_heads: int = ranged(16, "[1, inf)")
    # Targets are the pixels of each patch normalised by its own mean and std (the paper's
    # default, §3 "Reconstruction target"); false: the raw (data-normalised) pixels.
    norm_pix_loss: bool = True


def masked_vit(backbone: nn.Module, name: str) -> VisionTransformer:
    """The backbone as a timm VisionTransformer, or a one-line refusal."""
    if not isinstance(backbone, VisionTransformer):
        raise UserError(
            f"method=mae needs a timm VisionTransformer backbone, not {name} "
            f"({type(backbone).__name__}); set backbone.name=test_vit (CPU) or "
            "vit_base_patch16_224, with data.image_size a multiple of the patch size"
        )
    return backbone


def pixel_target(images: Tensor, patch_size: int, norm_pix_loss: bool) -> Tensor:
    """The reconstruction target of every patch, (B, N, patch² · C), with no gradient path:
    the images are the target, never something the loss may move."""
    patches = utils.patchify(images.detach(), patch_size)
    if norm_pix_loss:
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        patches = (patches - mean) / (var + NORM_PIX_EPS).sqrt()
    return patches


def mae_transform_kwargs(info: DataInfo, data_cfg: DataConfig) -> dict[str, Any]:
    """Arguments of lightly's MAETransform: crop size, min_scale (data.min_scale, the data
    set's own, else MAETransform's 0.2) and normalisation. Jitter settings (data.cj_strength)
    do not apply: MAE crops and flips only."""
    base = ssl_transform_kwargs(info, data_cfg)
    kwargs: dict[str, Any] = {"input_size": base["input_size"], "normalize": base["normalize"]}
    if "min_scale" in base:
        kwargs["min_scale"] = float(base["min_scale"])
    return kwargs


class MAE(SSLMethod):
    """Masked autoencoder: a ViT encodes a random 25% of the patches, a light decoder
    reconstructs the pixels of the other 75%, and the loss counts the masked patches only [0].

    `backbone` is the plain timm ViT (what is exported and evaluated, unmasked); lightly's
    `MaskedVisionTransformerTIMM` wraps the same module for the masked forward pass and gives
    it MAE's initialisation (xavier-uniform linears, fixed 2-D sine-cosine position embedding).
    Nothing keeps MAE from collapsing but its target: pixels cannot collapse.
    """

    name = "mae"
    Kwargs = MAEKwargs
    parts = ("backbone", "decoder_embed", "decoder", "prediction_head")
    needs_vit = True
    # The paper's Table 8: AdamW, betas (0.9, 0.95), weight decay 0.05, base lr 1.5e-4 per 256
    # images; one warm-up epoch of its 40, so that short runs validate.
    config_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": {
            "name": "adamw",
            "lr": 1.5e-4,
            "scale_lr": True,
            "lr_reference_batch": 256,
            "weight_decay": 0.05,
            "betas": [0.9, 0.95],
            "warmup_epochs": 1,
        }
    }

    def build_heads(self, feature_dim: int) -> None:
        k = self.kwargs
        vit = masked_vit(self.backbone, self.cfg.backbone.name)
        # Not a registered sub-module: its `vit` is `self.backbone`, whose weights would
        # appear twice in checkpoints; it only routes the masked forward pass. Its own
        # mask_token is never used (MAE's encoder drops masked patches; the decoder has one).
        self.__dict__["encoder"] = MaskedVisionTransformerTIMM(vit=vit)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.num_patches = int(vit.patch_embed.num_patches)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        keep = int(self.num_patches * (1 - k.mask_ratio))
        if keep < 1 or keep >= self.num_patches:
            raise UserError(
                f"method_kwargs.mask_ratio={k.mask_ratio} of {self.num_patches} patches "
                f"leaves {keep} visible; MAE needs at least one visible and one masked patch "
                "(raise data.image_size or lower backbone.kwargs.patch_size)"
            )
        self.decoder_embed = nn.Linear(vit.embed_dim, k.decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=self.num_patches,
            embed_dim=k.decoder_dim,
            depth=k.decoder_depth,
            num_heads=k.decoder_num_heads,
            num_prefix_tokens=self.num_prefix_tokens,
        )
        self.prediction_head = nn.Linear(k.decoder_dim, self.patch_size**2 * self.info.in_chans)
        # Outside the decoder, so initialised here (as lightly's benchmark does).
        self.decoder_embed.apply(init_weights)
        self.prediction_head.apply(init_weights)

    def no_weight_decay(self) -> set[str]:
        """The decoder's mask token, like timm's cls_token: no decay and no anchor."""
        return {"decoder.mask_token"}

    def random_mask(self, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(idx_keep, idx_mask) over the token sequence: prefix tokens (cls) always kept,
        int(N · (1 − mask_ratio)) random patches kept, the rest masked (lightly's
        `random_token_mask` over the patches)."""
        keep, mask = utils.random_token_mask(
            size=(batch_size, self.num_patches),
            mask_ratio=self.kwargs.mask_ratio,
            mask_class_token=True,  # over the patches alone: every patch may be masked
            device=device,
        )
        prefix = torch.arange(self.num_prefix_tokens, device=device).expand(batch_size, -1)
        shift = self.num_prefix_tokens
        return torch.cat([prefix, keep + shift], dim=1), mask + shift

    def reconstruct(self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor) -> Tensor:
        """Predicted pixels of the masked patches, (B, masked, patch² · C)."""
        encoded = self.encoder.encode(images=images, idx_keep=idx_keep)
        embedded = self.decoder_embed(encoded)
        # The kept tokens at their places in a full-length sequence; the decoder puts its
        # mask token at the masked places.
        sequence = embedded.new_zeros(
            embedded.shape[0], self.num_patches + self.num_prefix_tokens, embedded.shape[-1]
        )
        sequence = utils.set_at_index(sequence, idx_keep, embedded)
        decoded = self.decoder(sequence, idx_mask=idx_mask)
        return self.prediction_head(utils.get_at_index(decoded, idx_mask))

    def masked_loss(self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor) -> Tensor:
        """Mean squared error over the masked patches only, each patch's error averaged over
        its pixels (the official loss: (pred − target)².mean(-1), mean over masked)."""
        predictions = self.reconstruct(images, idx_keep, idx_mask)
        target = pixel_target(images, self.patch_size, self.kwargs.norm_pix_loss)
        target = utils.get_at_index(target, idx_mask - self.num_prefix_tokens)
        return (predictions - target).square().mean()

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        images = views[0]
        idx_keep, idx_mask = self.random_mask(images.shape[0], images.device)
        return self.masked_loss(images, idx_keep, idx_mask)

    def project(self, features: Tensor) -> Tensor:
        """MAE has no projector: the decoder's input embedding of the pooled feature stands in
        for it in the projector metrics."""
        return self.decoder_embed(features)

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> MAETransform:
        return MAETransform(**mae_transform_kwargs(info, data_cfg))

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        """MAETransform's one view: a bicubic random resized crop and a horizontal flip."""
        kwargs = mae_transform_kwargs(info, data_cfg)
        normalize = kwargs["normalize"]
        recipe = ViewRecipe(
            input_size=int(kwargs["input_size"]),
            cj_prob=0.0,
            cj_strength=0.0,
            cj_bright=0.0,
            cj_contrast=0.0,
            cj_sat=0.0,
            cj_hue=0.0,
            min_scale=float(kwargs.get("min_scale", MAE_MIN_SCALE)),
            random_gray_scale=0.0,
            gaussian_blur=0.0,
            sigmas=(0.1, 2.0),  # unused: no blur
            vf_prob=0.0,
            hf_prob=FLIP_PROB,
            mean=tuple(float(m) for m in normalize["mean"]),
            std=tuple(float(s) for s in normalize["std"]),
            interpolation="bicubic",
        )
        return [recipe]
