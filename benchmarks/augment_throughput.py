"""Augmentation on the device vs lightly in DataLoader workers: augmentation alone and end to end.

Part 1, augmentation alone (one process, `--threads` torch threads, images/s):
- `lightly_pil`: lightly's SimCLRTransform, one image at a time, as each DataLoader worker runs it.
- `batched`: `ssl_syre.data.augment.BatchAugment` with the same recipe on a whole uint8 batch.
Both make the two views of each image; Fashion-MNIST (28x28 grey) and random 32x32 RGB images
(CIFAR-sized, with lightly's CIFAR recipe: no blur).

Part 2, end to end (SimCLR + test_resnet on Fashion-MNIST, the same model, batch, optimizer
and lr everywhere, SyRe off; images/s over the timed steps, data waits included):
- `workers`: train.py's path with data.augment_on=workers (lightly's PIL views in
  `--num-workers` DataLoader workers; Lightning).
- `device`: train.py's path with data.augment_on=device (uint8 batches, views made by the
  method's BatchAugment in the training step; Lightning).
- `bare_device`: a plain PyTorch loop with the same uint8 batches, the same BatchAugment and
  the same model, loss and SGD: what the framework around the step costs.
Variants alternate in a rotating order over `--repeats` rounds, medians reported, ratios taken
within this one run, so that a loaded machine slows every variant alike.

Run: python benchmarks/augment_throughput.py [--threads 2] [--repeats 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import common_args  # benchmarks/common_args.py, beside this script
import numpy as np
import torch
from lightly.transforms import SimCLRTransform
from PIL import Image
from timing import (  # benchmarks/timing.py; it puts this repository first on sys.path
    StepTimer,
    args_record,
    rotated_repeats,
    train_py_run,
    write_result,
)

from ssl_syre.config import load_config
from ssl_syre.data import build_ssl_dataset, data_info
from ssl_syre.data.augment import BatchAugment, ViewRecipe
from ssl_syre.data.loaders import train_loader
from ssl_syre.methods import METHODS
from ssl_syre.training import pipeline


# ----- part 1: augmentation alone --------------------------------------------------------------
def augmentation_alone(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    cases = {
        "fashion_mnist_28_grey": (
            rng.integers(0, 256, (args.batch_size, 28, 28), dtype=np.uint8),
            {
                "input_size": 28,
                "gaussian_blur": 0.0,
                "normalize": {"mean": [0.286], "std": [0.353]},
            },
        ),
        "cifar_32_rgb": (
            rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8),
            {
                "input_size": 32,
                "gaussian_blur": 0.0,
                "normalize": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
            },
        ),
    }
    results: dict[str, Any] = {}
    for name, (pixels, kwargs) in cases.items():
        lightly = SimCLRTransform(**kwargs)
        images = [Image.fromarray(p) for p in pixels]
        recipe = ViewRecipe.from_lightly(type(lightly.transforms[0]), **kwargs)
        augment = BatchAugment([recipe, recipe])
        batch = torch.from_numpy(pixels)
        batch = batch.unsqueeze(1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2).contiguous()
        generator = torch.Generator().manual_seed(0)
        samples: dict[str, list[float]] = {"lightly_pil": [], "batched": []}
        augment(batch, generator)  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            for image in images:
                lightly(image)
            samples["lightly_pil"].append(len(images) / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(5):
                augment(batch, generator)
            samples["batched"].append(5 * len(batch) / (time.perf_counter() - start))
        medians = {k: statistics.median(v) for k, v in samples.items()}
        results[name] = {
            "images_per_s": medians,
            "samples": samples,
            "ratio_batched_vs_lightly": medians["batched"] / medians["lightly_pil"],
        }
        print(
            f"{name:<24} lightly {medians['lightly_pil']:8.0f} img/s   batched "
            f"{medians['batched']:8.0f} img/s   ratio {results[name]['ratio_batched_vs_lightly']:.1f}",
            flush=True,
        )
    return results


# ----- part 2: end to end ----------------------------------------------------------------------
def overrides(args: argparse.Namespace, augment_on: str) -> list[str]:
    return [
        "method=simclr",
        f"backbone.name={args.backbone}",
        "method_kwargs.projection_hidden_dim=512",
        "method_kwargs.projection_output_dim=128",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.num_workers}",
        f"data.train_subset={args.subset}",
        f"data.augment_on={augment_on}",
        "syre.enabled=false",
        "optimizer.scheduler=constant",
        "eval.online_every_n_epochs=0",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={args.warmup + args.steps}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "export=false",
    ]


def train_py_path(args: argparse.Namespace, augment_on: str) -> float:
    """images/s of `ssl_syre.training.pipeline.train` (train.py's job), final evaluation skipped."""
    timer = StepTimer(args.warmup)
    with train_py_run(timer) as output_dir:
        pipeline.train(
            load_config(None, [*overrides(args, augment_on), f"output_dir={output_dir}"])
        )
    return timer.images_per_second(args.batch_size)


def bare_device_loop(args: argparse.Namespace) -> float:
    """The same uint8 batches, BatchAugment, model, loss and SGD in a plain loop."""
    cfg = load_config(None, [*overrides(args, "device"), "output_dir=unused"])
    torch.manual_seed(0)
    info = data_info(cfg.data)
    model = METHODS["simclr"](cfg, info)
    model.train()
    loader, _ = train_loader(build_ssl_dataset(cfg.data, None, 0), cfg.data, 0, "device")
    lr = cfg.optimizer.lr * cfg.data.batch_size / 128
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator()
    timer = StepTimer(args.warmup)
    for index, (images, _) in enumerate(loader):
        timer.batch_start(index)
        views = model.augment(images, generator.manual_seed(index))
        loss = model.training_loss(views)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        timer.batch_end(index)
        if index + 1 == args.warmup + args.steps:
            break
    return timer.images_per_second(args.batch_size)


def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    runners = {
        "workers": lambda: train_py_path(args, "workers"),
        "device": lambda: train_py_path(args, "device"),
        "bare_device": lambda: bare_device_loop(args),
    }
    samples, medians = rotated_repeats(runners, args.variants.split(","), args.repeats)
    ratios = {}
    if "device" in medians and "workers" in medians:
        ratios["device_vs_workers"] = medians["device"] / medians["workers"]
    if "device" in medians and "bare_device" in medians:
        ratios["device_vs_bare_device"] = medians["device"] / medians["bare_device"]
    print(f"\n{'variant':<14}{'median img/s':>14}   samples")
    for name, value in medians.items():
        print(f"{name:<14}{value:>14.1f}   {', '.join(f'{v:.1f}' for v in samples[name])}")
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    return {"samples_images_per_s": samples, "median_images_per_s": medians, "ratios": ratios}


def build_parser() -> argparse.ArgumentParser:
    """The command line: model, loader, timing budget and the parts and variants to time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args.add_backbone(parser)
    common_args.add_loader(parser, batch_size=256, num_workers=2)
    parser.add_argument("--subset", type=int, default=20000)
    common_args.add_steps(parser, 10)
    common_args.add_warmup(parser, 3)
    common_args.add_repeats(parser)
    parser.add_argument("--parts", default="augmentation,end_to_end")
    parser.add_argument("--variants", default="workers,device,bare_device")
    common_args.add_threads(parser)
    common_args.add_out(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if (args.warmup + args.steps) * args.batch_size > args.subset:
        parser.error("warm-up + timed steps must fit in one epoch of --subset images")
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "args": args_record(args),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": os.getloadavg(),
    }
    parts = args.parts.split(",")
    if "augmentation" in parts:
        result["augmentation_alone"] = augmentation_alone(args)
    if "end_to_end" in parts:
        result["end_to_end"] = end_to_end(args)
    result["load_average_at_end"] = os.getloadavg()
    write_result(result, args.out)


if __name__ == "__main__":
    main()
