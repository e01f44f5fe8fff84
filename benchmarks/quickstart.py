"""The quick start as a user runs it, timed: `python train.py [CONFIG]` in a fresh process, its
printed kNN table (learned backbone beside raw pixels on the same bank and protocol), the wall
time and the machine's load while it ran.

Each run is a cell (finished ones are read back on a rerun, --force runs them again); the
records go to OUTPUT_DIR/quickstart.json. With --readme the README's quick-start block is
rewritten from them: the printed table of the first config's first seed, its wall time and
load, each config's margin over raw pixels at every printed k and, with several seeds, the
spread. Nothing in the checkout changes unless --readme or --results is given.

Run:
  python benchmarks/quickstart.py                                   # configs/default.yaml, seed 0
  python benchmarks/quickstart.py --seeds 0 1 2                     # the spread over seeds
  python benchmarks/quickstart.py --config configs/simclr_fashion_mnist_30min.yaml
  python benchmarks/quickstart.py --config configs/default.yaml configs/simclr_fashion_mnist_30min.yaml \
      --seeds 0 1 2 --first-seed-only configs/simclr_fashion_mnist_30min.yaml --readme --results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import common_args  # benchmarks/common_args.py, beside this script
from cells import clear_unfinished
from results_table import study_page, write_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEFAULT_CONFIG = "configs/default.yaml"
TABLE_START = "kNN (cosine"  # the first line of the printed evaluation table
HEADLINE = "kNN top-1 (test split"  # its last line
MIN_MARGIN = 2.0  # points over raw pixels at every printed k (the quick start's goal)


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_name(config: str, seed: int) -> str:
    return f"quickstart_{Path(config).stem}_seed{seed}"


class LoadSampler:
    """The 1-minute load average every few seconds while a run goes on (its maximum matters:
    a busy machine stretches the wall time, never the accuracy)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every_s,), daemon=True)

    def _sample(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def printed_table(stdout: str) -> list[str]:
    """The evaluation table train.py prints, from its header to the one-line headline."""
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(TABLE_START)]
    ends = [i for i, line in enumerate(lines) if line.startswith(HEADLINE)]
    if not starts or not ends or ends[-1] < starts[-1]:
        raise ValueError("train.py printed no evaluation table (did the run fail?)")
    return lines[starts[-1] : ends[-1] + 1]


def knn_rows(metrics: dict[str, Any]) -> dict[str, dict[int, float]]:
    """Top-1 kNN accuracy (%) by feature kind and k, from a run's metrics.json."""
    rows: dict[str, dict[int, float]] = {}
    for row in metrics["knn"]:
        rows.setdefault(row["features"], {})[int(row["k"])] = 100 * row["top1"]
    return rows


def margins(record: dict[str, Any]) -> dict[int, float]:
    """Learned backbone minus raw pixels, in points, at every printed k."""
    knn = record["knn"]
    return {k: knn["backbone"][k] - knn["raw_pixels"][k] for k in sorted(knn["raw_pixels"])}


def run_cell(config: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run (or read back) `python train.py CONFIG seed=SEED` and its timing."""
    name = run_name(config, seed)
    run_dir = Path(args.output_dir) / name
    record_file = run_dir / "quickstart_record.json"
    if record_file.is_file() and not args.force:
        print(f"done already: {name} (--force reruns it)")
        return read_record(record_file)
    clear_unfinished(run_dir)  # an unfinished cell trains again; a running one stops us
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *([] if config == DEFAULT_CONFIG else [str(ROOT / config)]),
        f"seed={seed}",
        f"output_dir={args.output_dir}",
        f"run_name={name}",
        *args.set,
    ]
    print("$ " + " ".join(command), flush=True)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with LoadSampler() as load:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"error: {name} failed (exit {done.returncode}); its output is above")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = {
        "config": config,
        "seed": seed,
        "overrides": list(args.set),
        "threads": args.threads or "torch default",
        "wall_s": round(wall, 1),
        "user_cpu_s": round(after.ru_utime - before.ru_utime, 1),
        "load_before": round(load.samples[0], 2),
        "load_max": round(max(load.samples), 2),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "table": printed_table(done.stdout),
        "knn": knn_rows(metrics),
        "build": metrics.get("run", {}).get("build"),
    }
    record_file.write_text(json.dumps(record, indent=1))
    return record


def read_record(path: Path) -> dict[str, Any]:
    """A saved record, with its k keys back as integers (JSON keeps them as strings)."""
    record = json.loads(path.read_text())
    record["knn"] = {
        kind: {int(k): v for k, v in by_k.items()} for kind, by_k in record["knn"].items()
    }
    return record


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def seed_margins(records: list[dict[str, Any]], k: int) -> str:
    """Margin over raw pixels at k, each seed against its own bank: mean ± std and the lowest."""
    values = [margins(r)[k] for r in records]
    if len(values) < 2:
        return f"{values[0]:+.2f}"
    return (
        f"{statistics.mean(values):+.2f} ± {statistics.stdev(values):.2f}, min {min(values):+.2f}"
    )


def summary_rows(by_config: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One markdown row per config and k: seed 0 beside raw pixels, the margin over seeds, and
    the timed run's wall time and load."""
    rows = [
        "| config | k | learned backbone | raw pixels | margin | margin, all seeds | wall | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config, records in by_config.items():
        first = records[0]
        for k, margin in margins(first).items():
            rows.append(
                f"| `{config}` | {k} | {first['knn']['backbone'][k]:.2f}% "
                f"| {first['knn']['raw_pixels'][k]:.2f}% | {margin:+.2f} "
                f"| {seed_margins(records, k)} (n={len(records)}) | {minutes(first['wall_s'])} "
                f"| {first['load_before']:.1f}, max {first['load_max']:.1f} |"
            )
    return rows


def knn_lines(table: list[str]) -> list[str]:
    """The kNN rows of a printed table and its headline (the probe and collapse rows left out)."""
    end = next(
        (i for i, line in enumerate(table) if not line.startswith(("kNN", "  "))), len(table)
    )
    return table[:end] + ([table[-1]] if end < len(table) else [])


def readme_block(by_config: dict[str, list[dict[str, Any]]]) -> str:
    """The README's quick-start block: the first run's printed kNN table, every config's
    margins, and the command that wrote it."""
    first = next(iter(by_config.values()))[0]
    first_records = next(iter(by_config.values()))
    seeds = " ".join(str(r["seed"]) for r in first_records)
    single = [c for c, rs in by_config.items() if len(rs) == 1 and len(first_records) > 1]
    only = f" --first-seed-only {' '.join(single)}" if single else ""
    lines = ["```", *knn_lines(first["table"]), "```", *summary_rows(by_config)]
    lines.append(
        f"(`python benchmarks/quickstart.py --config {' '.join(by_config)} --seeds {seeds}{only} "
        f"--readme` wrote this: seed {first['seed']} of each config timed in a fresh process on "
        f"{first['cpus']} cores ({first.get('cpu', 'CPU not recorded')}); load: the 1-minute "
        "average before, the maximum during; margins against raw pixels on each seed's bank.)"
    )
    return "\n".join(lines)


def seeds_of(config: str, args: argparse.Namespace) -> list[int]:
    """The seeds a config runs: all of --seeds, or the first for a --first-seed-only config."""
    unknown = set(args.first_seed_only) - set(args.config)
    if unknown:
        raise SystemExit(f"error: --first-seed-only {' '.join(sorted(unknown))} is not in --config")
    return args.seeds[:1] if config in args.first_seed_only else list(args.seeds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        nargs="+",
        default=[DEFAULT_CONFIG],
        help="configs to time, relative to the checkout",
    )
    common_args.add_seeds(parser, [0])
    parser.add_argument(
        "--set", nargs="*", default=[], help="extra train.py overrides for every run"
    )
    parser.add_argument(
        "--output-dir",
        default=str(ROOT / "runs" / "quickstart"),
        help="where the runs and their records go",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for train.py (default: torch's own)",
    )
    parser.add_argument(
        "--first-seed-only",
        nargs="*",
        default=[],
        metavar="CONFIG",
        help="configs (of --config) that run the first of --seeds only: the long ones",
    )
    parser.add_argument("--force", action="store_true", help="rerun finished cells")
    parser.add_argument(
        "--readme", action="store_true", help="rewrite the README's quick-start block"
    )
    parser.add_argument(
        "--results", action="store_true", help="rewrite the table on the quick-start study page"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    by_config = {c: [run_cell(c, s, args) for s in seeds_of(c, args)] for c in args.config}
    table = "\n".join(summary_rows(by_config))
    print(table)
    (Path(args.output_dir) / "quickstart.json").write_text(json.dumps(by_config, indent=1))
    short = [
        f"{c}: k={k} {m:+.2f}"
        for c, rs in by_config.items()
        for k, m in margins(rs[0]).items()
        if m < MIN_MARGIN
    ]
    if short:
        print("below the quick start's goal of +2 points over raw pixels: " + "; ".join(short))
    if args.readme:
        write_block("quickstart", readme_block(by_config), README)
    if args.results:
        write_block("quickstart_table", table, study_page("quickstart_table", "quickstart"))


if __name__ == "__main__":
    main()
