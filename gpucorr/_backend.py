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
    crop_log, log_scale_frames, evaluate, upsample : callables
        The batch kernels, with the signatures of :mod:`gpucorr._numba`.
    fast_correlate : callable or None
        Fast mode fused into one kernel (:func:`gpucorr._cuda.fast_correlate`),
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


class _ArrayModuleFFT:
    """``rfft2``/``irfft2`` of an ``fft`` module (``scipy.fft``); no ``out=``, always allocates."""

    def __init__(self, fft):
        self.fft = fft

    def rfft2(self, a, out):
        return self.fft.rfft2(a, axes=(-2, -1))

    def irfft2(self, a, s, out, overwrite_x, scaled=True):
        return self.fft.irfft2(a, s=s, axes=(-2, -1), norm=_norm(scaled))


class _CupyFFT:
    """``cupyx.scipy.fft`` on the GPU: cuFFT with CuPy's plan cache.

    ``irfft2`` with ``overwrite_x`` lets cuFFT's complex-to-real transform
    destroy its input instead of CuPy copying the spectra first: one pass over
    them less. There is no ``out=``; CuPy's memory pool reuses device memory.
    """

    def __init__(self):
        import cupyx.scipy.fft
        self.fft = cupyx.scipy.fft

    def rfft2(self, a, out):
        return self.fft.rfft2(a, axes=(-2, -1))

    def irfft2(self, a, s, out, overwrite_x, scaled=True):
        # CuPy scales in a kernel of its own after cuFFT; norm="forward" leaves it out
        return self.fft.irfft2(a, s=s, axes=(-2, -1), overwrite_x=overwrite_x,
                               norm=_norm(scaled))


def _norm(scaled):
    """The ``norm=`` of an inverse FFT scaled by ``1 / n`` (or, ``scaled=False``, not)."""
    return "backward" if scaled else "forward"


class _PocketFFT:
    """scipy.fft's pocketfft on the CPU, able to write into ``out=`` buffers.

    ``scipy.fft.rfft2``/``irfft2`` always allocate their result, and
    ``irfft2`` of a stack allocates a temporary spectrum as well. Where
    :mod:`gpucorr._pipeline` passes buffers it reuses from chunk to chunk, this
    calls the pocketfft binding that scipy.fft itself calls
    (``scipy.fft._pocketfft.pypocketfft``, not public) with ``out=``:

    - ``rfft2``: the same multi-axis ``r2c`` call scipy.fft makes, into ``out``;
    - ``irfft2`` with ``overwrite_x``: the two halves of pocketfft's multi-axis
      ``c2r`` done one by one, the ``c2c`` along the rows in place in the input
      (pocketfft would allocate a temporary for it), then the unnormalised
      ``c2r`` along the last axis into ``out`` and the ``1 / (h w)`` scaling that
      pocketfft applies at the end of it (``T(1 / (long double)(h w))``).

    Both give the same bits as scipy.fft (checked at import by :func:`_pocketfft`
    and by the tests); without ``out`` the public functions are used.
    """

    def __init__(self, pfft):
        self.pfft = pfft

    def rfft2(self, a, out):
        if out is None:
            return scipy.fft.rfft2(a, axes=(-2, -1))
        return self.pfft.r2c(a, (a.ndim - 2, a.ndim - 1), True, 0, out, 1)

    def irfft2(self, a, s, out, overwrite_x, scaled=True):
        h, w = s
        if out is None or a.shape[-2:] != (h, w // 2 + 1):
            return scipy.fft.irfft2(a, s=s, axes=(-2, -1), norm=_norm(scaled))
        if not overwrite_x:
            # one multi-axis c2r (with its own temporary), scaled by 1 / (h w) (inorm 2)
            return self.pfft.c2r(a, (a.ndim - 2, a.ndim - 1), w, False, 2 if scaled else 0,
                                 out, 1)
        self.pfft.c2c(a, (a.ndim - 2,), False, 0, a, 1)
        self.pfft.c2r(a, (a.ndim - 1,), w, False, 0, out, 1)
        if scaled:
            np.multiply(out, out.dtype.type(1 / np.longdouble(h * w)), out=out)
        return out


def _pocketfft():
    """:class:`_PocketFFT` if scipy's pocketfft binding gives scipy.fft's bits with out=,
    else plain scipy.fft (which allocates every result)."""
    try:
        from scipy.fft._pocketfft import pypocketfft
        fft = _PocketFFT(pypocketfft)
        for dtype in (np.float32, np.float64):
            x = np.cos(np.arange(2 * 6 * 10, dtype=dtype)).reshape(2, 6, 10)
            spec = fft.rfft2(x, np.empty((2, 6, 6), dtype=np.result_type(dtype, np.complex64)))
            want = scipy.fft.rfft2(x, axes=(-2, -1))
            same = np.array_equal(spec.view(dtype), want.view(dtype))
            spec *= np.asarray(1 + 0.5j, dtype=spec.dtype)
            want *= np.asarray(1 + 0.5j, dtype=spec.dtype)
            back = fft.irfft2(spec, (6, 10), np.empty(x.shape, dtype=dtype), True)
            if not (same and np.array_equal(back, scipy.fft.irfft2(want, s=(6, 10),
                                                                    axes=(-2, -1)))):
                raise ValueError("pocketfft with out= differs from scipy.fft")
        return fft
    except Exception:  # another SciPy: the public functions, which allocate
        return _ArrayModuleFFT(scipy.fft)


_CPU = Backend("cpu", np, _numba, _pocketfft())


_CUDA = None


def get_backend(xp):
    """The kernel set for array module ``xp``: the dispatch point of the pipeline."""
    global _CUDA
    if xp is np:
        return _CPU
    if getattr(xp, "__name__", None) == "cupy":
        if _CUDA is None:
            from gpucorr import _cuda
            _CUDA = Backend("cuda", xp, _cuda, _CupyFFT())
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
