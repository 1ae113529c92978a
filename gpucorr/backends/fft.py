"""The FFTs of the kernel sets: ``rfft2``/``irfft2`` over the last two axes.

On the CPU into ``out=`` buffers the pipeline reuses from chunk to chunk; on the
GPU cuFFT through ``cupyx.scipy.fft``, with CuPy's plan cache.
"""
import numpy as np
import scipy.fft

__all__ = ["cpu_fft", "CupyFFT"]


class _ArrayModuleFFT:
    """``rfft2``/``irfft2`` of an ``fft`` module (``scipy.fft``); no ``out=``, always allocates."""

    def __init__(self, fft):
        self.fft = fft

    def rfft2(self, a, out):
        return self.fft.rfft2(a, axes=(-2, -1))

    def irfft2(self, a, s, out, overwrite_x, scaled=True):
        return self.fft.irfft2(a, s=s, axes=(-2, -1), norm=_norm(scaled))


class CupyFFT:
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
    :mod:`gpucorr.pipeline` passes buffers it reuses from chunk to chunk, this
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


def cpu_fft():
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
