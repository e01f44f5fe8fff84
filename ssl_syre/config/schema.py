"""The typed config schema: one dataclass per section, their defaults and field comments."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_syre.config.checks import ranged

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent.parent / "configs" / "default.yaml"


@dataclass
class BackboneConfig:
    """Any timm model name; the classifier is removed (num_classes=0)."""

    name: str = "resnet18"
    # 3x3 stride-1 first conv and no max-pool on ResNets: the recipe for 32x32 images
    # (a 7x7 stem with max-pool caps SimCLR near 0.76 kNN on CIFAR-10, lightly #1419).
    small_image_stem: bool = False
    # false drops a ResNet's stem max-pool but keeps its strided conv: a 14x14 first stage at
    # 28 px for about twice the step time (the quick start's test_resnet).
    stem_max_pool: bool = True
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
