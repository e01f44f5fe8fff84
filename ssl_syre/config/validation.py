"""Checks of a merged config that the schema's types cannot express: names, ranges, pairs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_syre.config.checks import check_ranges, check_trainer_types
from ssl_syre.config.schema import (
    BackboneConfig,
    DataConfig,
    EvalConfig,
    OptimizerConfig,
    SyReConfig,
)
from ssl_syre.errors import UserError, check_choice, suggest, suggest_key


def syre_mode(cfg: DictConfig) -> str:
    """The decay mode a run uses: syre.mode, or with "auto" the optimizer's own convention.

    Coupled under SGD and LARS: the paper's objective (the decay term in the loss), and the
    form of torch SGD's and lightly LARS's weight_decay, so the off arm of a SyRe ablation is
    the recipe's usual decay and not a 10x weaker one (decoupled lr·γ vs coupled lr·γ/(1 − β)).
    Decoupled under AdamW, whose own decay is decoupled.
    """
    mode = str(cfg.syre.mode)
    if mode != "auto":
        return mode
    return "decoupled" if cfg.optimizer.name == "adamw" else "coupled"


def _check_choice(key: str, value: str, choices: list[str]) -> None:
    check_choice(key, value, choices)


# Checks of the names that registries above this module hold (methods, data sets), run first by
# validate. ssl_syre/__init__.py adds them, so that this module, which data/ and methods/ import,
# imports no registry (imports point down).
REGISTRY_CHECKS: list[Callable[[DictConfig], None]] = []
# A method's own config defaults (`SSLMethod.config_defaults`) by method name, from the registry,
# wired the same way.
METHOD_DEFAULTS: list[Callable[[str], dict[str, Any]]] = []


def validate(cfg: DictConfig) -> None:
    """Check names and ranges that the schema's types cannot express."""
    # Imported here: the registries import torch, timm and lightning, which the schema does not need.
    import timm
    from lightning.pytorch import Trainer

    from ssl_syre.syre import ANCHOR_SCALES, ANCHOR_STORAGES, MODES

    for check in REGISTRY_CHECKS:
        check(cfg)
    _check_choice("data.augment_on", cfg.data.augment_on, ["device", "workers"])
    _check_choice("optimizer.name", cfg.optimizer.name, ["sgd", "lars", "adamw"])
    _check_choice("optimizer.scheduler", cfg.optimizer.scheduler, ["cosine", "constant"])
    _check_choice(
        "optimizer.implementation",
        cfg.optimizer.implementation,
        ["auto", "for_loop", "foreach", "fused"],
    )
    if cfg.optimizer.name == "lars" and cfg.optimizer.implementation != "auto":
        raise UserError(
            "optimizer.implementation applies to sgd and adamw only (LARS has one "
            "implementation); remove optimizer.implementation or use optimizer.name=sgd"
        )
    if cfg.checkpoint_every_n_epochs < 1:
        raise UserError(
            f"config key 'checkpoint_every_n_epochs' must be >= 1, got "
            f"{cfg.checkpoint_every_n_epochs}"
        )
    _check_choice("syre.mode", cfg.syre.mode, ["auto", *MODES])
    _check_choice("syre.anchor_scale", cfg.syre.anchor_scale, list(ANCHOR_SCALES))
    _check_choice(
        "syre.anchor_storage", cfg.syre.get("anchor_storage", "float32"), list(ANCHOR_STORAGES)
    )
    _check_choice("syre.cover", cfg.syre.get("cover", "default"), ["default", "conv_linear"])
    if cfg.optimizer.name == "lars" and syre_mode(cfg) != "coupled":
        raise UserError(
            "optimizer.name=lars needs syre.mode=coupled: LARS puts the decay inside its "
            "trust ratio (as with its own weight_decay), which is the coupled form; add "
            "syre.mode=coupled"
        )
    if not timm.is_model(cfg.backbone.name):
        names = timm.list_models()
        raise UserError(
            f"unknown backbone.name '{cfg.backbone.name}'{suggest(cfg.backbone.name, names)}; "
            "any name from timm.list_models() works"
        )
    trainer_args = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    for key in cfg.trainer:
        if key not in trainer_args:
            raise UserError(
                f"unknown config key 'trainer.{key}'"
                f"{suggest_key(f'trainer.{key}', [f'trainer.{a}' for a in trainer_args])}; "
                "keys under trainer go to lightning.pytorch.Trainer"
            )
    for key in ("logger", "callbacks", "default_root_dir", "enable_checkpointing", "plugins"):
        if key in cfg.trainer:
            raise UserError(f"'trainer.{key}' is set by ssl_syre itself; remove it from the config")
    check_trainer_types(OmegaConf.to_container(cfg.trainer, resolve=True), Trainer)  # type: ignore[arg-type]
    positive = {
        "data.batch_size": cfg.data.batch_size,
        "optimizer.lr": cfg.optimizer.lr,
        "eval.knn_t": cfg.eval.knn_t,
        "eval.batch_size": cfg.eval.batch_size,
        "eval.umap_points": cfg.eval.umap_points,
        "eval.online_linear_lr": cfg.eval.online_linear_lr,
    }
    for key, value in positive.items():
        if not value > 0:
            raise UserError(f"config key '{key}' must be > 0, got {value}")
    for key in (
        "optimizer.weight_decay",
        "syre.sigma0",
        "data.num_workers",
        "eval.umap_every_n_epochs",
    ):
        if OmegaConf.select(cfg, key) < 0:
            raise UserError(f"config key '{key}' must be >= 0, got {OmegaConf.select(cfg, key)}")
    if cfg.optimizer.weight_decay_end is not None:
        if cfg.optimizer.weight_decay_end < 0:
            raise UserError(
                "config key 'optimizer.weight_decay_end' must be >= 0 (or null for a constant "
                f"decay), got {cfg.optimizer.weight_decay_end}"
            )
        if cfg.syre.weight_decay is not None:
            raise UserError(
                "optimizer.weight_decay_end schedules optimizer.weight_decay, but "
                "syre.weight_decay sets SyRe's γ apart from it; remove syre.weight_decay (γ "
                "then follows the schedule) or set optimizer.weight_decay_end=null"
            )
    betas = list(cfg.optimizer.betas)
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise UserError(
            f"config key 'optimizer.betas' must be two numbers in [0, 1) (AdamW's beta1, beta2), "
            f"got {betas}"
        )
    if cfg.syre.weight_decay is not None and cfg.syre.weight_decay < 0:
        raise UserError(f"config key 'syre.weight_decay' must be >= 0, got {cfg.syre.weight_decay}")
    if not 0 <= cfg.syre.d_eps < 1:
        raise UserError(f"config key 'syre.d_eps' must be in [0, 1), got {cfg.syre.d_eps}")
    if cfg.eval.linear_probe and cfg.eval.linear_epochs < 1:
        raise UserError(
            f"config key 'eval.linear_epochs' must be >= 1, got {cfg.eval.linear_epochs}; "
            "set eval.linear_probe=false to skip the linear probe at the end of training"
        )
    if not cfg.eval.knn_k or any(k <= 0 for k in cfg.eval.knn_k):
        raise UserError(
            f"config key 'eval.knn_k' must hold positive integers, got {list(cfg.eval.knn_k)}"
        )
    sections = {"backbone": BackboneConfig, "data": DataConfig, "optimizer": OptimizerConfig}
    for section, schema in {**sections, "syre": SyReConfig, "eval": EvalConfig}.items():
        check_ranges(cfg[section], schema, section)
    max_epochs = cfg.trainer.get("max_epochs")
    if isinstance(max_epochs, int) and 0 <= max_epochs < cfg.optimizer.warmup_epochs:
        raise UserError(
            f"config key 'optimizer.warmup_epochs' ({cfg.optimizer.warmup_epochs}) must be at "
            f"most trainer.max_epochs ({max_epochs}); lower it or train longer"
        )


def check_syre_parts(cfg: DictConfig, parts: Sequence[str]) -> None:
    """syre.parts names only parts the method has, and covers something while SyRe is on."""
    if cfg.syre.parts is None:
        return
    listed = ", ".join(parts)
    for part in cfg.syre.parts:
        if part not in parts:
            raise UserError(
                f"syre.parts entry '{part}' is not a part of method {cfg.method}"
                f"{suggest(str(part), list(parts))}; its parts are: {listed} "
                "(syre.parts=null covers them all)"
            )
    if cfg.syre.enabled and not cfg.syre.parts:
        raise UserError(
            f"syre.parts is empty, so SyRe covers nothing while syre.enabled=true; name parts of "
            f"{cfg.method} ({listed}), set syre.parts=null for all, or set syre.enabled=false"
        )
