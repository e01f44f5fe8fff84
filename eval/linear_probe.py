"""Linear probe on frozen features: python eval/linear_probe.py PATH [dotted.key=value ...].

PATH is a run directory, a .ckpt file or an export directory; see ssl_syre/evaluation/cli.py.
The same as the installed command ssl-syre-linear (ssl_syre.commands.linear_probe).
"""

import sys
from pathlib import Path

# A script's own folder (eval/) is first on sys.path, not the checkout: put the checkout first,
# so that this script runs the ssl_syre beside it, as train.py does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssl_syre.commands import linear_probe  # noqa: E402

if __name__ == "__main__":
    linear_probe()
