"""GPU throughput of SimCLR + ResNet-18 (3x3 stem) at 32x32: model alone and train.py's path.

Measurements on synthetic CIFAR-sized data (CIFAR is not on these machines):

- `model`: the training step alone (backbone + SimCLR head + NT-Xent + SGD) on random tensors
  already on the GPU, for fp32 / bf16 autocast, each with and without channels_last: the
  ceiling that the data pipeline cannot beat.
- `augment`: the device path's batched augmentation alone (`BatchAugment`, lightly's SimCLR
  CIFAR recipe, two views) on a uint8 batch already on the GPU.
- `pipeline`: `ssl_syre.training.pipeline.train` as train.py runs it (Lightning, bf16-mixed,
  backbone.channels_last, SyRe on), with the data set replaced by random uint8 32x32x3 images
  and the final evaluation skipped; once per `--augment-on` path: `workers` (lightly's
  SimCLRTransform on PIL images in DataLoader workers) and `device` (uint8 batches, views made
  on the GPU in the training step).

From each path's images/s it extrapolates lightly's CIFAR-10 recipe: 200 epochs of 50,000
images at batch 512 (drop_last: 97 steps per epoch), to compare with lightly's 87.1 min for
SimCLR on one RTX A6000 (DESIGN.md section 3).

Run: python benchmarks/gpu_throughput.py [--parts model,pipeline] [--out gpu_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import common_args  # benchmarks/common_args.py, beside this script
import numpy as np
import torch
from timing import ROOT, train_py_run, write_result  # also puts ROOT first on sys.path
from torch import nn

from ssl_syre.backbones import create_backbone
from ssl_syre.config import load_config
from ssl_syre.data import ArrayImageDataset
from ssl_syre.training import pipeline
from ssl_syre.training.callbacks import ReseedEachEpoch

CIFAR10_IMAGES, RECIPE_EPOCHS, RECIPE_BATCH = 50_000, 200, 512
LIGHTLY_SIMCLR_MINUTES = 87.1  # lightly's benchmark, bs512, 200 epochs, RTX A6000


def model_step_throughput(
    args: argparse.Namespace, precision: str, channels_last: bool
) -> dict[str, Any]:
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    device = torch.device("cuda")
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", in_chans=3, small_image_stem=True)
    model = nn.Sequential(backbone, SimCLRProjectionHead(512, 2048, 128)).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.24, momentum=0.9, weight_decay=5e-4)
    views = [
        torch.randn(args.batch_size, 3, 32, 32, device=device).to(memory_format=memory_format)
        for _ in range(2)
    ]
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = criterion(model(views[0]), model(views[1]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.model_steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "precision": precision,
        "channels_last": channels_last,
        "images_per_s": args.model_steps * args.batch_size / seconds,
        "step_ms": 1e3 * seconds / args.model_steps,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def cuda_ms(function: Any, repeats: int, warmup: int) -> float:
    """Mean milliseconds of `function()` on the GPU, after `warmup` calls."""
    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / repeats


def augment_throughput(args: argparse.Namespace) -> dict[str, Any]:
    from lightly.transforms import SimCLRViewTransform

    from ssl_syre.data.augment import BatchAugment, ViewRecipe, color_jitter

    normalize = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
    recipe = ViewRecipe.from_lightly(
        SimCLRViewTransform, input_size=32, gaussian_blur=0.0, normalize=normalize
    )
    images = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8, device="cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    # The jitter eager and compiled (the default), side by side.
    augments = {
        label: BatchAugment([recipe, recipe], compile_jitter=compiled).cuda()
        for label, compiled in (("eager", False), ("compiled", True))
    }
    batch_ms = {
        label: cuda_ms(lambda a=augment: a(images, generator), args.model_steps, 3)
        for label, augment in augments.items()
    }
    augment = augments["compiled"]
    ms = batch_ms["compiled"]

    # The colour jitter alone, both ways side by side (augment.color_jitter's docstring):
    # masked (the GPU default) vs indexed rows (the CPU default; one host sync per step).
    count = args.batch_size
    pixels = torch.rand(count, 3, 32, 32, device="cuda")
    factors = torch.rand(count, 4, device="cuda") * 0.8 + 0.6
    factors[:, 3] -= 1.0
    order = torch.argsort(torch.rand(count, 4, device="cuda"), dim=1)
    apply = torch.rand(count, device="cuda") < 0.8
    compiled_jitter = augment.jitter_function(pixels.device)
    ways = {
        "indexed": lambda: color_jitter(pixels, apply, factors, order, (0, 1, 2, 3), False),
        "masked": lambda: color_jitter(pixels, apply, factors, order, (0, 1, 2, 3), True),
        "masked_compiled": lambda: compiled_jitter(
            pixels, apply, factors, order, (0, 1, 2, 3), True
        ),
    }
    jitter_ms = {way: cuda_ms(function, args.model_steps, 3) for way, function in ways.items()}
    compiled_vs_eager = float((ways["masked_compiled"]() - ways["masked"]()).abs().max())
    profile = None
    if args.profile_dir:  # where one batch's time goes, op by op
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                augment(images, generator)
            torch.cuda.synchronize()
        profile = Path(args.profile_dir) / "augment_profile.txt"
        profile.parent.mkdir(parents=True, exist_ok=True)
        averages = prof.key_averages()
        profile.write_text(
            averages.table(sort_by="self_cpu_time_total", row_limit=20)
            + "\n"
            + averages.table(sort_by="self_cuda_time_total", row_limit=20)
        )
    return {
        "batch_size": args.batch_size,
        "images_per_s": args.batch_size / (ms / 1e3),
        "ms_per_batch": ms,
        "ms_per_batch_jitter_eager_vs_compiled": batch_ms,
        "color_jitter_ms_one_view": jitter_ms,
        "color_jitter_compiled_vs_eager_max_abs_diff": compiled_vs_eager,
        "profile": str(profile) if profile else None,
        "note": "two views per image, lightly's SimCLR CIFAR recipe (no blur)",
    }


def pipeline_throughput(args: argparse.Namespace, augment_on: str) -> dict[str, Any]:
    times: dict[str, float] = {}

    class TimedReseedEachEpoch(ReseedEachEpoch):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
            if index == args.warmup:
                torch.cuda.synchronize()
                times["start"] = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, module: Any, outputs: Any, batch: Any, index: int
        ) -> None:
            if index == args.warmup + args.pipeline_steps - 1:
                torch.cuda.synchronize()
                times["end"] = time.perf_counter()

    rng = np.random.default_rng(0)
    count = (args.warmup + args.pipeline_steps) * args.batch_size
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count)

    def ssl_dataset(data_cfg: Any, transform: Any, seed: int) -> ArrayImageDataset:
        return ArrayImageDataset(images, labels, transform)

    def eval_datasets(data_cfg: Any, seed: int, normalize: bool = True) -> tuple[Any, Any]:
        small = ArrayImageDataset(images[:512], labels[:512])
        return small, small

    with train_py_run(
        ReseedEachEpoch=TimedReseedEachEpoch,
        build_ssl_dataset=ssl_dataset,
        build_eval_datasets=eval_datasets,
    ) as output_dir:
        cfg = load_config(
            str(ROOT / "configs" / "simclr_cifar10.yaml"),
            [
                "backbone.name=resnet18",
                "backbone.small_image_stem=true",
                "backbone.channels_last=true",
                f"data.batch_size={args.batch_size}",
                f"data.num_workers={args.num_workers}",
                f"data.augment_on={augment_on}",
                "data.download=false",
                "syre.enabled=true",
                "eval.online_every_n_epochs=0",
                "trainer.accelerator=gpu",
                "trainer.devices=1",
                "trainer.precision=bf16-mixed",
                "trainer.max_epochs=-1",
                f"trainer.max_steps={args.warmup + args.pipeline_steps}",
                "trainer.enable_progress_bar=false",
                f"output_dir={output_dir}",
                "export=false",
                # Lightning's SimpleProfiler prints where the step's time goes, hook by hook.
                *([f"trainer.profiler={args.trainer_profiler}"] if args.trainer_profiler else []),
            ],
        )
        pipeline.train(cfg)
    seconds = times["end"] - times["start"]
    images_per_s = args.pipeline_steps * args.batch_size / seconds
    steps = RECIPE_EPOCHS * (CIFAR10_IMAGES // RECIPE_BATCH)
    minutes = steps * RECIPE_BATCH / images_per_s / 60
    return {
        "augment_on": augment_on,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "images_per_s": images_per_s,
        "step_ms": 1e3 * seconds / args.pipeline_steps,
        "recipe": f"{RECIPE_EPOCHS} epochs x {CIFAR10_IMAGES} images, batch {RECIPE_BATCH}",
        "recipe_minutes_extrapolated": minutes,
        "lightly_a6000_minutes": LIGHTLY_SIMCLR_MINUTES,
        "note": "training steps only: no online kNN, checkpoint or evaluation time",
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line: parts, pipeline paths, loader, timing budget and profiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="model,augment,pipeline")
    parser.add_argument("--augment-on", default="workers,device", help="pipeline paths to time")
    common_args.add_loader(parser, batch_size=512, num_workers=min(14, os.cpu_count() or 1))
    common_args.add_warmup(parser, 5, help=None)
    parser.add_argument("--model-steps", type=int, default=30)
    parser.add_argument("--pipeline-steps", type=int, default=40)
    common_args.add_out(parser, help=None)
    parser.add_argument("--profile-dir", type=Path, help="augment part: write a torch profile")
    parser.add_argument("--trainer-profiler", help="pipeline part: trainer.profiler (e.g. simple)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    parts = args.parts.split(",")
    if "model" in parts:
        result["model"] = []
        for precision in ("fp32", "bf16"):
            for channels_last in (False, True):
                row = model_step_throughput(args, precision, channels_last)
                result["model"].append(row)
                print(json.dumps(row), flush=True)
    if "augment" in parts:
        result["augment"] = augment_throughput(args)
        print(json.dumps(result["augment"]), flush=True)
    if "pipeline" in parts:
        result["pipeline"] = {}
        for augment_on in args.augment_on.split(","):
            result["pipeline"][augment_on] = pipeline_throughput(args, augment_on)
            print(json.dumps(result["pipeline"][augment_on]), flush=True)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
