"""Training throughput of our SimCLR (train.py's Lightning path) against a bare lightly loop.

Variants, measured side by side in one process (rotating order, several repeats, warm-up steps
excluded), all with the same backbone, head, data, batch, workers, optimizer and learning rate:

- `bare_lightly`: a plain PyTorch loop written the way lightly's examples are (SimCLRTransform,
  DataLoader, SimCLRProjectionHead, NTXentLoss, SGD with weight decay; no Lightning).
- `ours_syre_off`: `ssl_syre.training.pipeline.train` as train.py runs it with data.augment_on=workers (Trainer, loggers,
  checkpoint callback, reseeding, cosine schedule), SyRe off, with the final evaluation skipped.
- `ours_syre_on`: the same with SyRe on (decay toward anchors in the optimizer hook).

Throughput = images per second over the timed steps (the time from the start of the first
timed step to the end of the last one, so data-loader waits count). Steps stay inside one epoch.

Run: python benchmarks/throughput.py [--steps 10] [--warmup 3] [--repeats 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import gzip
import platform
from pathlib import Path
from typing import Any

import common_args  # benchmarks/common_args.py, beside this script
import numpy as np
import timm
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image
from timing import (  # benchmarks/timing.py; it puts this repository first on sys.path
    StepTimer,
    args_record,
    rotated_repeats,
    train_py_run,
    write_result,
)
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ssl_syre.config import load_config
from ssl_syre.training import pipeline

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = (0.2860,), (0.3530,)  # Fashion-MNIST train statistics (what our data module uses)


# ----- bare lightly loop ---------------------------------------------------------------------
class FashionMNISTPIL(Dataset):
    """Fashion-MNIST's train split from the IDX files as PIL images, like torchvision's."""

    def __init__(self, transform: Any, size: int) -> None:
        with gzip.open(FASHION_MNIST / "train-images-idx3-ubyte.gz") as handle:
            images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        self.images = images[np.random.default_rng(0).permutation(len(images))[:size]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.images[index], mode="L")), 0


class SimCLRModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden: int, out: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.num_features, hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x))


def bare_lightly(args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    transform = SimCLRTransform(
        input_size=28, gaussian_blur=0.0, normalize={"mean": MEAN, "std": STD}
    )
    dataset = FashionMNISTPIL(transform, args.subset)
    dataloader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
    )
    backbone = timm.create_model(args.backbone, num_classes=0, in_chans=1)
    model = SimCLRModel(backbone, args.hidden_dim, args.output_dim)
    criterion = NTXentLoss(temperature=0.5)
    lr = args.lr * args.batch_size / 128
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    timer = StepTimer(args.warmup)
    model.train()
    for index, batch in enumerate(dataloader):
        timer.batch_start(index)
        x0, x1 = batch[0]
        z0, z1 = model(x0), model(x1)
        loss = criterion(z0, z1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        timer.batch_end(index)
        if index + 1 == args.warmup + args.steps:
            break
    return timer.images_per_second(args.batch_size)


# ----- ours: ssl_syre.training.pipeline.train as train.py runs it -------------------------------------
def ours(args: argparse.Namespace, syre: bool) -> float:
    timer = StepTimer(args.warmup)
    with train_py_run(timer) as output_dir:
        cfg = load_config(
            None,
            [
                "method=simclr",
                f"backbone.name={args.backbone}",
                f"method_kwargs.projection_hidden_dim={args.hidden_dim}",
                f"method_kwargs.projection_output_dim={args.output_dim}",
                f"data.batch_size={args.batch_size}",
                f"data.num_workers={args.num_workers}",
                # lightly's transforms in workers, like the bare loop; the device path is
                # compared in benchmarks/augment_throughput.py.
                "data.augment_on=workers",
                f"data.train_subset={args.subset}",
                f"optimizer.lr={args.lr}",
                "optimizer.weight_decay=5e-4",
                f"syre.enabled={str(syre).lower()}",
                "eval.online_every_n_epochs=0",
                "trainer.max_epochs=-1",
                f"trainer.max_steps={args.warmup + args.steps}",
                "trainer.accelerator=cpu",
                "trainer.devices=1",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                f"output_dir={output_dir}",
                "export=false",
            ],
        )
        pipeline.train(cfg)
    return timer.images_per_second(args.batch_size)


def build_parser() -> argparse.ArgumentParser:
    """The command line: model, loader, recipe, timing budget and the variants to time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args.add_backbone(parser)
    common_args.add_loader(parser, batch_size=256, num_workers=2)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--output-dim", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.06, help="x batch/128, as lightly's recipe")
    parser.add_argument("--subset", type=int, default=20000, help="training images")
    common_args.add_steps(parser, 10)
    common_args.add_warmup(parser, 3)
    common_args.add_repeats(parser)
    parser.add_argument("--variants", default="bare_lightly,ours_syre_off,ours_syre_on")
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
    runners = {
        "bare_lightly": lambda: bare_lightly(args),
        "ours_syre_off": lambda: ours(args, syre=False),
        "ours_syre_on": lambda: ours(args, syre=True),
    }
    samples, medians = rotated_repeats(runners, args.variants.split(","), args.repeats)
    reference = medians.get("bare_lightly")
    print(f"\n{'variant':<16}{'median img/s':>14}{'vs bare lightly':>17}   samples")
    for name, value in medians.items():
        ratio = f"{value / reference:.3f}" if reference else "-"
        values = ", ".join(f"{v:.1f}" for v in samples[name])
        print(f"{name:<16}{value:>14.1f}{ratio:>17}   {values}")
    result = {
        "args": args_record(args),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "samples_images_per_s": samples,
        "median_images_per_s": medians,
        "ratio_vs_bare_lightly": {
            name: value / reference for name, value in medians.items() if reference
        },
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
