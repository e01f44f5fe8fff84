"""Pre-train an encoder: python train.py [CONFIG.yaml] [dotted.key=value ...] [--debug] [--help].

The same as the installed command ssl-syre-train (ssl_syre.commands.train).
"""

from ssl_syre.commands import train

if __name__ == "__main__":
    train()
