"""Pre-train an encoder: python train.py [CONFIG.yaml] [dotted.key=value ...] [--debug]."""

from ssl_syre.errors import run_cli
from ssl_syre.pipeline import main

if __name__ == "__main__":
    run_cli(main)
