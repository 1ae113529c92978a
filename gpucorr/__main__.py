"""``python -m gpucorr``: the ``gpucorr`` command (see :mod:`gpucorr.cli`)."""
import sys

from gpucorr.cli import main

if __name__ == "__main__":
    sys.exit(main())
