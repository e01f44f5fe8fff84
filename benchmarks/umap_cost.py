"""Cost of the end-of-training UMAP picture (eval.umap): wall time of write_umap, cold and warm.

numba compiles umap-learn's and pynndescent's kernels the first time they run in a fresh
numba cache (a fresh machine or virtual environment) and loads them from the cache after that,
so each measurement runs in its own process with a given NUMBA_CACHE_DIR: a new empty one
(cold, once, at the first --points) and then the same one again (warm, every --points). The features are those of the quick start's test
split (10,000 Fashion-MNIST images through timm's test_resnet, 96 dimensions); pass --export
to use a trained backbone, else a randomly initialized one (UMAP's cost depends on N and D).

    python benchmarks/umap_cost.py --points 2000 5000 10000 --out benchmarks/results/umap_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common_args  # benchmarks/common_args.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def features(export: str | None):
    import timm

    from ssl_syre.config import load_config
    from ssl_syre.data import build_eval_datasets
    from ssl_syre.evaluation.features import eval_loader, extract_features
    from ssl_syre.export import load_backbone

    cfg = load_config(ROOT / "configs" / "default.yaml", ["data.test_subset=null"])
    _, test = build_eval_datasets(cfg.data, cfg.seed)
    backbone = (
        load_backbone(export)
        if export
        else timm.create_model("test_resnet", num_classes=0, in_chans=1)
    )
    return extract_features(backbone, eval_loader(test, 512))


def measure(points: int, arrays: Path, out_png: Path) -> dict:
    """One write_umap call: wall seconds and CPU seconds (all threads of this process)."""
    import numpy as np
    import torch

    from ssl_syre.evaluation.umap_plot import write_umap

    data = np.load(arrays)
    torch.set_num_threads(1)
    started, cpu = time.perf_counter(), time.process_time()
    write_umap(
        torch.from_numpy(data["features"]), torch.from_numpy(data["labels"]), out_png, 0, points
    )
    return {
        "points": points,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line: point counts, the backbone export and where records go."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--export", default=None, help="an export directory (trained backbone)")
    common_args.add_out(parser, help="write the records as JSON here", type=None)
    parser.add_argument("--png", default=None, help="where the one measurement writes umap.png")
    parser.add_argument("--cache", default=None, help="reuse this numba cache (warm runs only)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--arrays", default=None, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.one is not None:  # the child process: one measurement, printed as JSON
        png = Path(args.png or tempfile.mkdtemp()) / "umap.png"
        print(json.dumps(measure(args.one, Path(args.arrays), png)))
        return
    import numpy as np

    test = features(args.export)  # once: every child reads the same features
    arrays = Path(tempfile.mkdtemp(prefix="umap-cost-")) / "features.npz"
    np.savez(arrays, features=test.by_kind["backbone"].numpy(), labels=test.labels.numpy())
    records = []
    cache = args.cache or tempfile.mkdtemp(prefix="numba-cache-")
    # Cold once (the first --points, compiling into the empty cache), then warm for each.
    runs = [] if args.cache else [(args.points[0], "cold")]
    for points, state in [*runs, *((points, "warm") for points in args.points)]:
        command = [sys.executable, __file__, "--one", str(points), "--arrays", str(arrays)]
        if args.png:
            command += ["--png", args.png]
        started = time.perf_counter()
        done = subprocess.run(
            command,
            env={**os.environ, "NUMBA_CACHE_DIR": cache},
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        record = json.loads(done.stdout.strip().splitlines()[-1])
        record.update(
            cache=state,
            process_seconds=round(time.perf_counter() - started, 1),
            load=os.getloadavg(),
        )
        print(json.dumps(record), flush=True)
        records.append(record)
    if args.out:
        Path(args.out).write_text(
            json.dumps({"load": os.getloadavg(), "records": records}, indent=2)
        )


if __name__ == "__main__":
    main()
