"""Weighted kNN on frozen features: python eval/knn.py PATH [dotted.key=value ...] [--features ...].

PATH is a run directory, a .ckpt file or an export directory; see ssl_syre/evaluation/cli.py.
"""

from ssl_syre.errors import run_cli
from ssl_syre.evaluation.cli import main_knn

if __name__ == "__main__":
    run_cli(main_knn)
