"""Base LightningModule for SSL methods: backbone, optimizer, schedule, SyRe and logging.

A method subclass adds only its heads, its loss and its transform (as solo-learn's methods do),
so a new method is one new file registered in `ssl_syre.methods.METHODS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from ssl_syre.backbones import backbone_kwargs_for_size, check_input_size, create_backbone
from ssl_syre.config import DataConfig, syre_mode, with_defaults
from ssl_syre.data import DataInfo
from ssl_syre.data.augment import BatchAugment, ViewRecipe, augment_seed, process_rank
from ssl_syre.errors import UserError, suggest
from ssl_syre.lars import SyReLARS
from ssl_syre.syre import SyRe, steady_pull, syre_param_groups


class CosineSchedule(CosineWarmupScheduler):
    """lightly's cosine schedule whose length comes from this run's config, not a checkpoint.

    A run resumed with a larger trainer.max_epochs then stretches its schedule to the new end
    (as BYOL's momentum schedule does), instead of idling at the final lr past the old end.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        length = {"warmup_epochs": self.warmup_epochs, "max_epochs": self.max_epochs}
        super().load_state_dict(state_dict)
        self.__dict__.update(length)
        # The optimizer's lr was restored before this; set it from the schedule it follows now.
        for group, base_lr, scale in zip(
            self.optimizer.param_groups, self.base_lrs, self.lr_lambdas, strict=True
        ):
            group["lr"] = base_lr * scale(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class SSLMethod(pl.LightningModule):
    """Common machinery of all methods.

    Subclasses set `name`, `Kwargs` (a dataclass of method settings, config key
    `method_kwargs`) and `parts`, and implement `build_heads`, `training_loss`, `project`,
    `build_transform` and `view_recipes`.
    """

    name: ClassVar[str]
    Kwargs: ClassVar[type]
    # Attribute names of the trained modules: the optimizer trains them, SyRe may cover them
    # (config key syre.parts). Momentum copies and teachers are not parts.
    parts: ClassVar[tuple[str, ...]] = ("backbone", "projection_head")
    # Config keys of the method's recipe where the schema's defaults do not work for it (VICReg
    # diverges under SGD): they apply below every config file and override.
    config_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: DictConfig | dict[str, Any], info: DataInfo | dict[str, Any]) -> None:
        super().__init__()
        cfg = with_defaults(cfg) if isinstance(cfg, dict) else cfg
        info = DataInfo(**info) if isinstance(info, dict) else info
        # Plain containers only: checkpoints then load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {"cfg": OmegaConf.to_container(cfg, resolve=True), "info": info.__dict__}
        )
        self.cfg = cfg
        self.info = info
        self.kwargs = self.check_kwargs(cfg.method_kwargs)
        backbone_kwargs = {
            **backbone_kwargs_for_size(cfg.backbone.name, info.image_size),
            **cfg.backbone.kwargs,
        }
        self.backbone = create_backbone(
            cfg.backbone.name,
            in_chans=info.in_chans,
            small_image_stem=cfg.backbone.small_image_stem,
            **backbone_kwargs,
        )
        check_input_size(self.backbone, cfg.backbone.name, info.image_size)
        if cfg.backbone.channels_last:
            # Convolutions follow the weights' memory format, so inputs need no conversion;
            # Lightning's later .to(device) keeps the format.
            self.backbone.to(memory_format=torch.channels_last)
        self.backbone_kwargs = backbone_kwargs
        self.feature_dim = int(self.backbone.num_features)
        self.build_heads(self.feature_dim)
        # data.augment_on=device: the loader hands uint8 batches and this module makes the views.
        self.augment = (
            self.build_augmentation(info, cfg.data)
            if cfg.data.get("augment_on", "device") == "device"
            else None
        )
        self._augment_generator: torch.Generator | None = None
        # syre.enabled=false is the same update with the anchor at 0 (σ0 = 0, D = I, same mode):
        # a fair off arm differs from SyRe in where the decay pulls and in nothing else.
        self.syre: SyRe = self._build_syre()

    # ----- what a method provides -------------------------------------------------------------
    @classmethod
    def check_kwargs(cls, kwargs: Any) -> Any:
        """Validate `method_kwargs` against the method's `Kwargs` dataclass."""
        schema = OmegaConf.structured(cls.Kwargs)
        try:
            merged = OmegaConf.merge(schema, kwargs or {})
        except OmegaConfBaseException as error:
            key = getattr(error, "full_key", "") or ""
            valid = list(schema.keys())
            if key in valid:
                raise UserError(
                    f"bad value for 'method_kwargs.{key}' of {cls.name}: {str(error).splitlines()[0]}"
                ) from None
            raise UserError(
                f"unknown key 'method_kwargs.{key}' for method {cls.name}{suggest(key, valid)}; "
                f"valid keys: {', '.join(valid)}"
            ) from None
        return OmegaConf.to_object(merged)

    def build_heads(self, feature_dim: int) -> None:
        raise NotImplementedError

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def project(self, features: Tensor) -> Tensor:
        """Projector output for backbone features (what collapse metrics look at)."""
        return self.projection_head(features)

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> Callable[[Any], list[Tensor]]:
        """lightly's per-image transform, for data.augment_on=workers."""
        raise NotImplementedError

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        """The same views as `build_transform`, as recipes for the batched device path."""
        raise NotImplementedError

    @classmethod
    def build_augmentation(cls, info: DataInfo, data_cfg: DataConfig) -> BatchAugment:
        return BatchAugment(cls.view_recipes(info, data_cfg), data_cfg.compile_augment)

    # ----- shared machinery --------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def trainable_parts(self) -> dict[str, nn.Module]:
        return {part: getattr(self, part) for part in self.parts}

    def _build_syre(self) -> SyRe:
        parts = self.trainable_parts()
        named = [
            (f"{part}.{name}", param)
            for part, module in parts.items()
            if self.cfg.syre.parts is None or part in self.cfg.syre.parts
            for name, param in module.named_parameters()
        ]
        syre_cfg = self.cfg.syre
        syre = SyRe(
            self,
            weight_decay=self.decay_strength(),
            sigma0=syre_cfg.sigma0 if syre_cfg.enabled else 0.0,
            d_eps=syre_cfg.d_eps if syre_cfg.enabled else 0.0,
            anchor_scale=syre_cfg.anchor_scale,
            seed=self.cfg.seed if syre_cfg.seed is None else syre_cfg.seed,
            mode=syre_mode(self.cfg),
            include_1d=syre_cfg.include_1d,
            parameters=named,
        )
        if syre_cfg.enabled and not syre.covered_names:  # a run labelled SyRe that has none
            raise UserError(
                f"syre.parts={list(syre_cfg.parts or self.parts)} covers no weight of {self.name} "
                "(only 1-D tensors?); add parts, set syre.include_1d=true, or syre.enabled=false"
            )
        return syre

    def decay_strength(self) -> float:
        """γ of the decay on the covered weights: syre.weight_decay, else optimizer.weight_decay."""
        syre_cfg = self.cfg.syre
        if syre_cfg.weight_decay is None:
            return float(self.cfg.optimizer.weight_decay)
        return float(syre_cfg.weight_decay)

    def decay_summary(self) -> dict[str, Any]:
        """What the covered weights decay toward and how hard, for metrics.json and tables.

        `pull_per_step` is the steady fraction of (w − θ0) the decay alone removes per step at
        the peak lr: lr·γ decoupled, lr·γ/(1 − momentum) coupled under SGD (the term then runs
        through the momentum buffer), None where no single number exists (coupled under
        AdamW's normalisation or LARS's trust ratio).
        """
        syre_cfg, opt = self.cfg.syre, self.cfg.optimizer
        mode = syre_mode(self.cfg)
        momentum = float(opt.momentum) if opt.name in ("sgd", "lars") else 0.0
        pull = steady_pull(mode, self.learning_rate(), self.decay_strength(), momentum)
        if mode == "coupled" and opt.name != "sgd":
            pull = None
        return {
            "toward": "zero" if self.syre.zero_anchors else "anchor",
            "mode": mode,
            "sigma0": self.syre.sigma0,
            "anchor_scale": str(syre_cfg.anchor_scale),
            "d_eps": self.syre.d_eps,
            "weight_decay": self.decay_strength(),
            "optimizer": str(opt.name),
            "lr": self.learning_rate(),
            "pull_per_step": pull,
        }

    def global_batch_size(self) -> int:
        world = self.trainer.world_size if self._trainer is not None else 1
        return int(self.cfg.data.batch_size) * int(world)

    def learning_rate(self) -> float:
        opt = self.cfg.optimizer
        scale = self.global_batch_size() / 128 if opt.scale_lr else 1.0
        return float(opt.lr) * scale

    def configure_optimizers(self) -> Any:
        opt = self.cfg.optimizer
        named = [
            (f"{part}.{name}", param)
            for part, module in self.trainable_parts().items()
            for name, param in module.named_parameters()
            if param.requires_grad
        ]
        # The module, not bare pairs: its (and timm's backbone's) no_weight_decay() names, such
        # as a ViT's pos_embed and cls_token, then stay out of every decay, as SyRe leaves them.
        groups = syre_param_groups(self, self.syre, float(opt.weight_decay), parameters=named)
        lr = self.learning_rate()
        if opt.name == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=opt.momentum)
        elif opt.name == "lars":
            # lightly's LARS skips the trust ratio for weight_decay=0 groups, which SyRe's are:
            # SyReLARS scales them, with SyRe's (coupled) pull in the ratio.
            optimizer = SyReLARS(groups, syre=self.syre, lr=lr, momentum=opt.momentum)
        else:
            optimizer = torch.optim.AdamW(groups, lr=lr)
        if not isinstance(optimizer, SyReLARS):
            self.syre.attach(optimizer)
        if opt.scheduler == "constant":
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = max(1, int(self.trainer.max_epochs or 1))
        steps_per_epoch = max(1, math.ceil(total_steps / max_epochs))
        scheduler = CosineSchedule(
            optimizer,
            warmup_epochs=int(opt.warmup_epochs) * steps_per_epoch,
            max_epochs=total_steps,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def views(self, batch: Any, batch_idx: int) -> list[Tensor]:
        """The batch's views: made here from uint8 images on the device path (seeded by
        seed, epoch, rank and batch index: exact resume, other views on each DDP rank), or
        made by lightly's transforms in the DataLoader on the workers path."""
        if self.augment is None:
            return list(batch[0])
        images = batch[0]
        if self._augment_generator is None or self._augment_generator.device != images.device:
            self._augment_generator = torch.Generator(device=images.device)
        seed = augment_seed(int(self.cfg.seed), self.current_epoch, process_rank(), batch_idx)
        views = self.augment(images, self._augment_generator.manual_seed(seed))
        dtype = next(self.backbone.parameters()).dtype
        if dtype != views[0].dtype:  # *-true precisions: Lightning cast the batch, not these
            views = [view.to(dtype) for view in views]
        if self.cfg.backbone.channels_last:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        return views

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        views = self.views(batch, batch_idx)
        loss = self.training_loss(views)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}); the last good checkpoint is kept; lower "
                "optimizer.lr or add optimizer.warmup_epochs, then resume=<run dir>"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=False)
        return loss

    def on_train_epoch_end(self) -> None:
        if not self.syre.zero_anchors:
            prefixes = {part: f"{part}." for part in self.trainable_parts()}
            for part, distance in self.syre.distance_to_anchor(prefixes).items():
                self.log(f"syre/distance_to_anchor/{part}", distance)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["syre"] = self.syre.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "syre" in checkpoint:  # checkpoints of off runs before 2026-11-27 have none
            try:
                self.syre.load_state_dict(checkpoint["syre"])
            except ValueError as error:
                raise UserError(f"checkpoint's SyRe state does not fit this run: {error}") from None
