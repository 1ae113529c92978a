"""Public path of :mod:`gpucorr.integrations.dask` (this name is that module)."""
import sys

from gpucorr.integrations import dask as _module

sys.modules[__name__] = _module
