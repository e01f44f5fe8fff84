"""Shared logic of eval/knn.py and eval/linear_probe.py: load PATH (`export.load_model`),
extract features once (`features.split_features`, as the end of training does), evaluate,
print a table and write the records as JSON.

PATH is a run directory (checkpoints/last.ckpt), a .ckpt file (its config is inside) or an
export directory (config.json + model.safetensors, backbone only). The data set and the
protocol come from the run's own config; `data.*`, `eval.*` and `seed` may be overridden
with dotted keys, the model may not (it is fixed by the weights).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from ssl_syre.atomic_write import write_text_atomically
from ssl_syre.backbones import check_input_size
from ssl_syre.data import DataInfo, build_eval_datasets, data_info
from ssl_syre.errors import UserError, suggest
from ssl_syre.evaluation.features import FEATURE_KINDS, Features, split_features
from ssl_syre.evaluation.report import (
    Records,
    format_results,
    knn_records,
    linear_probe_records,
)
from ssl_syre.export import PATH_KINDS, LoadedModel, load_model

# --------------------------------------------------------------------------------------------
# Features


def parse_kinds(text: str) -> list[str]:
    """'backbone,projector' -> ['backbone', 'projector'], checked against FEATURE_KINDS."""
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    if not kinds:
        raise UserError(f"--features is empty; choose from {', '.join(FEATURE_KINDS)}")
    for kind in kinds:
        if kind not in FEATURE_KINDS:
            raise UserError(
                f"unknown feature kind '{kind}'{suggest(kind, FEATURE_KINDS)}; "
                f"choose from {', '.join(FEATURE_KINDS)}"
            )
    return list(dict.fromkeys(kinds))


def extract(
    loaded: LoadedModel, kinds: list[str], device: str
) -> tuple[Features, Features, DataInfo]:
    """Features of the train and test splits for every kind in `kinds`, extracted once by
    `split_features`, the path the end of training takes, after the checks an evaluation
    of a stored model needs.

    Raises:
        UserError: projector features of an export, a channel mismatch, or data without
            labels or without a test split.
    """
    cfg = loaded.cfg
    if "projector" in kinds and loaded.projector is None:
        raise UserError(
            f"'{loaded.loaded}' is an export, which holds the backbone only; evaluate the run "
            "directory or its checkpoint for projector features"
        )
    info = data_info(cfg.data)
    if info.in_chans != loaded.in_chans:
        raise UserError(
            f"the backbone takes {loaded.in_chans}-channel images and data.name={info.name} has "
            f"{info.in_chans}; evaluate on a data set with {loaded.in_chans} channel(s)"
        )
    check_input_size(  # the weights fix the model here: the only fix is the image size
        loaded.backbone,
        cfg.backbone.name,
        info.image_size,
        fix="evaluate at the size the backbone was trained at (drop the data.image_size override)",
    )
    train_set, test_set = build_eval_datasets(cfg.data, cfg.seed)
    if test_set is None:
        raise UserError(
            f"data set '{info.name}' has no test split to evaluate on; set data.test_root=FOLDER"
        )
    if info.num_classes <= 0:
        raise UserError(
            f"data set '{info.name}' is unlabelled here (data.labelled=false): kNN and the "
            "linear probe need class labels; pass data.labelled=true with class sub-folders"
        )
    for dataset in (train_set, test_set):
        labels = getattr(dataset, "labels", None)
        if labels is not None and len(labels) and labels.min() < 0:
            raise UserError(f"data set '{info.name}' has unlabelled samples; kNN needs labels")
    if any(kind != "raw_pixels" for kind in kinds):
        loaded.modules.to(device)
    train, test = split_features(
        loaded.backbone, loaded.projector, cfg, kinds, device, datasets=(train_set, test_set)
    )
    assert test is not None  # checked above
    return train, test, info


# --------------------------------------------------------------------------------------------
# The command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if "required: path" in message:  # argparse also names the optional overrides there
            message = f"pass PATH: {PATH_KINDS}"
        raise UserError(f"{message}; see {self.prog} --help")


def parse_args(protocol: str, argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog=f"python eval/{protocol}.py",
        description=(
            f"{'Weighted kNN' if protocol == 'knn' else 'Linear probe'} on frozen features of "
            f"{PATH_KINDS}. Data set and protocol come from the run's config; override them "
            "with dotted keys, e.g. eval.knn_k=[10,200] eval.knn_t=0.07 data.test_subset=1000."
        ),
    )
    parser.add_argument("path", help="run directory, .ckpt file or export directory")
    parser.add_argument("overrides", nargs="*", help="data.*, eval.* or seed as dotted.key=value")
    parser.add_argument(
        "--features",
        default="backbone",
        help=f"comma-separated feature kinds from {', '.join(FEATURE_KINDS)} (default: backbone)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"JSON file or folder (default: RUN_DIR/eval_{protocol}.json, or "
        f"eval_{protocol}_<overrides>.json with overrides; a taken name gets -1, -2, ...)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing JSON file instead of keeping it"
    )
    parser.add_argument(
        "--device", default=None, help="cuda or cpu (default: cuda when available, else cpu)"
    )
    return parser.parse_intermixed_args(argv)


def evaluate(protocol: str, argv: list[str]) -> dict[str, Any]:
    """Run `protocol` ("knn" or "linear_probe") as the command line asks; return the JSON."""
    args = parse_args(protocol, argv)
    kinds = parse_kinds(args.features)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but torch sees no GPU; pass --device cpu")
    try:
        torch.empty(0, device=device)  # a misspelt name, a missing backend or GPU index
    except (RuntimeError, AssertionError) as error:
        raise UserError(
            f"--device {device} is not usable here ({str(error).splitlines()[0][:120]}); "
            "pass --device cpu or cuda"
        ) from None
    loaded = load_model(args.path, args.overrides)
    cfg = loaded.cfg
    if protocol == "linear_probe" and cfg.eval.linear_epochs < 1:
        raise UserError(
            f"config key 'eval.linear_epochs' must be >= 1 for the linear probe, got "
            f"{cfg.eval.linear_epochs}"
        )
    out, kept = output_path(args, protocol, loaded.out_dir)
    check_writable(out)  # before the features are extracted: fail fast, lose no work
    train, test, info = extract(loaded, kinds, device)
    if protocol == "knn":
        records: Records = knn_records(train, test, info.num_classes, cfg.eval, kinds, device)
    else:
        learned = [kind for kind in kinds if kind != "raw_pixels"]
        if not learned:
            raise UserError("the linear probe is for learned features; pass --features backbone")
        records = linear_probe_records(train, test, info.num_classes, cfg.eval, learned, device)
    payload = {
        "evaluated": {
            "path": str(args.path),
            "source": loaded.source,
            "loaded": str(loaded.loaded),
            **loaded.details,
            "method": cfg.method,
            "backbone": cfg.backbone.name,
            "data": cfg.data.name,
            "train_size": len(train.labels),
            "test_size": len(test.labels),
            "seed": cfg.seed,
            "overrides": list(args.overrides),
            "device": device,
        },
        protocol: records,
    }
    print(format_results({protocol: records}))
    try:
        write_text_atomically(out, json.dumps(payload, indent=2))
    except OSError as error:  # the results are printed above
        raise UserError(
            f"cannot write '{out}' ({error.strerror or error}); the results are printed above; "
            "pass --out FILE in a writable folder"
        ) from None
    print(f"wrote {out}" + (f" ({kept} holds an earlier evaluation and is kept)" if kept else ""))
    return payload


def result_name(protocol: str, overrides: list[str]) -> str:
    """eval_knn.json, or eval_knn_<overrides>.json: another protocol gets another file."""
    if not overrides:
        return f"eval_{protocol}.json"
    slug = re.sub(r"[^A-Za-z0-9._=,+-]", "", "_".join(overrides))[:120]
    return f"eval_{protocol}_{slug}.json"


def output_path(args: argparse.Namespace, protocol: str, out_dir: Path) -> tuple[Path, Path | None]:
    """Where the JSON goes, and the earlier file of that name that is kept (or None).

    A name we choose (no --out, or --out FOLDER) that is taken gets -1, -2, ... so that no
    earlier evaluation is lost (the weights may have trained on since); a file named with
    --out FILE is replaced only with --force.

    Raises:
        UserError: --out FILE exists and --force is not given.
    """
    explicit = Path(args.out) if args.out else None
    if explicit is not None and not explicit.is_dir():
        if explicit.exists() and not args.force:
            raise UserError(
                f"'{explicit}' exists (an earlier evaluation); pass --force to replace it, or "
                "another --out FILE"
            )
        return explicit, None
    out = (explicit or out_dir) / result_name(protocol, list(args.overrides))
    if args.force or not out.exists():
        return out, None
    number = 1
    while (numbered := out.with_name(f"{out.stem}-{number}{out.suffix}")).exists():
        number += 1
    return numbered, out


def check_writable(out: Path, flag: str = "--out FILE") -> None:
    """Create the folder of `out` and check that it takes the file, leaving nothing behind.

    Raises:
        UserError: naming the path and the fix (`flag`: the option that names the file).
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            with out.open("a"):
                pass
        else:
            with tempfile.TemporaryFile(dir=out.parent):
                pass
    except OSError as error:
        raise UserError(
            f"cannot write '{out}' ({error.strerror or error}); pass {flag} in a writable folder"
        ) from None


def main_knn(argv: list[str]) -> dict[str, Any]:
    return evaluate("knn", argv)


def main_linear_probe(argv: list[str]) -> dict[str, Any]:
    return evaluate("linear_probe", argv)
