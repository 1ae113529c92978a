"""Public path of :mod:`gpucorr.cli.io` (this name is that module)."""
import sys

from gpucorr.cli import io as _module

sys.modules[__name__] = _module
