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
from lightly.utils.scheduler import cosine_schedule
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from ssl_syre.backbones import (
    apply_custom_stem,
    backbone_kwargs_for_size,
    check_input_size,
    create_backbone,
    patch_size_of,
)
from ssl_syre.config import DataConfig, check_ranges, syre_mode, with_defaults
from ssl_syre.data import DataInfo
from ssl_syre.data.augment import BatchAugment, ViewRecipe, augment_seed, process_rank
from ssl_syre.errors import UserError, suggest
from ssl_syre.lars import SyReLARS
from ssl_syre.methods.optim import (
    SCHEDULED_DECAY,
    CosineSchedule,
    conv_linear_names,
    mark_scheduled_decay,
    optimizer_kernels,
    split_fixed_lr,
)
from ssl_syre.syre import SyRe, steady_pull, syre_param_groups


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class SSLMethod(pl.LightningModule):
    """Common machinery of all methods.

    Subclasses set `name`, `Kwargs` (a dataclass of method settings, config key
    `method_kwargs`) and `parts`, and implement `build_heads`, `training_loss`, `project`,
    `build_transform` and `view_recipes`.

    `check_kwargs` checks each setting's type (from its annotation, by OmegaConf) and range
    (from `ssl_syre.config.ranged`) before anything is built, so a new method gets one-line
    refusals by annotating its fields, with nothing to write:

        @dataclass
        class MyKwargs:
            hidden_dim: int = ranged(2048, "[1, inf)")
            temperature: float = ranged(0.1, "(0, inf)")
            momentum: float = ranged(0.996, "[0, 1]")
    """

    name: ClassVar[str]
    Kwargs: ClassVar[type]
    # Attribute names of the trained modules: the optimizer trains them, SyRe may cover them
    # (config key syre.parts). Momentum copies and teachers are not parts.
    parts: ClassVar[tuple[str, ...]] = ("backbone", "projection_head")
    # True for a method that works on patch tokens (MAE's masking, iBOT's masked patch loss): it
    # refuses other backbones, and the tests build it on a ViT.
    needs_vit: ClassVar[bool] = False
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
            **self.method_backbone_kwargs(),
            # Plain values: timm stores them in the export's config.json (a ListConfig from
            # backbone.kwargs.channels=[...] is not JSON).
            **OmegaConf.to_container(OmegaConf.create(dict(cfg.backbone.kwargs)), resolve=True),
        }
        self.backbone = create_backbone(
            cfg.backbone.name, in_chans=info.in_chans, **backbone_kwargs
        )
        # The image size first: a ViT that cannot cut the images is a more basic mistake than
        # a ResNet stem setting on it (small_image_stem=true refuses a backbone without one).
        check_input_size(self.backbone, cfg.backbone.name, info.image_size)
        apply_custom_stem(self.backbone, cfg.backbone.small_image_stem, cfg.backbone.stem_max_pool)
        if cfg.backbone.channels_last:
            # Convolutions follow the weights' memory format, so inputs need no conversion;
            # Lightning's later .to(device) keeps the format.
            self.backbone.to(memory_format=torch.channels_last)
        self.backbone_kwargs = backbone_kwargs
        self.feature_dim = int(self.backbone.num_features)
        self.build_heads(self.feature_dim)
        if getattr(cfg.backbone, "compile", False):
            # nn.Module.compile compiles in place: state_dict keys stay as they are (no
            # `_orig_mod.` prefix), so checkpoints and exports are those of an eager run.
            for module in self.trainable_parts().values():
                module.compile()
        # data.augment_on=device: the loader hands uint8 batches and this module makes the views.
        self.augment = (
            self.make_augmentation() if cfg.data.get("augment_on", "device") == "device" else None
        )
        self._augment_generator: torch.Generator | None = None
        # (first global step, peak lr) of each stretch of training at one lr; see on_train_start.
        self.lr_segments: list[tuple[int, float]] = []
        # (step, loss) of the first non-finite loss, on the device; -1 while all are finite.
        self._first_nonfinite: Tensor | None = None
        self.shown_loss: float | None = None  # the loss at the last logging step
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
        kwargs = OmegaConf.to_object(merged)
        check_ranges(kwargs, cls.Kwargs, "method_kwargs", owner=f"of {cls.name}")
        return kwargs

    def build_heads(self, feature_dim: int) -> None:
        raise NotImplementedError

    def method_backbone_kwargs(self) -> dict[str, Any]:
        """timm arguments the method's views need (DINO: ViTs take its smaller local crops)."""
        return {}

    def fixed_lr_parts(self) -> tuple[str, ...]:
        """Parts (attribute names) that train at the peak lr throughout, outside the schedule's
        warm-up and cosine (SimSiam's predictor in the paper's recipe); none by default."""
        return ()

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def prototype_weights(self) -> dict[str, Tensor]:
        """Each prototype layer's prototypes as a (K, d) matrix of unit rows (the effective
        directions), by layer name, for the distinct-prototype count of partial prototype
        collapse (`ssl_syre.evaluation.prototypes`); none for a method without prototypes."""
        return {}

    def patch_size(self) -> int | None:
        """The backbone's patch size (a ViT's), else None: multi-crop rounds crops to it."""
        return patch_size_of(self.backbone)

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

    def make_transform(self) -> Callable[[Any], list[Tensor]]:
        """This model's workers-path transform; a method whose views depend on its settings
        or backbone (DINO's multi-crop) overrides it."""
        return self.build_transform(self.info, self.cfg.data)

    def make_augmentation(self) -> BatchAugment:
        """This model's device-path augmentation (see `make_transform`)."""
        return self.build_augmentation(self.info, self.cfg.data)

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
        include_1d = bool(syre_cfg.include_1d)
        if syre_cfg.get("cover", "default") == "conv_linear":
            # The paper's notebook: every conv and linear weight and bias, no norm layer.
            named = [(name, param) for name, param in named if name in conv_linear_names(self)]
            include_1d = True
        syre = SyRe(
            self,
            weight_decay=self.decay_strength(),
            sigma0=syre_cfg.sigma0 if syre_cfg.enabled else 0.0,
            d_eps=syre_cfg.d_eps if syre_cfg.enabled else 0.0,
            anchor_scale=syre_cfg.anchor_scale,
            anchor_storage=syre_cfg.get("anchor_storage", "float32"),
            seed=self.cfg.seed if syre_cfg.seed is None else syre_cfg.seed,
            mode=syre_mode(self.cfg),
            include_1d=include_1d,
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
            "anchor_storage": self.syre.anchor_storage,
            "d_eps": self.syre.d_eps,
            "weight_decay": self.decay_strength(),
            # The cosine schedule's end (None: constant) and the γ of the last step taken.
            "weight_decay_end": opt.get("weight_decay_end"),
            "weight_decay_last": self.syre.weight_decay,
            "optimizer": str(opt.name),
            "lr": self.learning_rate(),
            "pull_per_step": pull,
        }

    def weight_decay_at(self, step: int) -> float:
        """γ at optimizer step `step`: `decay_strength()`, or with optimizer.weight_decay_end
        the cosine from optimizer.weight_decay to it over the run (DINO's schedule)."""
        start, end = self.decay_strength(), self.cfg.optimizer.get("weight_decay_end")
        if end is None or self._trainer is None:
            return start
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return cosine_schedule(step, total, start, float(end))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Set this step's decay before the step: SyRe's γ and that of the plain decay groups
        (flagged by `mark_scheduled_decay`, fixed-lr splits included)."""
        if self.cfg.optimizer.get("weight_decay_end") is None:
            return
        gamma = self.weight_decay_at(self.global_step)
        self.syre.weight_decay = gamma
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                # A checkpoint's groups replace the built ones on resume; one without the flag
                # names its plain decay group "decay".
                if group.get(SCHEDULED_DECAY, group.get("name") == "decay"):
                    group["weight_decay"] = gamma
        self.log("train/weight_decay", gamma)

    def global_batch_size(self) -> int:
        world = self.trainer.world_size if self._trainer is not None else 1
        return int(self.cfg.data.batch_size) * int(world)

    def learning_rate(self) -> float:
        """The peak lr: optimizer.lr, times global batch / optimizer.lr_reference_batch when
        scale_lr (the batch the recipe quotes its lr for: 128 lightly's SGD, 256 LARS/AdamW)."""
        opt = self.cfg.optimizer
        reference = int(opt.get("lr_reference_batch", 128))
        scale = self.global_batch_size() / reference if opt.scale_lr else 1.0
        return float(opt.lr) * scale

    @property
    def lr(self) -> float:
        """The peak learning rate the optimizer uses (`learning_rate()`).

        Lightning's `Tuner.lr_find` reads and sets the attribute `lr`; setting it sets
        optimizer.lr so that `learning_rate()` (with scale_lr's factor) equals the value.
        """
        return self.learning_rate()

    @lr.setter
    def lr(self, value: float) -> None:
        factor = self.learning_rate() / float(self.cfg.optimizer.lr)
        self.cfg.optimizer.lr = float(value) / factor
        self.hparams["cfg"]["optimizer"]["lr"] = self.cfg.optimizer.lr

    def steps_per_epoch(self, total_steps: int) -> int:
        """Optimizer steps in one epoch of this process, from its loader: batches per epoch
        (after trainer.limit_train_batches and DDP's sharding) over accumulate_grad_batches.

        Not total steps / max_epochs: trainer.max_steps may end a run before max_epochs, and
        max_epochs may be -1. An iterable loader without a length falls back to that ratio.
        """
        trainer = self.trainer
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
        if batches == float("inf"):
            return max(1, math.ceil(total_steps / max(1, int(trainer.max_epochs or 1))))
        return max(1, math.ceil(int(batches) / trainer.accumulate_grad_batches))

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
        groups = syre_param_groups(
            self,
            self.syre,
            float(opt.weight_decay),
            parameters=named,
            decay_norm_and_bias=bool(opt.get("decay_norm_and_bias", False)),
        )
        groups = mark_scheduled_decay(groups)
        fixed = {id(p) for part in self.fixed_lr_parts() for p in getattr(self, part).parameters()}
        if fixed:
            groups = split_fixed_lr(groups, fixed)
        lr = self.learning_rate()
        kernels = optimizer_kernels(str(getattr(opt, "implementation", "auto")))
        if opt.name == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=lr, momentum=opt.momentum, **kernels
            )
        elif opt.name == "lars":
            # lightly's LARS skips the trust ratio for weight_decay=0 groups, which SyRe's are:
            # SyReLARS scales them, with SyRe's (coupled) pull in the ratio.
            optimizer = SyReLARS(groups, syre=self.syre, lr=lr, momentum=opt.momentum)
        else:
            betas = (float(opt.betas[0]), float(opt.betas[1]))
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, **kernels)
        # A second call (trainer.fit again, or fit after Tuner.lr_find) builds a new optimizer:
        # SyRe moves to it from the previous one.
        self.syre.detach()
        if not isinstance(optimizer, SyReLARS):
            self.syre.attach(optimizer)
        if opt.scheduler == "constant":
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        # A trainer.max_steps shorter than the warm-up: the run is all warm-up (lightly refuses
        # warm-up steps > max steps); config.validate refuses warmup_epochs > max_epochs.
        warmup = min(int(opt.warmup_epochs) * self.steps_per_epoch(total_steps), total_steps)
        scheduler = CosineSchedule(optimizer, warmup_epochs=warmup, max_epochs=total_steps)
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
        images, sizes = batch[0], None
        if isinstance(images, list | tuple):  # image folders: squashed pictures and their sizes
            images, sizes = images
        if self._augment_generator is None or self._augment_generator.device != images.device:
            self._augment_generator = torch.Generator(device=images.device)
        seed = augment_seed(int(self.cfg.seed), self.current_epoch, process_rank(), batch_idx)
        views = self.augment(images, self._augment_generator.manual_seed(seed), sizes)
        dtype = next(self.backbone.parameters()).dtype
        if dtype != views[0].dtype:  # *-true precisions: Lightning cast the batch, not these
            views = [view.to(dtype) for view in views]
        if self.cfg.backbone.channels_last:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        return views

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        views = self.views(batch, batch_idx)
        loss = self.training_loss(views)
        self._watch_finite(loss.detach(), batch_idx)
        # Not prog_bar: Lightning converts progress-bar values with .item() at every batch,
        # which waits for the GPU; logged values are converted at logging steps only.
        self.log("train/loss", loss, on_step=True, on_epoch=True, sync_dist=False)
        return loss

    def _watch_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Record the first non-finite loss on the device; read it back (a host sync) only at
        logging steps, at the last step of an epoch and at the last step of the run, before
        that step's update. So a NaN stops the run within `trainer.log_every_n_steps` steps,
        the epoch's checkpoint is never written after one, and the last good one is kept."""
        if self._first_nonfinite is None or self._first_nonfinite.device != loss.device:
            self._first_nonfinite = torch.full((2,), -1.0, device=loss.device)
        first = self._first_nonfinite
        new = ~torch.isfinite(loss) & (first[0] < 0)
        record = torch.stack([torch.full_like(loss, self.global_step).float(), loss.float()])
        self._first_nonfinite = torch.where(new, record, first)
        trainer = self.trainer
        every = int(trainer.log_every_n_steps)
        logging = every > 0 and (self.global_step + 1) % every == 0  # as Lightning decides
        last = batch_idx + 1 >= trainer.num_training_batches
        final = trainer.max_steps > 0 and self.global_step + 1 >= trainer.max_steps
        if not (logging or last or final):
            return
        step, value = self._first_nonfinite.tolist()
        self.shown_loss = float(loss)  # for the progress bar (callbacks.LossProgressBar)
        if step >= 0:
            raise NonFiniteLossError(
                f"training loss became {value} at step {int(step)} (epoch {self.current_epoch}); "
                "the last good checkpoint is kept; lower optimizer.lr or add "
                "optimizer.warmup_epochs, then resume=<run dir>"
            )

    def on_train_epoch_end(self) -> None:
        if not self.syre.zero_anchors:
            prefixes = {part: f"{part}." for part in self.trainable_parts()}
            for part, distance in self.syre.distance_to_anchor(prefixes).items():
                self.log(f"syre/distance_to_anchor/{part}", distance)

    def on_train_start(self) -> None:
        try:  # a regenerated state from a checkpoint: does this device draw the same anchors?
            self.syre.verify_anchors()
        except ValueError as error:
            raise UserError(f"checkpoint's SyRe state does not fit this run: {error}") from None
        # A resumed run may run at another optimizer.lr: record from which step each peak lr
        # ran, so that metrics.json says what ran.
        lr = self.learning_rate()
        if not self.lr_segments or self.lr_segments[-1][1] != lr:
            self.lr_segments.append((int(self.global_step), lr))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["syre"] = self.syre.state_dict()
        checkpoint["lr_segments"] = [list(segment) for segment in self.lr_segments]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.lr_segments = [(int(s), float(lr)) for s, lr in checkpoint.get("lr_segments", [])]
        if "syre" in checkpoint:  # without it, the anchors drawn from the config are kept
            try:
                self.syre.load_state_dict(checkpoint["syre"])
            except ValueError as error:
                raise UserError(f"checkpoint's SyRe state does not fit this run: {error}") from None
