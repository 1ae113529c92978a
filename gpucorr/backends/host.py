"""The host round trip: compute on the host, return on the device; host constants on a device.

Some work (drawing masks, finding peaks on one sum frame, indexing a lattice)
is done with NumPy on the host whatever the input. :func:`to_host` reads an
array there (CuPy and DLPack GPU arrays are copied once), :func:`like` gives a
host result back in the array library and on the device of the input, and
:func:`on_host` wraps a function in both. :func:`on_data_device` runs a function
on the GPU of its CuPy arguments, and :func:`on_device` keeps one device copy of
a cached host constant per device.
"""
import functools

import numpy as np

from gpucorr.backends import is_cupy
from gpucorr.backends.devices import as_native

__all__ = ["to_host", "like", "on_host", "on_data_device", "on_device"]


def to_host(value, name="array"):
    """``value`` as a host array: CuPy (or DLPack GPU) arrays are copied, others returned."""
    value = as_native(value, name)
    if is_cupy(value):
        return value.get()
    return value


def like(result, reference):
    """Host ``result`` (an array or a tuple of arrays) in the array library of ``reference``:
    unchanged for host input, else CuPy arrays on ``reference``'s GPU."""
    if not is_cupy(reference):
        return result
    import cupy
    with reference.device:
        if isinstance(result, tuple):
            return tuple(cupy.asarray(r) for r in result)
        return cupy.asarray(result)


def on_host(name):
    """Decorator: run ``func(name, ...)`` on the host copy of its first argument, called
    ``name`` (positional or by keyword), and give the result back in that argument's
    array library."""
    def wrap(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if args:
                arr, args = args[0], args[1:]
            else:
                arr = kwargs.pop(name)
            arr = as_native(arr, name)
            return like(func(to_host(arr, name), *args, **kwargs), arr)
        return wrapper
    return wrap


def on_data_device(func):
    """Run ``func`` on the GPU of its first CuPy argument (as :func:`gpucorr.refine` does).

    Scratch arrays, FFT plans and kernels then live on the device of the data,
    whatever CuPy's current device is. NumPy arguments run ``func`` as is.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        for arg in (*args, *kwargs.values()):
            for a in (arg if isinstance(arg, tuple) else (arg,)):
                if is_cupy(a):
                    with a.device:
                        return func(*args, **kwargs)
        return func(*args, **kwargs)
    return wrapper


def on_device(xp, host):
    """A cached, read-only host constant ``host`` on the current device of ``xp``.

    Copied once per device, not once per chunk; ``host`` must be an array that
    lives on (from an ``lru_cache``), since it is looked up by identity.
    """
    if xp is np:
        return host
    key = (xp.cuda.Device().id, id(host))
    if key not in _device_arrays:
        _device_arrays[key] = (xp.asarray(host), host)  # keeps host alive: id stays unique
        # once per device: later calls may use the copy from any stream
        xp.cuda.get_current_stream().synchronize()
    return _device_arrays[key][0]


#: (device id, id(host constant)) -> (device copy, the host constant)
_device_arrays = {}
