"""Weight diagnostics of a trained model: python -m ssl_syre.diagnose PATH [--json FILE].

PATH is a run directory (checkpoints/last.ckpt), a .ckpt file or an export directory, as for
eval/knn.py. For every conv and linear layer it reports dead units (weights about 0, and units
never positive after their nonlinearity on real test images), duplicated units (parallel
incoming weights), the effective rank and the share of small singular values, and the
distance to the SyRe anchor when the checkpoint has one; for the features, RankMe and
low-rankness per backbone stage; for a prototype method's checkpoint (DINO), the number of
distinct prototypes at a few cosine thresholds (partial prototype collapse). It prints a
table, writes symmetry.png (per-layer bars) and, with --json, the numbers. Definitions:
docs/diagnostics.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssl_syre.atomic_write import write_file_atomically, write_text_atomically
from ssl_syre.data import build_eval_datasets, data_info
from ssl_syre.errors import UserError, run_cli
from ssl_syre.evaluation.cli import check_writable
from ssl_syre.evaluation.prototypes import THRESHOLDS, format_prototypes, prototype_summary
from ssl_syre.evaluation.symmetry import (
    BN_STATISTICS,
    DEAD_TOLERANCE,
    DUPLICATE_TOLERANCE,
    SymmetryReport,
    diagnose_model,
)
from ssl_syre.evaluation.symmetry_report import PICTURE, first_images, format_report, plot_report
from ssl_syre.export import PATH_KINDS, LoadedModel, load_model


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if "required: path" in message:
            message = f"pass PATH: {PATH_KINDS}"
        raise UserError(f"{message}; see {self.prog} --help")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m ssl_syre.diagnose",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("path", help="run directory, .ckpt file or export directory")
    parser.add_argument("overrides", nargs="*", help="data.* or seed as dotted.key=value")
    parser.add_argument("--json", default=None, help="write the report as JSON to this file")
    parser.add_argument(
        "--png", default=None, help=f"picture path (default: RUN_DIR/{PICTURE}; 'none' for none)"
    )
    parser.add_argument(
        "--samples", type=int, default=512, help="test images for activations and features"
    )
    parser.add_argument("--dead-tolerance", type=float, default=DEAD_TOLERANCE)
    parser.add_argument("--duplicate-tolerance", type=float, default=DUPLICATE_TOLERANCE)
    parser.add_argument(
        "--prototype-thresholds",
        type=float,
        nargs="+",
        default=list(THRESHOLDS),
        help="cosine thresholds of the distinct-prototype count (prototype methods)",
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument(
        "--bn-statistics",
        choices=BN_STATISTICS,
        default="batch",
        help="BatchNorm statistics of the activation and feature measures: batch (as in "
        "training, the default) or running (as the kNN and the end-of-run collapse table)",
    )
    return parser.parse_intermixed_args(argv)


def usable_device(device: str | None) -> str:
    """The device to run on, or a one-line error for one that is not usable here."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise UserError(
            f"--device {device} is not usable here ({str(error).splitlines()[0][:120]}); "
            "pass --device cpu or cuda"
        ) from None
    return device


def input_batch(loaded: LoadedModel, samples: int) -> Tensor | None:
    """The first `samples` images of the run's test split (its train split if it has none)."""
    if samples <= 0:
        return None
    info = data_info(loaded.cfg.data)
    if info.in_chans != loaded.in_chans:
        raise UserError(
            f"the backbone takes {loaded.in_chans}-channel images and data.name={info.name} has "
            f"{info.in_chans}; pass a data set with {loaded.in_chans} channel(s), or --samples 0"
        )
    train_set, test_set = build_eval_datasets(loaded.cfg.data, loaded.cfg.seed)
    return first_images(test_set if test_set is not None else train_set, samples)


def checkpoint_anchors(loaded: LoadedModel) -> dict[str, Tensor] | None:
    """SyRe's anchors as the checkpoint stores them (SyRe.load_state_dict), or None.

    None for an export (it holds no anchors) and for a run that decayed toward 0.
    """
    if loaded.source != "checkpoint":
        return None
    from ssl_syre.training.checkpoint import load_checkpoint

    state = load_checkpoint(loaded.loaded)
    syre = getattr(loaded.modules, "syre", None)
    if syre is None or "syre" not in state:
        return None
    syre.load_state_dict(state["syre"])
    try:  # regenerated anchors: drawn on the modules' device, as in training?
        syre.verify_anchors()
    except ValueError as error:
        print(f"warning: distances to the anchors left out: {error}", file=sys.stderr)
        return None
    return None if syre.zero_anchors else syre.anchors


def diagnose(argv: list[str]) -> dict[str, Any]:
    """Run the diagnostics as the command line asks; return the JSON payload."""
    args = parse_args(argv)
    if args.samples < 0:
        raise UserError(f"--samples must be >= 0, got {args.samples}")
    if not all(-1.0 <= t <= 1.0 for t in args.prototype_thresholds):
        raise UserError(
            f"--prototype-thresholds are cosines, each in [-1, 1]; got {args.prototype_thresholds}"
        )
    device = usable_device(args.device)
    json_out = Path(args.json) if args.json else None
    if json_out is not None:
        check_writable(json_out, "--json FILE")  # before the work: fail fast
    loaded = load_model(args.path, args.overrides)
    png = None if args.png == "none" else Path(args.png or loaded.out_dir / PICTURE)
    if png is not None:
        check_writable(png, "--png FILE (or --png none)")
    batch = input_batch(loaded, args.samples)
    model = loaded.modules if loaded.source == "checkpoint" else loaded.backbone
    model.to(device)  # before the anchors: regenerated ones are drawn where the weights are
    anchors = checkpoint_anchors(loaded)
    report: SymmetryReport = diagnose_model(
        model,
        batch,
        anchors=anchors,
        dead_tolerance=args.dead_tolerance,
        duplicate_tolerance=args.duplicate_tolerance,
        bn_statistics=args.bn_statistics,
    )
    # Partial prototype collapse: only a checkpoint holds the method's prototype layers.
    prototype_weights = getattr(model, "prototype_weights", dict)()
    prototypes = prototype_summary(prototype_weights, args.prototype_thresholds)
    payload = {
        "evaluated": {
            "path": str(args.path),
            "source": loaded.source,
            "loaded": str(loaded.loaded),
            **loaded.details,
            "method": loaded.cfg.method,
            "backbone": loaded.cfg.backbone.name,
            "data": loaded.cfg.data.name,
            "anchors": anchors is not None,
        },
        **report.to_json(),
        "prototypes": prototypes,
    }
    print(format_report(report))
    if prototypes:
        print()
        print(format_prototypes(prototypes))
    if png is not None:
        title = f"{loaded.cfg.method}, {loaded.cfg.backbone.name}: {args.path}"
        write_file_atomically(png, lambda path: plot_report(report, path, title=title))
        print(f"wrote {png}")
    if json_out is not None:
        try:
            write_text_atomically(json_out, json.dumps(payload, indent=2))
        except OSError as error:
            raise UserError(
                f"cannot write '{json_out}' ({error.strerror or error}); the table is printed "
                "above; pass --json FILE in a writable folder"
            ) from None
        print(f"wrote {json_out}")
    return payload


def main(argv: list[str]) -> dict[str, Any]:
    return diagnose(argv)


if __name__ == "__main__":
    run_cli(main)
