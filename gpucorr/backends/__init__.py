"""Backends: the two kernel sets and the one place that picks between them.

:func:`array_namespace` detects the array library of the arguments once;
:func:`get_backend` returns the kernel set for it. The pipeline above
(:mod:`gpucorr.pipeline`) is written once against the :class:`Backend` interface.

- :mod:`~gpucorr.backends._numba`: the CPU kernel set (numba);
- :mod:`~gpucorr.backends._cuda`: the CUDA kernel set (CuPy + ``kernels/*.cu``),
  imported only when CuPy arrays come;
- :mod:`~gpucorr.backends.fft`: the FFTs each kernel set uses;
- :mod:`~gpucorr.backends.devices`: device names, :func:`gpucorr.use_device`,
  DLPack, and which devices exist;
- :mod:`~gpucorr.backends.host`: the host round trip (compute on the host, return on
  the device) and device copies of host constants.

Only this package decides between backends, and only :func:`is_cupy` asks
whether an array is CuPy's.
"""
import array_api_compat
import numpy as np
import sparseconverter

from gpucorr.backends import _numba
from gpucorr.backends.fft import cpu_fft, CupyFFT

__all__ = ["Backend", "array_namespace", "get_backend", "is_sparse", "is_cupy"]


def is_cupy(arr):
    """True for CuPy arrays (CuPy is not imported to tell)."""
    return array_api_compat.is_cupy_array(arr)


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
    if is_cupy(arr):
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
    crop_log, log_scale_frames, evaluate, upsample : callables
        The batch kernels, with the signatures of :mod:`gpucorr.backends._numba`.
    find_maxima, evaluate_at : callables
        Per-frame disk detection (:mod:`gpucorr.backends._numba_disks`).
    fast_correlate : callable or None
        Fast mode fused into one kernel (:func:`gpucorr.backends._cuda.fast_correlate`),
        where the kernel set has it.
    fast_correlate_applies : callable
        ``(crop_size, rdtype) -> bool``: whether :attr:`fast_correlate` runs them.
    """

    def __init__(self, name, xp, kernels, fft):
        self.name = name
        self.xp = xp
        self.crop_log = kernels.crop_log
        self.log_scale_frames = kernels.log_scale_frames
        self.evaluate = kernels.evaluate
        self.upsample = kernels.upsample
        self.find_maxima = getattr(kernels, "find_maxima", None)
        self.evaluate_at = getattr(kernels, "evaluate_at", None)
        self.fast_correlate = getattr(kernels, "fast_correlate", None)
        self._applies = getattr(kernels, "fast_correlate_applies", None)
        self._fft = fft

    def fast_correlate_applies(self, crop_size, rdtype):
        """Whether fast mode for ``crop_size`` in ``rdtype`` runs as :attr:`fast_correlate`."""
        return self._applies is not None and bool(self._applies(crop_size, rdtype))

    def rfft2(self, a, out=None):
        """Real 2-D FFT over the last two axes, keeping single precision.

        ``out`` (complex, shape ``a.shape[:-1] + (w // 2 + 1,)``) is filled and
        returned where the backend's FFT can write into a given array (the CPU);
        elsewhere it is ignored. Always use the returned array.
        """
        return self._fft.rfft2(a, out)

    def irfft2(self, a, s, out=None, overwrite_x=False, scaled=True):
        """Inverse of :meth:`rfft2` for real output of shape ``s`` (last two axes).

        ``out`` as for :meth:`rfft2`. ``overwrite_x=True`` lets the transform use
        ``a`` as its scratch (its content is then undefined), which saves a
        temporary the size of ``a`` on the CPU. ``scaled=False`` leaves out the
        ``1 / (h w)``, for a caller that folds it into a product it makes anyway:
        where the scaling is a pass of its own over the output (CuPy; pocketfft
        with ``overwrite_x``), that saves the pass.
        """
        return self._fft.irfft2(a, s, out, overwrite_x, scaled)

    def __repr__(self):
        return f"Backend({self.name!r})"


_CPU = Backend("cpu", np, _numba, cpu_fft())




_CUDA = None


def get_backend(xp):
    """The kernel set for array module ``xp``: the dispatch point of the pipeline."""
    global _CUDA
    if xp is np:
        return _CPU
    if getattr(xp, "__name__", None) == "cupy":
        if _CUDA is None:
            from gpucorr.backends import _cuda
            _CUDA = Backend("cuda", xp, _cuda, CupyFFT())
        return _CUDA
    raise TypeError(f"no gpucorr backend for array module {getattr(xp, '__name__', xp)!r}")
