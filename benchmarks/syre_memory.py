"""SyRe's anchor storages (syre.anchor_storage): bytes SyRe holds and step time against plain decay.

For each model (timm `vit_base_patch16_224` and `resnet50`, random init, nothing downloaded):
one set of weights with fixed random gradients and one SGD optimizer (momentum 0.9, coupled
decay: the recipes' default), and one SyRe per storage beside the off arm (σ0 = 0, what
`syre.enabled=false` runs: plain decay toward 0 through the same update, torch SGD's own
weight_decay op). Each measurement attaches one SyRe to the optimizer and times
`optimizer.step()` alone, SyRe's update inside it; no forward or backward pass. The ratio is
that time over the off arm's. Storages take turns in an order that rotates every repeat, so
that load on a shared machine hits each alike. "held" is `SyRe.held_bytes()` after the steps:
the kept anchors on the host and their copies on the device (a regenerated step's chunk
temporaries, at most `anchors.CHUNK_NUMEL` values, are not held).

With --full-step, the same for a whole training step (forward, backward, step) of timm's small
`test_vit` and `test_resnet`, where the update is a smaller share of the step.

Run: python benchmarks/syre_memory.py [--device cpu] [--repeats 3] [--steps 3] [--out DIR]
Results (syre_memory.json, syre_memory.md) go to DIR, or to a new temporary directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
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
from ssl_syre.syre import ANCHOR_STORAGES, SyRe, syre_param_groups  # noqa: E402

OFF = "off"
MODELS = ("vit_base_patch16_224", "resnet50")
SMALL_MODELS = ("test_vit", "test_resnet")


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A no-op on CPU; on CUDA, wait for queued kernels so that timers see their cost."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def build(name: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """The model, one SyRe per arm (off and each storage) and one SGD optimizer for all."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).to(device)
    arms: dict[str, SyRe] = {
        OFF: SyRe(model, weight_decay=5e-4, sigma0=0.0, mode="coupled", seed=0),
    }
    for storage in args.storages:
        arms[storage] = SyRe(
            model,
            weight_decay=5e-4,
            sigma0=1.0,
            d_eps=args.d_eps,
            mode="coupled",
            seed=0,
            anchor_storage=storage,
        )
    # Every arm covers the same weights, so one optimizer's groups fit them all.
    groups = syre_param_groups(model, arms[OFF], weight_decay=5e-4)
    optimizer = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    return {"model": model, "arms": arms, "optimizer": optimizer}


def time_steps(run: Callable[[], None], sync: Callable[[], None], warmup: int, steps: int) -> float:
    """Median milliseconds of `steps` calls of `run` after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def rotate(
    arms: list[str], repeats: int, measure: Callable[[str], float], label: str
) -> dict[str, list[float]]:
    """`repeats` rounds over every arm, starting one later each round; ms per arm and round."""
    samples: dict[str, list[float]] = {arm: [] for arm in arms}
    for repeat in range(repeats):
        shift = repeat % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            samples[arm].append(measure(arm))
            print(f"{label} repeat {repeat} {arm:<11} {samples[arm][-1]:9.2f} ms", flush=True)
    return samples


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median ms per arm, and the median over rounds of each round's ratio to the off arm."""
    rows = {}
    for arm, values in samples.items():
        ratios = [v / off for v, off in zip(values, samples[OFF], strict=True)]
        rows[arm] = {"ms": statistics.median(values), "ratio_vs_off": statistics.median(ratios)}
    return rows


def optimizer_step_arm(name: str, device: torch.device, args: argparse.Namespace) -> dict:
    """Bytes held and optimizer-step time per arm for one large model."""
    built = build(name, device, args)
    model, arms, optimizer = built["model"], built["arms"], built["optimizer"]
    generator = torch.Generator(device=device).manual_seed(0)
    for param in model.parameters():
        param.grad = 1e-3 * torch.randn(
            param.shape, generator=generator, device=device, dtype=param.dtype
        )
    sync = synchronizer(device)

    def measure(arm: str) -> float:
        arms[arm].attach(optimizer)
        try:
            return time_steps(optimizer.step, sync, args.warmup, args.steps)
        finally:
            arms[arm].detach()

    samples = rotate(list(arms), args.repeats, measure, name)
    rows = summarize(samples)
    covered = sum(p.numel() for p in arms[OFF].covered_parameters())
    for arm, syre in arms.items():
        rows[arm]["held_bytes"] = syre.held_bytes()
        rows[arm]["samples_ms"] = samples[arm]
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "covered_values": covered,
        "arms": rows,
    }
    return result  # the model and its SyRe copies are freed before the next model


def full_step_arm(name: str, device: torch.device, args: argparse.Namespace) -> dict:
    """Whole training-step time per arm for one small model (forward, backward, step)."""
    built = build(name, device, args)
    model, arms, optimizer = built["model"], built["arms"], built["optimizer"]
    size = model.pretrained_cfg["input_size"]
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((args.batch_size, *size), generator=generator).to(device)
    labels = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)
    sync = synchronizer(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def measure(arm: str) -> float:
        arms[arm].attach(optimizer)
        try:
            return time_steps(step, sync, args.warmup, args.steps)
        finally:
            arms[arm].detach()

    rows = summarize(rotate(list(arms), args.repeats, measure, name))
    return {"batch_size": args.batch_size, "input_size": list(size), "arms": rows}


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The tables of a result, as RESULTS.md shows them."""
    device = result["settings"]["device"]
    lines = [
        f"Optimizer step alone (SGD momentum 0.9, coupled, d_eps={result['settings']['d_eps']}; "
        f"{device}; median of {result['settings']['repeats']} rotated rounds of "
        f"{result['settings']['steps']} steps):",
        "",
        "| model | covered values | storage | held on host (MiB) | held on device (MiB) "
        "| bytes per covered value | step (ms) | ratio vs off |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, model in result["optimizer_step"].items():
        for arm, row in model["arms"].items():
            held = row["held_bytes"]
            host = held.get("cpu", 0)
            on_device = sum(v for k, v in held.items() if k != "cpu") if device != "cpu" else host
            lines.append(
                f"| {name} | {model['covered_values']:,} | {arm} | {mib(host)} | "
                f"{mib(on_device) if device != 'cpu' else 'same'} | "
                f"{on_device / model['covered_values']:.2f} | {row['ms']:.1f} | "
                f"{row['ratio_vs_off']:.2f} |"
            )
    if result.get("full_step"):
        lines += [
            "",
            "Whole training step (forward, backward, step; batch "
            f"{result['settings']['batch_size']}):",
            "",
            "| model | storage | step (ms) | ratio vs off |",
            "|---|---|---|---|",
        ]
        for name, model in result["full_step"].items():
            for arm, row in model["arms"].items():
                lines.append(f"| {name} | {arm} | {row['ms']:.1f} | {row['ratio_vs_off']:.2f} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command line: device, models, storages, timing budget and where results go."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="timm model names")
    parser.add_argument(
        "--storages", nargs="+", default=list(ANCHOR_STORAGES), choices=ANCHOR_STORAGES
    )
    parser.add_argument("--d-eps", type=float, default=0.0, help="SyRe's d_eps (0: D = I)")
    common_args.add_steps(parser, default=3)
    common_args.add_warmup(parser, default=1)
    common_args.add_repeats(parser)
    parser.add_argument("--full-step", action="store_true", help=f"also time {SMALL_MODELS}")
    parser.add_argument("--batch-size", type=int, default=8, help="images per full step")
    common_args.add_threads(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for syre_memory.json and .md (default: a new temporary directory)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = args.out or Path(tempfile.mkdtemp(prefix="syre_memory."))
    result: dict[str, Any] = {
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "optimizer_step": {name: optimizer_step_arm(name, device, args) for name in args.models},
    }
    if args.full_step:
        result["full_step"] = {name: full_step_arm(name, device, args) for name in SMALL_MODELS}
    table = markdown(result)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "syre_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "syre_memory.md").write_text(table)
    print(f"wrote {out / 'syre_memory.json'} and {out / 'syre_memory.md'}")
    return result


if __name__ == "__main__":
    main()
