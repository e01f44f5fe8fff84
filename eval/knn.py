"""Weighted kNN on frozen features: python eval/knn.py PATH [dotted.key=value ...] [--features ...].

PATH is a run directory, a .ckpt file or an export directory; see ssl_syre/evaluation/cli.py.
The same as the installed command ssl-syre-knn (ssl_syre.commands.knn).
"""

import sys
from pathlib import Path

# A script's own folder (eval/) is first on sys.path, not the checkout: put the checkout first,
# so that this script runs the ssl_syre beside it, as train.py does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssl_syre.commands import knn  # noqa: E402

if __name__ == "__main__":
    knn()
