"""Public path of :mod:`gpucorr.integrations.libertem` (this name is that module)."""
import sys

from gpucorr.integrations import libertem as _module

sys.modules[__name__] = _module
