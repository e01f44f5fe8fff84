"""Compare our faiss kNN with lightly's knn_predict and scikit-learn: time, peak memory, agreement.

All three run the same rule (cosine similarity, k neighbours, votes weighted by exp(s/t)):

- ours: ``ssl_syre.evaluation.knn_predictions``, exact faiss IndexFlatIP search in batches of
  ``--batch-size`` test queries.
- lightly: ``lightly.utils.benchmarking.knn_predict`` called on chunks of ``--lightly-batch``
  test queries (as lightly's own KNNClassifier calls it once per validation batch); each
  call builds the full (chunk x n_train) similarity matrix. ``--lightly-batch 0`` passes all
  test queries in one call.
- sklearn: ``KNeighborsClassifier(metric="cosine", algorithm="brute")`` with
  ``weights=exp((1 - cosine distance) / t)``, which is the same vote.

Each method runs in a fresh process (multiprocessing "spawn") that imports every library and
loads the data before the clock starts; peak memory is the rise of the process's peak RSS
(VmHWM, reset through /proc/self/clear_refs where the kernel allows) over its RSS at that
point, so it sees torch, faiss and BLAS allocations that tracemalloc cannot.

The data are random class clusters (class means plus isotropic noise), so that accuracy means
something. Usage::

    python benchmarks/knn_benchmark.py                       # 60k x 512 train, 10k test
    python benchmarks/knn_benchmark.py --n-train 6000 --n-test 1000 --dim 128   # quick
    python benchmarks/knn_benchmark.py --out benchmarks/knn_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import common_args  # benchmarks/common_args.py, beside this script
import numpy as np

# Runs from a checkout without `pip install -e .`; spawned workers inherit this sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("ours", "lightly", "sklearn")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"error: unknown methods {unknown}; choose from {list(METHODS)}")
    if "ours" not in methods:
        methods.insert(0, "ours")  # every ratio and agreement is relative to ours

    with tempfile.TemporaryDirectory(prefix="knn_benchmark_") as data_dir:
        _write_data(Path(data_dir), args)
        runs: dict[str, dict[str, Any]] = {}
        for method in methods:
            print(f"running {method} ...", file=sys.stderr, flush=True)
            # A fresh process per method: peak memory and warm caches do not leak between them.
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                runs[method] = pool.submit(_run_method, method, data_dir, vars(args)).result()
        test_labels = np.load(Path(data_dir) / "test_y.npy")

    ours = runs["ours"]
    rows = []
    for method, run in runs.items():
        row = {
            "method": method,
            "seconds": run["seconds"],
            "time_vs_ours": run["seconds"] / ours["seconds"],
            "peak_mib": run["peak_mib"],
            "memory_vs_ours": run["peak_mib"] / max(ours["peak_mib"], 1e-9),
            "top1": float((run["top1_predictions"] == test_labels).mean()),
            "top1_agreement_with_ours": float(
                (run["top1_predictions"] == ours["top1_predictions"]).mean()
            ),
            "neighbour_overlap_with_ours": _overlap(run.get("neighbours"), ours["neighbours"]),
            "note": run["note"],
        }
        rows.append(row)
    result = {"settings": _settings(args), "results": rows}
    _print_table(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return result


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    """The command line: the synthetic data, kNN settings, batches and methods to time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=60_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--t", type=float, default=0.1, help="kNN temperature")
    parser.add_argument(
        "--separation",
        type=float,
        default=0.12,
        help="norm of the class means relative to the noise, per dimension",
    )
    common_args.add_loader(parser, batch_size=4096, batch_help="our test-query batch")
    parser.add_argument(
        "--lightly-batch",
        type=int,
        default=4096,
        help="test queries per knn_predict call; 0 = all in one call",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    common_args.add_out(parser, type=None)
    return parser


def _write_data(data_dir: Path, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    means = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    for split, size in (("train", args.n_train), ("test", args.n_test)):
        labels = rng.integers(0, args.classes, size)
        features = rng.standard_normal((size, args.dim), dtype=np.float32)
        features += args.separation * means[labels]
        np.save(data_dir / f"{split}_x.npy", features)
        np.save(data_dir / f"{split}_y.npy", labels)


def _run_method(method: str, data_dir: str, args: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: import everything, load, reset the peak, time one method."""
    import faiss  # noqa: F401  (imported by every method, so that baselines are equal)
    import torch
    import torch.nn.functional as F
    from lightly.utils.benchmarking import knn_predict
    from sklearn.neighbors import KNeighborsClassifier

    from ssl_syre.evaluation.knn import knn_predictions, knn_search

    data = Path(data_dir)
    train_x, train_y = np.load(data / "train_x.npy"), np.load(data / "train_y.npy")
    test_x = np.load(data / "test_x.npy")
    k, t, classes = args["k"], args["t"], args["classes"]
    neighbours = None

    peak_was_reset = _reset_peak_rss()
    rss_before = _proc_status_kib("VmRSS")
    start = time.perf_counter()
    if method == "ours":
        predictions = knn_predictions(
            train_x, train_y, test_x, classes, ks=(k,), temperature=t,
            batch_size=args["batch_size"], device="cpu",
        )[k][:, 0].numpy()  # fmt: skip
        note = f"faiss IndexFlatIP, {args['batch_size']} queries per search"
    elif method == "lightly":
        bank = F.normalize(torch.from_numpy(train_x), dim=1).T
        labels = torch.from_numpy(train_y)
        queries = F.normalize(torch.from_numpy(test_x), dim=1)
        chunk = args["lightly_batch"] or len(queries)
        predictions = torch.cat(
            [
                knn_predict(part, bank, labels, classes, knn_k=k, knn_t=t)[:, 0]
                for part in queries.split(chunk)
            ]
        ).numpy()
        note = f"knn_predict on chunks of {chunk} queries (full chunk x train similarity)"
    elif method == "sklearn":
        classifier = KNeighborsClassifier(
            n_neighbors=k,
            metric="cosine",
            algorithm="brute",
            weights=lambda distances: np.exp((1.0 - distances) / t),
        )
        classifier.fit(train_x, train_y)
        predictions = classifier.predict(test_x)
        note = "KNeighborsClassifier cosine brute, weights exp((1-d)/t)"
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - start
    peak_mib = (_proc_status_kib("VmHWM") - rss_before) / 1024
    if not peak_was_reset:
        note += "; peak not resettable, includes imports and loading"

    # Neighbour sets, outside the clock and the memory measurement.
    if method == "ours":
        neighbours = knn_search(train_x, test_x, k, args["batch_size"], device="cpu")[1].numpy()
    elif method == "sklearn":
        neighbours = classifier.kneighbors(test_x, return_distance=False)
    return {
        "seconds": seconds,
        "peak_mib": max(peak_mib, 0.0),
        "top1_predictions": np.asarray(predictions, dtype=np.int64),
        "neighbours": neighbours,
        "note": note,
    }


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _proc_status_kib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def _overlap(neighbours: np.ndarray | None, reference: np.ndarray) -> float | None:
    """Mean share of each test sample's reference neighbours that ``neighbours`` also found."""
    if neighbours is None:
        return None
    shared = [len(np.intersect1d(a, b)) for a, b in zip(neighbours, reference, strict=True)]
    return float(np.mean(shared) / reference.shape[1])


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import lightly
    import sklearn
    import torch

    return {
        **{key: value for key, value in vars(args).items() if key != "out"},
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "faiss_gpu": hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0,
        "lightly": lightly.__version__,
        "sklearn": sklearn.__version__,
    }


def _print_table(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(
        f"kNN k={s['k']} t={s['t']}: {s['n_train']} train x {s['n_test']} test, dim {s['dim']}, "
        f"{s['classes']} classes, {s['cpu_count']} CPUs"
    )
    header = f"{'method':<9}{'time s':>9}{'x ours':>8}{'peak MiB':>10}{'x ours':>8}"
    header += f"{'top1':>8}{'agree':>8}{'nbr overlap':>13}"
    print(header)
    for r in result["results"]:
        overlap = (
            "-"
            if r["neighbour_overlap_with_ours"] is None
            else f"{r['neighbour_overlap_with_ours']:.4f}"
        )
        print(
            f"{r['method']:<9}{r['seconds']:>9.2f}{r['time_vs_ours']:>8.2f}{r['peak_mib']:>10.0f}"
            f"{r['memory_vs_ours']:>8.2f}{r['top1']:>8.4f}{r['top1_agreement_with_ours']:>8.4f}"
            f"{overlap:>13}"
        )
    for r in result["results"]:
        print(f"  {r['method']}: {r['note']}")


if __name__ == "__main__":
    main()
