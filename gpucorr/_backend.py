"""The one place that knows which array library and kernel set to use.

:func:`array_namespace` detects the array library of the arguments once;
:func:`get_backend` returns the kernel set for it. The pipeline above is
written once against this interface (see :mod:`gpucorr._pipeline`).

Only this module decides between backends: NumPy input gets the numba
kernel set (:mod:`gpucorr._numba`), CuPy input the CUDA kernel set
(:mod:`gpucorr._cuda`, imported only then).
"""
import dataclasses

import numpy as np
import scipy.fft
import array_api_compat
import sparseconverter

from gpucorr import _numba

__all__ = ["Backend", "Device", "array_namespace", "get_backend", "is_sparse", "devices",
           "cuda_available", "cuda_unusable_reason"]


def is_sparse(arr):
    """True for scipy.sparse and pydata-sparse arrays."""
    try:
        return sparseconverter.get_backend(arr) in sparseconverter.SPARSE_BACKENDS
    except Exception:  # sparseconverter raises for unknown types
        return False


def _kind(arr):
    if arr is None or isinstance(arr, (bool, int, float, np.generic, list, tuple)):
        return None
    if array_api_compat.is_numpy_array(arr) or is_sparse(arr):
        if is_sparse(arr) and sparseconverter.get_backend(arr) in sparseconverter.CUPY_BACKENDS:
            return "cupy"
        return "numpy"
    if array_api_compat.is_cupy_array(arr):
        return "cupy"
    if hasattr(arr, "__array__") and hasattr(arr, "shape") and hasattr(arr, "dtype"):
        # lazy host arrays (h5py datasets, zarr arrays): read by slicing, chunk by chunk
        return "numpy"
    raise TypeError(
        f"unsupported array type {type(arr).__module__}.{type(arr).__qualname__}; "
        "gpucorr accepts NumPy arrays, numpy.memmap, h5py datasets, zarr arrays, "
        "scipy.sparse and pydata sparse arrays"
    )


def array_namespace(*arrays):
    """The array module (``numpy`` or ``cupy``) all ``arrays`` belong to.

    ``None``, Python scalars, lists and tuples are neutral. Mixing array
    libraries raises ``TypeError``: gpucorr never copies between host and
    device behind the caller's back.
    """
    kinds = {k for k in map(_kind, arrays) if k is not None}
    if len(kinds) > 1:
        raise TypeError(
            f"arguments mix array libraries ({', '.join(sorted(kinds))}); "
            "move them to one device first"
        )
    kind = kinds.pop() if kinds else "numpy"
    if kind == "cupy":
        import cupy
        return cupy
    return np


class Backend:
    """A kernel set and the array module it works on.

    Attributes
    ----------
    name : str
        ``"cpu"`` or ``"cuda"``.
    xp : module
        The array module (``numpy`` or ``cupy``).
    crop_log, log_scale_frames, evaluate, roll_to_origin : callables
        The batch kernels, with the signatures of :mod:`gpucorr._numba`.
    """

    def __init__(self, name, xp, kernels, fft):
        self.name = name
        self.xp = xp
        self.crop_log = kernels.crop_log
        self.log_scale_frames = kernels.log_scale_frames
        self.evaluate = kernels.evaluate
        self.roll_to_origin = kernels.roll_to_origin
        self._fft = fft

    def rfft2(self, a):
        """Real 2-D FFT over the last two axes, keeping single precision."""
        return self._fft.rfft2(a, axes=(-2, -1))

    def irfft2(self, a, s):
        """Inverse of :meth:`rfft2` for real output of shape ``s`` (last two axes)."""
        return self._fft.irfft2(a, s=s, axes=(-2, -1))

    def __repr__(self):
        return f"Backend({self.name!r})"


_CPU = Backend("cpu", np, _numba, scipy.fft)


_CUDA = None


def get_backend(xp):
    """The kernel set for array module ``xp``: the dispatch point of the pipeline."""
    global _CUDA
    if xp is np:
        return _CPU
    if getattr(xp, "__name__", None) == "cupy":
        if _CUDA is None:
            import cupy.fft
            from gpucorr import _cuda
            _CUDA = Backend("cuda", xp, _cuda, cupy.fft)
        return _CUDA
    raise TypeError(f"no gpucorr backend for array module {getattr(xp, '__name__', xp)!r}")


def cuda_unusable_reason():
    """None where the CUDA backend can run, else why not (no CuPy, no driver, no GPU).

    Probes by allocating, not by importing: CuPy imports fine without a driver.
    """
    try:
        import cupy
    except Exception as exc:
        return f"CuPy is not installed ({type(exc).__name__}); pip install gpucorr[cuda13]"
    try:
        cupy.zeros(1)
    except Exception as exc:
        return f"CuPy finds no usable GPU ({type(exc).__name__}: {exc})"
    return None


@dataclasses.dataclass(frozen=True)
class Device:
    """A place gpucorr can compute: the CPU or one GPU.

    Attributes
    ----------
    name : str
        ``"cpu"`` or ``"cuda:N"`` (``"cuda"`` for a GPU backend that cannot start).
    usable : bool
        Whether gpucorr can run there now.
    description : str
        The CPU model, or the GPU's name and memory; or why it is not usable.
    """

    name: str
    usable: bool
    description: str


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def devices():
    """The CPU and every GPU, with whether gpucorr can use each and why not.

    >>> devices()[0].name, devices()[0].usable
    ('cpu', True)
    """
    import os
    found = [Device("cpu", True, f"{_cpu_model()}, {os.cpu_count()} cores (numba kernels)")]
    reason = cuda_unusable_reason()
    if reason is not None:
        return found + [Device("cuda", False, reason)]
    import cupy
    for i in range(cupy.cuda.runtime.getDeviceCount()):
        props = cupy.cuda.runtime.getDeviceProperties(i)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        found.append(Device(f"cuda:{i}", True,
                            f"{name}, {props['totalGlobalMem'] / 2**30:.0f} GiB (CUDA kernels)"))
    return found


def cuda_available():
    """True where CuPy can allocate on a GPU, so CuPy input runs on the CUDA backend."""
    return cuda_unusable_reason() is None
