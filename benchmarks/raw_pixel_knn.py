"""Raw-pixel kNN baseline on a data set's full train/test split: the number SSL must beat.

python benchmarks/raw_pixel_knn.py [data.name=fashion_mnist] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys

import common_args  # benchmarks/common_args.py, beside this script

from ssl_syre.config import load_config
from ssl_syre.data import build_eval_datasets, data_info
from ssl_syre.errors import run_cli
from ssl_syre.evaluation.features import eval_loader, raw_pixels
from ssl_syre.evaluation.knn import knn_classify

PROTOCOLS = [(200, 0.1), (20, 0.1), (10, 0.07)]


def build_parser() -> argparse.ArgumentParser:
    """The command line: config overrides and the result file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("overrides", nargs="*", help="dotted config keys, e.g. data.name=digits")
    common_args.add_out(parser, help=None, type=None)
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    cfg = load_config(None, args.overrides)
    train, test = build_eval_datasets(cfg.data, cfg.seed, normalize=False)
    bank, queries = raw_pixels(eval_loader(train, 1024)), raw_pixels(eval_loader(test, 1024))
    classes = data_info(cfg.data).num_classes
    records = []
    for k, t in PROTOCOLS:
        record = knn_classify(
            bank.by_kind["raw_pixels"],
            bank.labels,
            queries.by_kind["raw_pixels"],
            queries.labels,
            num_classes=classes,
            ks=(k,),
            temperature=t,
        )[0]
        records.append(
            {
                "features": "raw_pixels",
                "data": cfg.data.name,
                "bank": len(train),
                "split": "test",
                **record,
            }
        )
        print(
            f"{cfg.data.name} raw pixels, bank {len(train)}: k={k} t={t} top1 {100 * record['top1']:.2f}%"
        )
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"knn": records}, file, indent=2)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
