"""One training step on the GPU: the machine's ceilings, the step's parts, the speed-ups of
issue 20 as ratios in one run, the sync-free check and an accuracy arm (gpu_check.sh).

Phases (`--phases`, comma-separated; all by default):
- `ceilings`: bf16 matrix-multiply TFLOP/s, device copy and pinned host-to-device GB/s.
- `split`: one SimCLR step (ResNet-18 with the small-image stem, batch 512, 32 px, bf16
  autocast, channels_last, SyRe on) split into data, augmentation, forward, backward,
  optimizer+SyRe and logging, timed with CUDA events (medians), for today's path.
- `ladder`: the changes one after another, each as ms/step and as a ratio to today's path
  in this run: today (lightly's NT-Xent, a host read of the loss and of its finiteness every
  step, the split gathered on the host) -> sync_free (our NT-Xent, the loss checked at logging
  steps only) -> resident (data.on_device) -> fused (optimizer.implementation=fused) ->
  compiled (backbone.compile).
- `syncfree`: Lightning's loop on the fast path with `torch.cuda.set_sync_debug_mode("error")`
  for every step that is not a logging step (on a CPU: Tensor.item/__bool__ counted instead).
- `accuracy`: train.py twice on Fashion-MNIST at 32 px (ResNet-18 small stem, bf16-mixed,
  batch 512), reference path vs fast path, same seed: kNN (k=200) within 1 point of each other
  and both above raw pixels on the same bank.

Data for `split`, `ladder` and `syncfree` are random uint8 32x32x3 images (CIFAR's shape).
`--smoke` runs every phase on the CPU at toy sizes (test_resnet, small batches, a few steps,
the accuracy arm on 1,000 images) to check the script itself.

Run: python benchmarks/gpu_step.py [--smoke] [--phases ladder,accuracy] [--out step.json]
     [--fashion-mnist DIR]  (the four .gz files; default: the data set's own location)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common_args  # benchmarks/common_args.py, beside this script
import lightning.pytorch as pl
import torch
from lightly.loss import NTXentLoss as LightlyNTXentLoss
from timing import ROOT, write_result  # also puts ROOT first on sys.path

from ssl_syre.config import load_config
from ssl_syre.data import data_info
from ssl_syre.data.loaders import TensorBatches
from ssl_syre.methods import METHODS
from ssl_syre.training.callbacks import ReseedEachEpoch

PHASES = ("ceilings", "split", "ladder", "syncfree", "accuracy")
LADDER = ("today", "sync_free", "resident", "fused", "compiled")
PARTS = ("data", "augmentation", "forward", "backward", "optimizer_syre", "logging")


def sizes(smoke: bool, quick_start: bool = False) -> dict[str, Any]:
    if quick_start:  # configs/default.yaml's model and batch on Fashion-MNIST-shaped images
        size = {"backbone": "test_resnet", "batch": 256, "images": 2048, "warmup": 3, "steps": 12}
        return {**size, "config": "quick_start", "shape": (1, 28, 28)}
    if smoke:
        size = {"backbone": "test_resnet", "batch": 16, "images": 128, "warmup": 1, "steps": 4}
    else:
        size = {"backbone": "resnet18", "batch": 512, "images": 8192, "warmup": 10, "steps": 30}
    return {**size, "config": "cifar10", "shape": (3, 32, 32)}


class Timer:
    """Elapsed ms between marks: CUDA events on a GPU (no sync until read), else the clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def spans(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return [1000 * (b - a) for a, b in zip(self.marks, self.marks[1:], strict=False)]


def ceilings(device: torch.device, smoke: bool) -> dict[str, float]:
    n = 512 if smoke else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (
        torch.randn(n, n, device=device, dtype=dtype),
        torch.randn(n, n, device=device, dtype=dtype),
    )
    big = torch.empty(2**24 if smoke else 2**28, dtype=torch.float32, device=device)  # 64 MB / 1 GB
    host = (
        torch.empty(big.numel() // 4, dtype=torch.float32).pin_memory()
        if device.type == "cuda"
        else None
    )
    results = {}
    for name, work, amount in (
        ("matmul_tflops", lambda: a @ b, 2 * n**3 / 1e12),
        ("copy_gb_per_s", lambda: big.clone(), 2 * big.numel() * 4 / 1e9),
        (
            "h2d_pinned_gb_per_s",
            (lambda: host.to(device, non_blocking=True)) if host is not None else None,
            (host.numel() * 4 / 1e9) if host is not None else 0,
        ),
    ):
        if work is None:
            continue
        work()
        timer = Timer(device)
        timer.mark()
        for _ in range(10):
            work()
        timer.mark()
        results[name] = round(amount * 10 / (timer.spans()[0] / 1000), 2)
    return results


def build(
    size: dict[str, Any], device: torch.device, variant: str
) -> tuple[Any, Any, TensorBatches]:
    """The model, optimizer and uint8 batches of one ladder `variant` (cumulative changes)."""
    rank = LADDER.index(variant)
    overrides = [
        f"backbone.name={size['backbone']}",
        f"backbone.channels_last={'true' if device.type == 'cuda' else 'false'}",
        f"data.batch_size={size['batch']}",
        "optimizer.scheduler=constant",
        f"optimizer.implementation={'fused' if rank >= 3 else 'auto'}",
        f"backbone.compile={'true' if rank >= 4 else 'false'}",
    ]
    if size["config"] == "cifar10":  # lightly's CIFAR-10 SimCLR recipe
        cfg = load_config(None, ["data.name=cifar10", "backbone.small_image_stem=true", *overrides])
    else:
        cfg = load_config(ROOT / "configs/default.yaml", overrides)
    torch.manual_seed(0)
    model = METHODS["simclr"](cfg, data_info(cfg.data)).to(device)
    if rank == 0:
        model.criterion = LightlyNTXentLoss(temperature=model.kwargs.temperature)
    optimizer = model.configure_optimizers()
    generator = torch.Generator().manual_seed(0)
    shape = (size["images"], *size["shape"])
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    batches = TensorBatches(images, torch.zeros(size["images"], dtype=torch.long))
    if rank >= 2:
        batches.to(device)
    return model, optimizer, batches


def run_steps(
    variant: str, size: dict[str, Any], device: torch.device, log_every: int = 50
) -> dict[str, Any]:
    """Warm-up, then timed steps of `variant`: per-part medians and the whole step's median."""
    model, optimizer, batches = build(size, device, variant)
    rank = LADDER.index(variant)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(1)).tolist()
    per_batch = len(batches) // size["batch"]
    parts: dict[str, list[float]] = {part: [] for part in PARTS}
    totals: list[float] = []
    running = torch.zeros((), device=device)
    model.train()
    for step in range(size["warmup"] + size["steps"]):
        index = step % per_batch
        chosen = order[index * size["batch"] : (index + 1) * size["batch"]]
        timer = Timer(device)
        timer.mark()
        images, labels = batches[chosen]
        if images.device != device:  # today's path: gathered on the host, pinned, copied
            images = (
                images.pin_memory().to(device, non_blocking=True)
                if device.type == "cuda"
                else images
            )
        timer.mark()
        with autocast:
            views = model.views((images, labels), index)
            timer.mark()
            loss = model.training_loss(views)
        timer.mark()
        loss.backward()
        timer.mark()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.mark()
        if rank == 0:  # Lightning's prog_bar .item() (twice) and the per-step finite check
            loss.item()
            loss.item()
            bool(torch.isfinite(loss))
        else:
            running = running + loss.detach()
            if (step + 1) % log_every == 0:
                running.item()
        timer.mark()
        spans = timer.spans()
        if step >= size["warmup"]:
            for part, span in zip(PARTS, spans, strict=True):
                parts[part].append(span)
            totals.append(sum(spans))
    return {
        "ms_per_step": round(statistics.median(totals), 3),
        "parts_ms": {part: round(statistics.median(values), 3) for part, values in parts.items()},
    }


def ladder(size: dict[str, Any], device: torch.device, variants: list[str]) -> dict[str, Any]:
    results = {variant: run_steps(variant, size, device) for variant in variants}
    today = results[variants[0]]["ms_per_step"]
    for result in results.values():
        result["speedup_vs_today"] = round(today / result["ms_per_step"], 3)
    return results


class SyncGuard(pl.Callback):
    """Sync debug mode "error" (CUDA) or counted host reads (CPU) in non-logging steps."""

    def __init__(self, every: int) -> None:
        self.every, self.counts, self.steps = every, Counter(), 0
        self._originals: dict[str, Any] = {}

    def _quiet(self, trainer: pl.Trainer, batch_idx: int) -> bool:
        """Not a logging step, nor an epoch's or the run's last (the loss is checked there)."""
        step = trainer.global_step + 1
        last = batch_idx + 1 >= trainer.num_training_batches
        return step % self.every != 0 and step < trainer.max_steps and not last

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._quiet(trainer, batch_idx) or trainer.global_step < 2:  # steps 0-1: compiling
            return
        self.steps += 1
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("error")
            return
        for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
            original = getattr(torch.Tensor, name)
            self._originals[name] = original

            def read(
                tensor: torch.Tensor,
                *args: Any,
                _name: str = name,
                _original: Any = original,
                **kwargs: Any,
            ) -> Any:
                self.counts[_name] += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, read)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self._originals.clear()


def syncfree(size: dict[str, Any], device: torch.device) -> dict[str, Any]:
    model, _, batches = build(size, device, "compiled" if device.type == "cuda" else "fused")
    model.syre.detach()  # Lightning calls configure_optimizers again
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    loader = DataLoader(
        batches,
        sampler=BatchSampler(
            RandomSampler(batches, generator=torch.Generator().manual_seed(0)), size["batch"], True
        ),
        batch_size=None,
    )
    every = 10
    guard = SyncGuard(every)
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(
            accelerator=device.type if device.type == "cuda" else "cpu",
            devices=1,
            max_steps=size["warmup"] + size["steps"],
            log_every_n_steps=every,
            precision="bf16-mixed" if device.type == "cuda" else "32-true",
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=pl.loggers.CSVLogger(folder),
            callbacks=[ReseedEachEpoch(0), guard],
        )
        try:
            trainer.fit(model, loader)
            error = None
        except RuntimeError as failure:  # what sync debug mode raises
            error = str(failure).splitlines()[0]
        finally:
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode("default")
    return {
        "quiet_steps_checked": guard.steps,
        "host_reads": dict(guard.counts),
        "sync_error": error,
        "ok": error is None and not guard.counts,
    }


def accuracy(smoke: bool, fashion_mnist: str | None, out_dir: Path) -> dict[str, Any]:
    from ssl_syre.training.pipeline import train

    common = [
        "data.name=fashion_mnist",
        "data.image_size=32",
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
        "eval.projector=false",
        "export=false",
        f"output_dir={out_dir}",
        "seed=0",
    ]
    if fashion_mnist:
        common.append(f"data.root={fashion_mnist}")
    if smoke:
        common += [
            "backbone.name=test_resnet",
            "data.batch_size=64",
            "data.train_subset=1000",
            "data.test_subset=300",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "eval.knn_k=[20]",
        ]
    else:
        common += [
            "backbone.name=resnet18",
            "backbone.small_image_stem=true",
            "backbone.channels_last=true",
            "data.batch_size=512",
            "trainer.max_epochs=4",
            "trainer.precision=bf16-mixed",
            "trainer.enable_progress_bar=false",
            "eval.batch_size=2048",
        ]
    fast = [
        "data.on_device=true",
        "optimizer.implementation=fused",
        "eval.autocast_bf16=true",
        "checkpoint_every_n_epochs=1000",
        f"backbone.compile={'false' if smoke else 'true'}",
    ]
    results: dict[str, Any] = {}
    for arm, extra in (("reference", ["eval.on_device=false"]), ("fast", fast)):
        started = time.time()
        run = train(
            load_config(ROOT / "configs/default.yaml", [*common, *extra, f"run_name={arm}"])
        )
        metrics = json.loads((run / "metrics.json").read_text())
        k = metrics["knn"][0]["k"]
        top1 = {r["features"]: r["top1"] for r in metrics["knn"] if r["k"] == k}
        results[arm] = {"k": k, "knn_top1": top1, "wall_s": round(time.time() - started, 1)}
    ours, ref = results["fast"]["knn_top1"], results["reference"]["knn_top1"]
    results["within_1_point"] = abs(ours["backbone"] - ref["backbone"]) <= 0.01
    results["above_raw_pixels"] = min(ours["backbone"], ref["backbone"]) > ref["raw_pixels"]
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command line: phases, data, ladder rungs and the result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes: checks the script")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--fashion-mnist", help="folder with Fashion-MNIST's four .gz files")
    common_args.add_threads(parser, help="torch.set_num_threads (CPU)")
    parser.add_argument(
        "--quick-start", action="store_true", help="the quick start's model and batch (CPU)"
    )
    parser.add_argument("--variants", default=",".join(LADDER), help="ladder rungs to run")
    common_args.add_out(parser, help=None)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    size = sizes(args.smoke, args.quick_start)
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        sys.exit(f"error: unknown phase {sorted(unknown)}; choose from {', '.join(PHASES)}")
    result: dict[str, Any] = {"device": str(device), "smoke": args.smoke, "sizes": size}
    with tempfile.TemporaryDirectory() as folder:
        failed = []
        for phase in phases:
            started = time.time()
            try:
                if phase == "ceilings":
                    result[phase] = ceilings(device, args.smoke)
                elif phase == "split":
                    result[phase] = run_steps("today", size, device)
                elif phase == "ladder":
                    result[phase] = ladder(size, device, args.variants.split(","))
                elif phase == "syncfree":
                    result[phase] = syncfree(size, device)
                else:
                    result[phase] = accuracy(args.smoke, args.fashion_mnist, Path(folder))
            except Exception as error:  # one phase's failure leaves the others
                result[phase] = {"error": f"{type(error).__name__}: {error}"[:500]}
                failed.append(phase)
            elapsed = time.time() - started
            print(
                f"== {phase} ({elapsed:.0f} s)\n{json.dumps(result[phase], indent=1)}", flush=True
            )
    if "ladder" in result and "error" not in result["ladder"]:
        print(
            f"{'variant':<12}{'ms/step':>10}{'x today':>9}  "
            + "  ".join(f"{p[:9]:>9}" for p in PARTS)
        )
        for variant, row in result["ladder"].items():
            cells = "  ".join(f"{row['parts_ms'][p]:>9.2f}" for p in PARTS)
            print(
                f"{variant:<12}{row['ms_per_step']:>10.2f}{row['speedup_vs_today']:>9.2f}  {cells}"
            )
    if args.out:
        write_result(result, args.out)
    if failed:
        sys.exit(f"error: phases failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
