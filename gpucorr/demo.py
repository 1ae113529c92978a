"""Public path of :mod:`gpucorr.cli.demo` (this name is that module)."""
import sys

from gpucorr.cli import demo as _module

sys.modules[__name__] = _module
