"""Step-time overhead of SyRe against plain weight decay, measured side by side in one run.

For each optimizer (SGD with momentum, AdamW) two copies of the same model train on the same
random batch: A with the optimizer's own weight decay, B with SyRe (weight decay toward its
anchors, applied by the optimizer hook). Blocks of steps alternate A/B/A/B after a warm-up, so
machine drift (thermal, other processes) hits both alike; the table reports the median time of
a whole training step, of `optimizer.step()` alone, and of one SyRe application alone.

Run: python benchmarks/syre_overhead.py [--model resnet18] [--device cpu] [--out result.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common_args  # benchmarks/common_args.py, beside this script
import timm
import torch
from torch import nn

# Runs from a checkout without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_syre.syre import SyRe, syre_param_groups  # noqa: E402


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A no-op on CPU; on CUDA, wait for queued kernels so that timers see their cost."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def make_optimizer(
    name: str, model: nn.Module, syre: SyRe | None, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    groups = syre_param_groups(model, syre, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer '{name}': use sgd or adamw")


def measure(args: argparse.Namespace, optimizer_name: str) -> dict[str, Any]:
    """Interleaved A/B timing for one optimizer; returns medians in milliseconds."""
    device = torch.device(args.device)
    sync = synchronizer(device)
    torch.manual_seed(0)
    model_plain = timm.create_model(args.model, num_classes=10).to(device)
    model_syre = copy.deepcopy(model_plain)
    lr = 0.05 if optimizer_name == "sgd" else 1e-3
    weight_decay = 5e-4 if optimizer_name == "sgd" else 0.05
    syre = SyRe(
        model_syre, weight_decay=weight_decay, sigma0=0.01, d_eps=args.d_eps, mode=args.mode
    )
    runs = {
        "plain": (model_plain, make_optimizer(optimizer_name, model_plain, None, lr, weight_decay)),
        "syre": (model_syre, make_optimizer(optimizer_name, model_syre, syre, lr, weight_decay)),
    }
    syre.attach(runs["syre"][1])

    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    images = torch.randn(shape, generator=generator).to(device)
    labels = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)
    step_ms: dict[str, list[float]] = {"plain": [], "syre": []}
    optimizer_ms: dict[str, list[float]] = {"plain": [], "syre": []}

    def step(run: str, record: bool) -> None:
        model, optimizer = runs[run]
        sync()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        sync()
        before_step = time.perf_counter()
        optimizer.step()
        sync()
        end = time.perf_counter()
        if record:
            step_ms[run].append(1e3 * (end - start))
            optimizer_ms[run].append(1e3 * (end - before_step))

    for _ in range(args.warmup):
        step("plain", record=False)
        step("syre", record=False)
    blocks = max(2, args.steps // args.block)
    for index in range(blocks):
        # Alternate which run goes first, so neither always follows the other's cache state.
        order = ("plain", "syre") if index % 2 == 0 else ("syre", "plain")
        for run in order:
            for _ in range(args.block):
                step(run, record=True)

    # SyRe alone: the same foreach work the hook does inside optimizer.step().
    syre.detach()
    hook_ms = []
    for _ in range(args.hook_repeats):
        sync()
        start = time.perf_counter()
        syre.apply(runs["syre"][1])
        sync()
        hook_ms.append(1e3 * (time.perf_counter() - start))

    plain, with_syre = statistics.median(step_ms["plain"]), statistics.median(step_ms["syre"])
    # Ratios of neighbouring steps cancel load that changes over seconds (shared machines).
    paired = [b / a for a, b in zip(step_ms["plain"], step_ms["syre"], strict=True)]
    return {
        "optimizer": optimizer_name,
        "steps_per_run": len(step_ms["plain"]),
        "step_ms_plain": plain,
        "step_ms_syre": with_syre,
        "step_ratio": with_syre / plain,
        "step_ratio_paired": statistics.median(paired),
        "optimizer_step_ms_plain": statistics.median(optimizer_ms["plain"]),
        "optimizer_step_ms_syre": statistics.median(optimizer_ms["syre"]),
        "syre_hook_ms": statistics.median(hook_ms),
        "covered_tensors": len(syre.covered_names),
        "covered_values": sum(p.numel() for p in syre.covered_parameters()),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line: model, batch, timing budget, device and the SyRe settings to time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="any timm model name")
    common_args.add_loader(parser, batch_size=64)
    parser.add_argument("--image-size", type=int, default=32)
    common_args.add_steps(parser, 30)
    parser.add_argument("--block", type=int, default=1, help="steps per A or B block")
    common_args.add_warmup(parser, 3)
    parser.add_argument("--hook-repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    common_args.add_threads(
        parser,
        default=0,
        help="CPU threads for torch (0: torch's default); 1 avoids OpenMP stalls on a busy machine",
    )
    parser.add_argument("--optimizers", default="sgd,adamw")
    parser.add_argument("--mode", default="decoupled", choices=["decoupled", "coupled"])
    parser.add_argument("--d-eps", type=float, default=0.0)
    common_args.add_out(parser)
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    results = [measure(args, name) for name in args.optimizers.split(",")]
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(
        f"{args.model}, batch {args.batch_size}, {args.image_size}x{args.image_size}, {device} "
        f"({torch.get_num_threads()} threads), SyRe mode={args.mode} d_eps={args.d_eps}, "
        f"{results[0]['covered_values'] / 1e6:.1f}M covered values"
    )
    header = (
        f"{'optimizer':<10}{'step plain':>12}{'step syre':>12}{'ratio':>8}{'paired':>8}"
        f"{'opt.step plain':>16}{'opt.step syre':>15}{'syre alone':>12}"
    )
    print(header)
    for r in results:
        print(
            f"{r['optimizer']:<10}{r['step_ms_plain']:>10.1f}ms{r['step_ms_syre']:>10.1f}ms"
            f"{r['step_ratio']:>8.3f}{r['step_ratio_paired']:>8.3f}"
            f"{r['optimizer_step_ms_plain']:>14.2f}ms"
            f"{r['optimizer_step_ms_syre']:>13.2f}ms{r['syre_hook_ms']:>10.2f}ms"
        )
    print(
        "ratio: median step time syre/plain; paired: median of ratios of neighbouring steps; "
        "syre alone: one SyRe application (the hook's work), median"
    )
    if args.out is not None:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        payload = {
            "config": config,
            "device": device,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "results": results,
        }
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
