"""`python -m ssl_syre.export`: export a checkpoint or run in timm's format, push it to the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

import ssl_syre.export
from ssl_syre.errors import run_cli
from ssl_syre.export import export_checkpoint, read_export_config
from ssl_syre.export.hub import export_and_push
from ssl_syre.export.load import exported_stem
from ssl_syre.training.run_dir import last_checkpoint


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_syre.export",
        description=ssl_syre.export.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="an ssl_syre .ckpt file, or a run directory")
    parser.add_argument("--out", default=None, help="export directory (default: RUN_DIR/export)")
    parser.add_argument(
        "--push-to-hub", metavar="USER/NAME", help="also push it to the Hugging Face Hub (timm)"
    )
    parser.add_argument("--private", action="store_true", help="a private Hub repository")
    args = parser.parse_args(argv)
    if args.push_to_hub:  # an existing export is pushed as it is: see ssl_syre.export.hub
        export_and_push(Path(args.checkpoint), args.out, args.push_to_hub, args.private)
        return
    checkpoint = Path(args.checkpoint)
    if checkpoint.is_dir():  # a run directory: its last checkpoint
        checkpoint = last_checkpoint(checkpoint)
    out = export_checkpoint(checkpoint, args.out)
    config = read_export_config(out)
    if exported_stem(config):
        how = f"ssl_syre.export.load_backbone('{out}') (timm alone cannot build its stem)"
    else:
        how = f"timm.create_model('local-dir:{out}', pretrained=True)"
    print(f"exported backbone to {out}; load it with {how}")


if __name__ == "__main__":
    run_cli(main)
