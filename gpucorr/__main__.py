"""``python -m gpucorr``: run the demo (see :mod:`gpucorr.demo`)."""
import sys

from gpucorr.demo import main

if __name__ == "__main__":
    sys.exit(main())
