"""iBOT: DINO's self-distillation on the [CLS] token plus a masked patch loss, from lightly's
`IBOTPatchLoss`, `MaskedVisionTransformerTIMM` and `random_block_mask` on a timm ViT.

- [0] iBOT, 2021, https://arxiv.org/abs/2111.07832
- [1] lightly's ImageNet benchmark, benchmarks/imagenet/vitb16/ibot.py
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightly.loss import IBOTPatchLoss
from lightly.models.modules import DINOProjectionHead, MaskedVisionTransformerTIMM
from lightly.models.utils import random_block_mask
from torch import Tensor, nn

from ssl_syre.config import ranged
from ssl_syre.errors import UserError
from ssl_syre.methods.dino import DINO, DINOKwargs, is_vit, parametrize_last_layer
from ssl_syre.methods.prototype_koleo import add_prototype_koleo

# The weight-normalised layers' magnitude g: a per-prototype scale (shape (K, 1)).
MAGNITUDE = "last_layer.parametrizations.weight.original0"


@dataclass
class IBOTKwargs(DINOKwargs):
    patch_loss_weight: float = ranged(1.0, "[0, inf)")  # iBOT's λ on the masked patch loss
    # Teacher temperature 0.04 -> 0.07 over 30 epochs (iBOT's recipe and lightly's benchmark).
    teacher_temp: float = ranged(0.07, "(0, inf)")
    # lightly's IBOTTransform: 10 local crops, scales split at 0.25.
    n_local_views: int = ranged(10, "[0, inf)")
    global_crop_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.25])
    # lightly's benchmark and the iBOT paper's ViT-S recipe share the [CLS] and patch head.
    separate_patch_head: bool = False
    # Block masking as lightly's random_block_mask (DINOv2's collate): this share of the
    # images is masked, each at a ratio drawn between the two bounds (iBOT: 0.3 ± 0.2).
    masked_image_share: float = ranged(0.5, "[0, 1]")
    mask_ratio_min: float = ranged(0.1, "[0, 1]")
    mask_ratio_max: float = ranged(0.5, "[0, 1]")
    # None: (min(H, W) // 3)² patches, lightly's iBOT benchmark; its DINOv2 benchmark: 4.
    min_patches_per_block: int | None = ranged(None, "[0, inf)")


class MaskToken(nn.Module):
    """The learned embedding that replaces a masked patch's token (zeros at the start, as in
    iBOT's code and lightly's wrapper); a part of its own, so SyRe and the optimizer see it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))


class IBOT(DINO):
    """DINO on the [CLS] token plus masked image modelling by self-distillation [0].

    The student sees the two global crops with blocks of patches replaced by a mask token and
    predicts, for each masked patch, the teacher's distribution over K prototypes for the
    same unmasked patch (`IBOTPatchLoss`, counting masked tokens only); the local crops go
    through the student unmasked, for DINO's loss. The teacher (backbone and heads) follows
    the student by EMA and is never anchored. ViT backbones only.

    SyRe covers the backbone, the heads (their prototype directions v, not the magnitude g)
    and the mask token; see docs/syre.md for what an anchor means for a weight-normalised
    layer.
    """

    name = "ibot"
    Kwargs = IBOTKwargs
    parts = ("backbone", "projection_head", "patch_head", "mask_token")
    needs_vit = True

    # ----- heads ---------------------------------------------------------------------------
    def build_heads(self, feature_dim: int) -> None:
        if not is_vit(self.backbone):
            raise UserError(
                f"method={self.name} needs a ViT backbone (its masked patch loss works on "
                f"patch tokens), got backbone.name={self.cfg.backbone.name}; use e.g. "
                "backbone.name=test_vit data.image_size=32, or vit_small_patch16_224"
            )
        k = self.kwargs
        if k.mask_ratio_min > k.mask_ratio_max:
            raise UserError(
                f"method_kwargs.mask_ratio_min={k.mask_ratio_min} is above "
                f"mask_ratio_max={k.mask_ratio_max}; swap them"
            )
        super().build_heads(feature_dim)
        self.patch_criterion = IBOTPatchLoss(
            output_dim=k.projection_output_dim,
            teacher_temp=k.teacher_temp,
            student_temp=k.student_temp,
            center_momentum=k.center_momentum,
        )

    def make_head(self) -> nn.Module:
        """A head like DINO's (the [CLS] head), weight norm in torch's parametrization form."""
        k = self.kwargs
        with warnings.catch_warnings():  # lightly's head uses torch's deprecated weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            head = DINOProjectionHead(
                self.feature_dim,
                k.projection_hidden_dim,
                k.bottleneck_dim,
                k.projection_output_dim,
                batch_norm=False if k.batch_norm is None else k.batch_norm,
                freeze_last_layer=k.freeze_last_layer,
                norm_last_layer=k.norm_last_layer,
            )
        parametrize_last_layer(head, k.norm_last_layer)
        return head

    def replace_cls_head(self) -> None:
        """DINOv2 swaps in its own head here; iBOT keeps DINO's."""

    def build_momentum_copies(self) -> None:
        # DINO.build_heads calls this once its head exists: the place to add iBOT's parts,
        # so that the teacher copies every head.
        self.replace_cls_head()
        self.mask_token = MaskToken(self.feature_dim)
        if self.kwargs.separate_patch_head:
            self.patch_head = self.make_head()
            self.momentum_parts = ("backbone", "projection_head", "patch_head")
        super().build_momentum_copies()

    def train(self, mode: bool = True) -> IBOT:
        """Train or eval mode for the student; the teacher stays in eval mode, so a drop path
        (`backbone.kwargs.drop_path_rate`, the recipes' 0.1) acts on the student only, as
        lightly's benchmarks freeze their teacher in eval mode."""
        super().train(mode)
        for part in self.momentum_parts:
            getattr(self, f"{part}_momentum").eval()
        return self

    def patch_heads(self) -> tuple[nn.Module, nn.Module]:
        """(student, teacher) patch heads: the [CLS] heads unless separate_patch_head."""
        if self.kwargs.separate_patch_head:
            return self.patch_head, self.patch_head_momentum
        return self.projection_head, self.projection_head_momentum

    def trainable_parts(self) -> dict[str, nn.Module]:
        # A shared patch head is the [CLS] head: trained, covered and stored once.
        return {part: getattr(self, part) for part in self.parts if hasattr(self, part)}

    def no_weight_decay(self) -> set[str]:
        """The heads' weight-norm magnitudes g: scales, as timm leaves norm scales undecayed
        (the official code decays them because their (K, 1) shape is 2-D)."""
        return {f"{part}.{MAGNITUDE}" for part in ("projection_head", "patch_head")}

    def prototype_weights(self) -> dict[str, Tensor]:
        heads = {"projection_head": self.projection_head}
        if self.kwargs.separate_patch_head:
            heads["patch_head"] = self.patch_head
        return {
            f"{name}.last_layer": nn.functional.normalize(head.last_layer.weight.detach(), dim=1)
            for name, head in heads.items()
        }

    def on_after_backward(self) -> None:
        # DINO's frozen last layer, for every student head: no gradient, no step, no decay.
        if self.current_epoch < self.kwargs.freeze_last_layer:
            for head in {id(h): h for h in (self.projection_head, self.patch_heads()[0])}.values():
                for param in head.last_layer.parameters():
                    param.grad = None

    # ----- masking -------------------------------------------------------------------------
    def patch_mask(self, count: int, grid: tuple[int, int]) -> Tensor:
        """(count, H, W) block mask, made on the CPU (lightly's sampler reads its tensors
        back on the host), True where a patch is masked."""
        k = self.kwargs
        height, width = grid
        smallest = int(height * width * k.mask_ratio_min)  # the fewest patches of a mask
        per_block = (
            (min(height, width) // 3) ** 2
            if k.min_patches_per_block is None
            else k.min_patches_per_block
        )
        return random_block_mask(
            size=(count, height, width),
            batch_mask_ratio=k.masked_image_share,
            min_image_mask_ratio=k.mask_ratio_min,
            max_image_mask_ratio=k.mask_ratio_max,
            min_num_masks_per_block=min(per_block, smallest),
            device="cpu",
        )

    def encoder(self, backbone: nn.Module) -> MaskedVisionTransformerTIMM:
        """lightly's masked-ViT view of a timm ViT with this model's mask token (made per
        step: it holds no state of its own, and registering it would store the ViT twice)."""
        return MaskedVisionTransformerTIMM(
            vit=backbone,
            mask_token=self.mask_token.token,
            weight_initialization="skip",
            antialias=False,
            pos_embed_initialization="skip",
        )

    # ----- the loss ------------------------------------------------------------------------
    def teacher_temperature(self) -> float:
        """The teacher temperature of both losses: DINOLoss's per-epoch warm-up."""
        k, epoch = self.kwargs, self.current_epoch
        if epoch < k.warmup_teacher_temp_epochs:
            return float(self.criterion.teacher_temp_schedule[epoch])
        return float(k.teacher_temp)

    def forward_views(self, views: Sequence[Tensor]) -> dict[str, Any]:
        """Teacher and student outputs: [CLS] outputs of every view, patch outputs of the
        masked tokens of the global crops, and the mask."""
        global_views = torch.cat(list(views[:2]))
        patch = self.patch_size() or 1
        grid = (global_views.shape[-2] // patch, global_views.shape[-1] // patch)
        block_mask = self.patch_mask(len(global_views), grid)
        masked = int(block_mask.sum())  # on the CPU: no wait for the device
        block_mask = block_mask.to(global_views.device, non_blocking=True)
        prefix = int(self.backbone.num_prefix_tokens)
        token_mask = torch.cat(
            [block_mask.new_zeros(len(block_mask), prefix), block_mask.flatten(1)], 1
        )
        student_head, teacher_head = self.patch_heads()
        with torch.no_grad():
            tokens = self.backbone_momentum.forward_features(global_views)
            teacher_cls = self.projection_head_momentum(self.backbone_momentum.forward_head(tokens))
            teacher_patch = teacher_head(tokens[token_mask]) if masked else None
        tokens = self.encoder(self.backbone).encode(global_views, mask=token_mask)
        student_features = self.backbone.forward_head(tokens)
        student_cls = self.projection_head(student_features)
        student_patch = student_head(tokens[token_mask]) if masked else None
        return {
            "teacher_cls": list(teacher_cls.detach().chunk(2)),
            "student_cls": [*student_cls.chunk(2), *self.student(views[2:])],
            "student_features": student_features,
            "teacher_patch": teacher_patch,
            "student_patch": student_patch,
            "block_mask": block_mask,
        }

    def losses(self, views: Sequence[Tensor]) -> dict[str, Any]:
        """The [CLS] (DINO) and masked patch losses, and the outputs they came from."""
        self.update_momentum_copies()  # the teacher: once per optimizer step
        out = self.forward_views(views)
        temperature = self.teacher_temperature()
        cls_loss = self.criterion(out["teacher_cls"], out["student_cls"], teacher_temp=temperature)
        if out["student_patch"] is None:  # nothing masked in this batch: no patch term
            patch_loss = cls_loss.new_zeros(())
        else:
            patch_loss = self.patch_criterion(
                out["teacher_patch"],
                out["student_patch"],
                mask=out["block_mask"],
                teacher_temp=temperature,
            )
        self.log("train/cls_loss", cls_loss.detach())
        self.log("train/patch_loss", patch_loss.detach())
        return {**out, "cls_loss": cls_loss, "patch_loss": patch_loss}

    def student_prototypes(self) -> list[Tensor]:
        """The [CLS] head's prototypes, and the patch head's when separate."""
        heads = {id(h): h for h in (self.projection_head, self.patch_heads()[0])}.values()
        return [h.last_layer.weight for h in heads]

    def total_loss(self, losses: dict[str, Any]) -> Tensor:
        """λ-weighted sum of `losses`' terms (DINOv2 adds its KoLeo on the features)."""
        k = self.kwargs
        loss = losses["cls_loss"] + k.patch_loss_weight * losses["patch_loss"]
        return add_prototype_koleo(self, loss, self.student_prototypes(), k.prototype_koleo_weight)

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        return self.total_loss(self.losses(views))
