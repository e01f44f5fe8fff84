"""Where one SimCLR training step spends its time on CPU: data, forward, backward, optimizer+SyRe.

Part 1 (manual timers, our SimCLR LightningModule driven by a plain loop, medians over the
timed steps): producing one batch of augmented views in the main process (what each
DataLoader worker does), waiting for the next batch from the DataLoader with its workers,
forward + loss, backward, `optimizer.step()` with SyRe's hook, and SyRe's work alone.

Part 2 (Lightning's SimpleProfiler on `ssl_syre.training.pipeline.train`, the train.py path with the
final evaluation skipped): what the Trainer itself adds around the step (hooks, logging,
callbacks); printed as Lightning's own table, with a few rows picked out.

Run: python benchmarks/profile_step.py [--steps 8] [--batch-size 256] [--out result.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import common_args  # benchmarks/common_args.py, beside this script
import torch
from lightning.pytorch.profilers import SimpleProfiler
from timing import ROOT, args_record, train_py_run, write_result  # puts ROOT first on sys.path
from torch.utils.data import DataLoader

from ssl_syre.config import load_config
from ssl_syre.data import build_ssl_dataset, data_info
from ssl_syre.methods import METHODS
from ssl_syre.training import pipeline


def overrides(args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [
        f"method={args.method}",
        f"backbone.name={args.backbone}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.num_workers}",
        "data.train_subset=20000",
        f"syre.enabled={str(not args.no_syre).lower()}",
        "eval.online_every_n_epochs=0",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.max_epochs=-1",
        "export=false",
        *extra,
    ]


def manual_timers(args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds per phase of a step, over `args.steps` steps after a warm-up."""
    cfg = load_config(str(ROOT / "configs" / "default.yaml"), overrides(args, []))
    cfg.optimizer.scheduler = "constant"  # no Trainer here: the cosine schedule needs one
    torch.manual_seed(0)
    info = data_info(cfg.data)
    method_cls = METHODS[cfg.method]
    dataset = build_ssl_dataset(cfg.data, method_cls.build_transform(info, cfg.data), 0)
    model = method_cls(cfg, info)
    model.train()
    optimizer = model.configure_optimizers()
    loader = DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
    )
    times: dict[str, list[float]] = {
        "data_wait": [],
        "forward_loss": [],
        "backward": [],
        "optimizer_step_with_syre": [],
    }
    iterator = iter(loader)
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batch = next(iterator)
        t1 = time.perf_counter()
        loss = model.training_loss(batch[0])
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        t4 = time.perf_counter()
        if step >= args.warmup:
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                value_ms = 1e3 * value
                times[key].append(value_ms)
    del iterator
    result = {key: statistics.median(values) for key, values in times.items()}
    # One batch of augmentations in this process: a worker's work per batch (workers run in
    # parallel with the step, so this is hidden unless it exceeds the step / workers).
    indices = list(range(cfg.data.batch_size))
    start = time.perf_counter()
    [dataset[i] for i in indices]
    result["make_one_batch_in_process"] = 1e3 * (time.perf_counter() - start)
    if model.syre is not None:
        # SyRe only touches parameters that have a gradient: make one, then time the hook alone.
        model.training_loss(next(iter(loader))[0]).backward()
        model.syre.detach()
        hook = []
        for _ in range(10):
            start = time.perf_counter()
            model.syre.apply(optimizer)
            hook.append(1e3 * (time.perf_counter() - start))
        result["syre_alone"] = statistics.median(hook)
    return result


def lightning_profile(args: argparse.Namespace) -> str:
    """Lightning's SimpleProfiler report for a short train.py run (final evaluation skipped)."""
    original = pipeline.trainer_kwargs

    def with_profiler(*a: Any, **k: Any) -> dict[str, Any]:
        return {
            **original(*a, **k),
            "profiler": SimpleProfiler(dirpath=output_dir, filename="profile"),
        }

    with train_py_run(trainer_kwargs=with_profiler) as output_dir:
        cfg = load_config(
            str(ROOT / "configs" / "default.yaml"),
            overrides(
                args,
                [
                    f"trainer.max_steps={args.warmup + args.steps}",
                    "trainer.enable_progress_bar=false",
                    "trainer.enable_model_summary=false",
                    f"output_dir={output_dir}",
                ],
            ),
        )
        pipeline.train(cfg)
        reports = sorted(Path(output_dir).glob("*profile*.txt"))
        return reports[0].read_text() if reports else "(SimpleProfiler wrote no report file)"


def build_parser() -> argparse.ArgumentParser:
    """The command line: method, model, loader and the number of profiled steps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr")
    common_args.add_backbone(parser)
    common_args.add_loader(parser, batch_size=256, num_workers=2)
    common_args.add_steps(parser, 8, help=None)
    common_args.add_warmup(parser, 2, help=None)
    parser.add_argument("--no-syre", action="store_true")
    parser.add_argument("--skip-lightning", action="store_true")
    common_args.add_threads(parser)
    common_args.add_out(parser)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    phases = manual_timers(args)
    step = sum(
        phases[k] for k in ("data_wait", "forward_loss", "backward", "optimizer_step_with_syre")
    )
    print(f"\n{args.method} + {args.backbone}, batch {args.batch_size} (2 views), CPU")
    print(f"{'phase (median over steps)':<40}{'ms':>10}{'% of step':>11}")
    for key, value in phases.items():
        share = f"{100 * value / step:.1f}" if key not in ("make_one_batch_in_process",) else "-"
        if key == "syre_alone":
            share = f"{100 * value / step:.1f}"
        print(f"{key:<40}{value:>10.1f}{share:>11}")
    print(f"{'sum of the step phases':<40}{step:>10.1f}")
    report = ""
    if not args.skip_lightning:
        report = lightning_profile(args)
        print("\nLightning SimpleProfiler (train.py path):")
        print(report)
    payload: dict[str, Any] = {
        "args": args_record(args),
        "torch_threads": torch.get_num_threads(),
        "phases_ms": phases,
        "step_ms": step,
        "lightning_simple_profiler": report,
    }
    write_result(payload, args.out)


if __name__ == "__main__":
    main()
