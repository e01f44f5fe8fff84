"""Typed config schema, loading (YAML + dotted overrides) and validation with clear errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_syre.config_checks import (  # noqa: F401 (re-exported: imported from config)
    _type_name,
    check_ranges,
    check_trainer_types,
    ranged,
)
from ssl_syre.errors import UserError, check_choice, suggest, suggest_key

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


@dataclass
class BackboneConfig:
    """Any timm model name; the classifier is removed (num_classes=0)."""

    name: str = "resnet18"
    # 3x3 stride-1 first conv and no max-pool on ResNets: the recipe for 32x32 images
    # (a 7x7 stem with max-pool caps SimCLR near 0.76 kNN on CIFAR-10, lightly #1419).
    small_image_stem: bool = False
    # NHWC weights (torch.channels_last): faster convolutions on GPUs with tensor cores,
    # especially under bf16-mixed; same results. Exports are written contiguous either way.
    channels_last: bool = False
    # torch.compile the backbone and heads (in place: checkpoints and exports keep their keys);
    # same math, fused kernels. See benchmarks/RESULTS.md for when it pays.
    compile: bool = False
    # Extra keyword arguments for timm.create_model (drop_path_rate, img_size, ...).
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Which data set, where it lives, and how it is batched and augmented."""

    name: str = "fashion_mnist"
    root: str | None = None  # None: the data set's default location (see docs/data.md)
    download: bool = True  # torchvision data sets only; fails with a clear error offline
    image_size: int | None = None  # None: the data set's native size
    batch_size: int = 256  # per process; the global batch is batch_size x devices x nodes
    num_workers: int = 2  # workers path, and decoding image folders on the device path
    # device: uint8 batches, views made batched on the training device (ssl_syre.data.augment);
    # workers: lightly's per-image PIL transforms in DataLoader workers (the reference path).
    augment_on: str = "device"
    # device path on CUDA: torch.compile the colour jitter, once, on the first batch (fewer
    # kernel launches per view; its speed is in benchmarks/RESULTS.md). Ignored on a CPU.
    compile_augment: bool = True
    # device path, in-memory data sets: the uint8 split lives on the training device and each
    # batch is gathered there (no host gather, no copy per step). Same batches.
    on_device: bool = False
    train_subset: int | None = None  # use a seeded random subset of the training split
    test_subset: int | None = None
    # Augmentation strength (lightly's transforms); None keeps the method's default.
    min_scale: float | None = None
    cj_strength: float | None = None
    # imagefolder only: sub-folders are classes when True, else every image is unlabelled.
    labelled: bool = True
    test_root: str | None = None  # imagefolder only: a separate labelled folder to evaluate on


@dataclass
class OptimizerConfig:
    """SGD/LARS/AdamW with a cosine schedule, as in lightly's benchmarks."""

    name: str = "sgd"
    lr: float = 0.06  # base learning rate for a global batch of lr_reference_batch (scale_lr)
    scale_lr: bool = True  # lr x global_batch / lr_reference_batch
    # The batch the recipe's lr is quoted for: 128 in lightly's SGD recipes (0.06 * bs / 128),
    # 256 in the LARS and AdamW recipes (solo-learn, the VICReg, Barlow Twins and DINO papers).
    lr_reference_batch: int = ranged(128, "[1, inf)")
    momentum: float = ranged(0.9, "[0, 1)")  # sgd and lars; 1 would never forget a gradient
    # adamw only: (beta1, beta2), torch's default; MAE's recipe uses (0.9, 0.95).
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    # Also decay biases and norm weights (toward 0, the optimizer's plain decay, in both SyRe
    # arms): lightly's CIFAR-10 script decays every parameter. false: timm's convention, only
    # >= 2-D weights decay. Those SyRe covers (syre.include_1d) decay through SyRe either way.
    decay_norm_and_bias: bool = False
    # None: constant decay; else cosine from weight_decay to this at the last step (DINO's
    # 0.04 -> 0.4), followed by SyRe's γ and the plain decay group at every step.
    weight_decay_end: float | None = None
    warmup_epochs: int = ranged(0, "[0, inf)")  # at most trainer.max_epochs
    scheduler: str = "cosine"  # cosine | constant
    # torch's optimizer kernels for sgd/adamw: auto (torch's choice) | for_loop | foreach | fused.
    implementation: str = "auto"


@dataclass
class SyReConfig:
    """SyRe (Ziyin, Xu & Chuang, ICLR 2025): weight decay toward a fixed random anchor."""

    # false: the same update, same mode and γ, with the anchor at 0 (σ0 = 0, D = I), so on and
    # off differ only in where the decay pulls. torch SGD's own weight_decay is exactly
    # syre.enabled=false syre.mode=coupled.
    enabled: bool = True
    weight_decay: float | None = None  # None: optimizer.weight_decay
    # anchor std: sigma0 / sqrt(fan_in) (about the init scale at 1.0), or sigma0 itself (anchor_scale).
    # 1.0: chosen from fair on/off arms, in the collapse settings and at the usual decay
    # (benchmarks/RESULTS.md has the runs and their commands).
    sigma0: float = 1.0
    # fan_in: std sigma0/sqrt(fan_in), the same share of every layer's init scale;
    # absolute: std sigma0 for every tensor, the paper's theta0 ~ N(0, sigma0^2) as written.
    anchor_scale: str = "fan_in"
    d_eps: float = 0.0  # > 0: advanced removal, D ~ U[1 - d_eps, 1 + d_eps]
    # How the anchors are kept: float32 (a copy, 4 bytes a covered weight) | bfloat16 | float16
    # (a rounded copy, 2 bytes; D stays float32) | regenerate (no copy: redrawn on the device at
    # each step from per-tensor seeds; resume on the same kind of device). docs/syre.md.
    anchor_storage: str = "float32"
    seed: int | None = None  # None: the run's seed
    # auto | coupled (added to the gradient, the paper's loss) | decoupled (like AdamW).
    # auto = the optimizer's own convention: coupled for sgd and lars (so syre.enabled=false is
    # torch SGD's / lightly LARS's weight_decay, the decay lightly's recipes use), decoupled for
    # adamw (AdamW's own decay). See syre_mode() and docs/syre.md.
    mode: str = "auto"
    include_1d: bool = False  # also cover biases and norm weights (anchored around their init)
    # default: the timm convention above (>= 2-D weights; include_1d adds biases and norms);
    # conv_linear: every conv and linear weight and bias, no norm layer (the paper's notebook).
    cover: str = "default"
    # None: every trainable part of the method (its class attribute `parts`, e.g. backbone and
    # projection_head); a list covers those parts only, the others keep torch's own decay.
    parts: list[str] | None = None


@dataclass
class EvalConfig:
    """Offline evaluation at the end of a run and online kNN during training."""

    knn_k: list[int] = field(default_factory=lambda: [200, 20])
    knn_t: float = 0.1
    online_every_n_epochs: int = 1  # 0 disables the online kNN
    online_train_subset: int = 10000  # memory bank size for the online kNN
    online_test_subset: int = 2000  # test images the online kNN classifies
    linear_probe: bool = True
    linear_epochs: int = 30  # AdamW epochs on cached features (ssl_syre/evaluation/linear.py)
    projector: bool = True  # also evaluate projector outputs (collapse shows there first)
    batch_size: int = 512
    raw_pixel_baseline: bool = True
    # UMAP of the test split's backbone features at the end (umap.png; extra .[umap]).
    umap: bool = False
    umap_points: int = 5000  # a seeded subset: UMAP's cost grows with the number of points
    umap_every_n_epochs: int = 0  # > 0: also a UMAP of the online test subset to the loggers
    # solo-learn's online linear probe: a linear classifier on detached backbone features of
    # the training batches, trained beside the SSL loss; the SSL weights do not change.
    online_linear_probe: bool = False
    online_linear_lr: float = 1.0e-3  # AdamW
    # In-memory data at their stored size: uint8 images on the evaluation device, normalized
    # there in batches (the eval transform's ToTensor and Normalize; the same features).
    on_device: bool = True
    autocast_bf16: bool = False  # on CUDA: extract features under bf16 autocast


@dataclass
class ExportConfig:
    """The backbone export at the end of training (timm format), and its upload."""

    enabled: bool = True
    # USER/NAME: push the export to the Hugging Face Hub with timm's push_to_hf_hub, so that
    # timm.create_model("hf-hub:USER/NAME", pretrained=True) rebuilds it. Needs a token.
    push_to_hub: str | None = None
    private: bool = False  # a private Hub repository


@dataclass
class Config:
    """The whole run. Keys under `trainer` go straight to lightning's Trainer."""

    method: str = "simclr"
    method_kwargs: dict[str, Any] = field(default_factory=dict)  # checked by the method
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    syre: SyReConfig = field(default_factory=SyReConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 10})
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None  # None: <method>_<data>_<timestamp>
    resume: str | None = None  # a run directory to continue
    # `export: true/false` (a bool before export.* existed) still means export.enabled.
    export: ExportConfig = field(default_factory=ExportConfig)
    # Lightning loggers: csv, tensorboard, wandb (extra .[wandb]), mlflow (extra .[mlflow]).
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    # Keyword arguments per logger, e.g. logger_kwargs.wandb.project=NAME; see docs/tracking.md.
    logger_kwargs: dict[str, Any] = field(default_factory=dict)
    # Write the epoch checkpoint every N epochs (each is fsynced); last.ckpt is still written
    # at the end of training and on interruption.
    checkpoint_every_n_epochs: int = 1


def format_omegaconf_error(error: OmegaConfBaseException, schema: DictConfig) -> str:
    """Turn an OmegaConf error into one line naming the key and, if possible, the fix."""
    key = getattr(error, "full_key", None) or ""
    message = getattr(error, "msg", None) or str(error).splitlines()[0]
    if "not in" in message or "Key '" in message and "not" in message:
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(schema, parent_key) if parent_key else schema
        choices = list(parent.keys()) if isinstance(parent, DictConfig) else []
        hint = suggest_key(key, [*_dotted_keys(schema), *(f"trainer.{k}" for k in _trainer_args())])
        return f"unknown config key '{key}'{hint}; valid keys here: {', '.join(map(str, choices))}"
    if key:
        return f"bad value for config key '{key}': {message.splitlines()[0]}"
    return message.splitlines()[0]


def _dotted_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config ('optimizer.lr', ...), sections included."""
    keys: list[str] = []
    for name in node.keys():
        key = f"{prefix}{name}"
        keys.append(key)
        child = node._get_node(name)  # no value access: '???' and interpolations stay unread
        if isinstance(child, DictConfig):
            keys += _dotted_keys(child, f"{key}.")
    return keys


def _trainer_args() -> list[str]:
    """The keyword arguments of lightning's Trainer: the valid `trainer.*` keys."""
    from lightning.pytorch import Trainer

    return sorted(set(inspect.signature(Trainer.__init__).parameters) - {"self"})


# The most YAML nodes a document may stand for once its aliases are expanded. Aliases can
# nest ("billion laughs": nine levels of ten *a each are 10^9 nodes in a 300-byte file), and
# OmegaConf copies every expanded node, so such a file would hang and eat memory without
# end. Our configs have a few hundred nodes.
MAX_YAML_NODES = 100_000


class YamlTooLargeError(yaml.YAMLError):
    """A document whose aliases expand past MAX_YAML_NODES, or refer to themselves."""


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many nodes `node` stands for with every alias expanded (shared nodes counted once
    per use, as OmegaConf copies them)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise YamlTooLargeError("an alias refers to the node that contains it")
    open_.add(id(node))
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_nodes(child, sizes, open_)
        if total > MAX_YAML_NODES:
            raise YamlTooLargeError(f"its aliases expand to more than {MAX_YAML_NODES} values")
    open_.discard(id(node))
    sizes[id(node)] = total
    return total


def safe_yaml(text: str) -> Any:
    """yaml.safe_load, refusing documents whose aliases expand past MAX_YAML_NODES.

    Raises:
        yaml.YAMLError: not YAML; YamlTooLargeError: an alias bomb or a recursive alias.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> DictConfig:
    if path.is_dir():
        raise UserError(
            f"config file '{path}' is a directory; pass a .yaml file (e.g. one in {path}/)"
        )
    if not path.is_file():
        hint = "" if path.suffix in (".yaml", ".yml") else " (a config file ends in .yaml)"
        raise UserError(f"config file '{path}' does not exist{hint}; see configs/ for examples")
    try:
        loaded = safe_yaml(path.read_text())
    except YamlTooLargeError as error:
        raise UserError(
            f"config file '{path}' is refused: {error} (YAML anchors and aliases nested to blow "
            "up its size); write the values out"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file '{path}' is not valid YAML{where}; fix the syntax") from None
    except UnicodeDecodeError:
        raise UserError(f"config file '{path}' is not a text YAML file") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise UserError(
            f"config file '{path}' must hold a mapping of keys (key: value), not {type(loaded).__name__}"
        )
    return OmegaConf.create(loaded)


def export_as_section(layer: Any) -> Any:
    """A config (dict or DictConfig) whose `export` is a bool, with it as `export.enabled`.

    `export` was a bool before the export.* section; configs, checkpoints and exports written
    then, and `export=false` on the command line, keep their meaning.
    """
    if isinstance(layer, dict | DictConfig) and isinstance(layer.get("export"), bool):
        if isinstance(layer, DictConfig):
            layer["export"] = {"enabled": layer["export"]}
        else:
            layer = {**layer, "export": {"enabled": layer["export"]}}
    return layer


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise UserError(f"cannot read argument '{item}': overrides look like dotted.key=value")
        check_override_value(item)
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as error:
        raise UserError(f"cannot read overrides: {str(error).splitlines()[0]}") from None


def check_override_value(item: str) -> None:
    """Refuse, naming the key, an override value YAML cannot read or an alias bomb.

    OmegaConf parses each value as YAML (`[1, 2]` is a list); its own errors name no key.
    """
    key, _, value = item.partition("=")
    try:
        safe_yaml(value)
    except YamlTooLargeError as error:
        raise UserError(
            f"cannot read the value of '{key}': {error}; write the values out"
        ) from None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise UserError(
            f"cannot read the value of '{key}' ({value!r}): {problem}; values are YAML (lists "
            f'as [1,2]), so quote one that is text: {key}="..." (tabs are not allowed)'
        ) from None


def _failing_interpolation(cfg: DictConfig) -> str | None:
    """The first dotted key whose ${...} interpolation cannot be resolved, or None."""
    for key in _dotted_keys(cfg):
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except OmegaConfBaseException:
            node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
            if not isinstance(node, DictConfig):
                return key
    return None


def load_config(
    path: str | Path | Sequence[str | Path] | None = None, overrides: list[str] | None = None
) -> DictConfig:
    """Merge schema defaults, YAML files in order and dotted overrides; validate; return a DictConfig.

    Several files compose: a later file's keys win (`configs/data/cifar10.yaml
    configs/method/vicreg.yaml`), and the overrides win over every file.

    Raises:
        UserError: the file is missing or not YAML, a key is unknown, a value has the wrong
            type, or a name (method, backbone, data set, trainer argument) is unknown.
    """
    schema = OmegaConf.structured(Config)
    paths = [path] if isinstance(path, str | Path) else list(path or [])
    layers = [_read_yaml(Path(p)) for p in paths]
    layers.append(_parse_overrides(list(overrides or [])))
    layers = [export_as_section(layer) for layer in layers]
    try:
        cfg = OmegaConf.merge(schema, *layers)
        # The method's own recipe (VICReg: LARS) under the files and overrides, over the schema.
        recipe = _method_defaults(str(cfg.method), layers)
        if recipe:
            cfg = OmegaConf.merge(schema, recipe, *layers)
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or (
            _failing_interpolation(cfg) if "cfg" in locals() else None
        )
        if key and not getattr(error, "full_key", None):
            raise UserError(
                f"bad value for config key '{key}': its ${{...}} interpolation cannot be resolved "
                f"({str(error).splitlines()[0]}); give {key} a value"
            ) from None
        raise UserError(format_omegaconf_error(error, schema)) from None
    # Merging '???' over a default keeps the default, so look for it in the file itself.
    missing = sorted(
        key
        for index, layer in enumerate(layers[:-1])
        for key in OmegaConf.missing_keys(layer)
        if all(
            OmegaConf.select(later, key, default=None) in (None, "???")
            for later in layers[index + 1 :]
        )
    )
    if missing:
        raise UserError(f"config key '{missing[0]}' needs a value; add {missing[0]}=VALUE")
    validate(cfg)
    return cfg


def _method_defaults(method: str, layers: list[DictConfig]) -> dict[str, Any]:
    """A method's `config_defaults`, less each section whose `name` a file or override sets
    (a config that picks optimizer.name=sgd gets the schema's SGD lr, not LARS's)."""
    defaults: dict[str, Any] = {}
    for hook in METHOD_DEFAULTS:
        defaults.update(hook(method))
    return {
        section: values
        for section, values in defaults.items()
        if not any(OmegaConf.select(layer, f"{section}.name") is not None for layer in layers)
    }


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


def with_defaults(saved: dict[str, Any]) -> DictConfig:
    """A config saved by an older version, with this version's defaults for keys it lacks.

    Checkpoints and exports keep the config they were trained with; keys added since (e.g.
    syre.anchor_scale, data.augment_on) take their defaults, which reproduce the old behaviour.
    """
    saved = export_as_section(saved)
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), saved)  # type: ignore[return-value]
    except OmegaConfBaseException:  # a key this version no longer has: keep the file as it is
        return OmegaConf.create(saved)


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
