"""The correlation itself: the filter spectrum of a template, and correlation maps.

Correlation convention
----------------------
gpucorr correlates (it does not convolve): the correlation map of a crop
``f`` with a mask ``t`` centred at ``c = (h // 2, w // 2)`` is
``map[j] = sum_k t[k + c] f[j + k]`` (circular), so a disk centred at pixel
``j`` of the crop gives the peak at ``map[j]`` for even and odd sizes
alike. In Fourier space this is ``conj(T) * F`` times the phase ramp of a
roll by ``c``; :func:`correlation_filter` folds both into one spectrum, so
one ``irfft2`` gives the final map, with no separate shift.

Scaling and hybrid correlation
------------------------------
A :class:`Scaling` says how frames are scaled before they are correlated
(``log(x - min + 1)`` per crop or frame, or not at all) and the power ``p`` of
the correlation: with ``p < 1`` the cross-power spectrum ``m = F conj(T)`` is
replaced by ``m |m|^(p - 1)`` (its phase kept, its magnitude raised to ``p``:
py4DSTEM's hybrid correlation, ``corrPower``; ``p = 0`` is phase correlation),
which sharpens the correlation peak and weighs the disks' edges more than their
brightness.
"""
from dataclasses import dataclass

import numpy as np

from gpucorr.pipeline.workspace import complex_dtype, fresh

__all__ = ["correlation_filter", "correlate", "Scaling", "LOG_SCALING"]


@dataclass(frozen=True)
class Scaling:
    """How frames are scaled before correlating, and the power of the correlation.

    Attributes
    ----------
    log : bool
        Log-scale each crop (fast mode) or frame (full mode): ``log(x - min + 1)``.
    power : float
        Exponent ``p`` in ``[0, 1]`` of the cross-power spectrum's magnitude
        (1: plain cross-correlation).
    """

    log: bool = True
    power: float = 1.0


#: libertem-blobfinder's preprocessing: log scaling, plain cross-correlation
LOG_SCALING = Scaling()


def _roll_phase(xp, n, half):
    """1-D spectrum factor of a roll by ``n // 2`` over ``n`` samples (``half``: rfft axis)."""
    k = xp.arange(n // 2 + 1 if half else n, dtype=np.float64)
    c = n // 2
    if n % 2 == 0:
        # exact: exp(-i pi k) = (-1)^k
        return 1.0 - 2.0 * (k % 2)
    return xp.exp(-2j * np.pi * k * c / n)


def correlation_filter(xp, template, shape, rdtype):
    """Spectrum that turns ``irfft2(rfft2(x) * filt)`` into the centred correlation map.

    Parameters
    ----------
    template : complex array (h, w // 2 + 1)
        ``rfft2`` of the correlation mask of shape ``shape`` (centred at ``shape // 2``),
        as returned by ``pattern.get_template(shape)``.
    shape : (int, int)
        ``(h, w)``, the real shape the template was computed for.
    rdtype : dtype
        The real compute dtype; the filter has the matching complex dtype.
    """
    h, w = shape
    phase = _roll_phase(xp, h, False)[:, None] * _roll_phase(xp, w, True)[None, :]
    with np.errstate(over="ignore", invalid="ignore"):    # checked after the run
        return (xp.conj(template) * phase).astype(complex_dtype(rdtype))


def correlate(backend, data, filt, ws=None, keep_specs=False, power=1.0):
    """Zero-mean correlation maps of a stack ``data`` (M, h, w) with ``filt``.

    Returns ``(maps, specs, offsets)``: the maps minus their means, their
    spectra (DC term zero) with ``keep_specs`` (else None: the inverse FFT may
    overwrite them, which saves a copy), and the means (float64, shape (M,)).

    The mean (the DC term) is split off before the inverse FFT: the maps'
    fluctuations are then stored at full relative precision, which keeps the
    elevations (differences of nearby map values) accurate in float32.
    Argmax, refinement and elevation do not depend on a constant offset; the
    height adds the mean back in float64. ``power`` < 1 correlates with the
    cross-power spectrum's magnitude raised to ``power`` (see :class:`Scaling`).
    """
    xp = backend.xp
    ws = fresh(xp, ws)
    h, w = data.shape[-2:]
    specs = backend.rfft2(data, out=ws.out("specs", data.shape[:-1] + (w // 2 + 1,),
                                            complex_dtype(data.dtype)))
    # The inverse's 1 / (h w) is folded into the product where the spectra are not
    # returned: the filter (one spectrum) is scaled, not the maps (a stack), which
    # saves a pass over the maps where the scaling is one of its own (CuPy: 13 % of
    # full mode on an H100; pocketfft with overwrite_x).
    fold = not keep_specs and power == 1
    # one filter per peak (P, h, w'): the crops, in (frame, peak) order, as (N, P, h, w')
    product = specs.reshape((-1,) + filt.shape) if filt.ndim == 3 else specs
    # values beyond the dtype become inf / NaN quietly: the results are checked after the
    # run (execution.job.check_log_overflow), which says what overflowed
    with np.errstate(over="ignore", invalid="ignore"):
        if power != 1:
            product *= filt
            _raise_magnitude(xp, specs, power)
            offsets = specs[..., 0, 0].real.astype(np.float64) / (h * w)
        elif fold:
            product *= filt * filt.real.dtype.type(1 / (h * w))
            offsets = specs[..., 0, 0].real.astype(np.float64)
        else:
            product *= filt
            offsets = specs[..., 0, 0].real.astype(np.float64) / (h * w)
    specs[..., 0, 0] = 0
    maps = backend.irfft2(specs, s=(h, w), out=ws.out("maps", data.shape, data.dtype),
                          overwrite_x=not keep_specs, scaled=not fold)
    return maps, (specs if keep_specs else None), xp.ascontiguousarray(offsets)


def _raise_magnitude(xp, specs, power):
    """``specs *= |specs| ** (power - 1)`` in place, zeros kept zero."""
    magnitude = xp.abs(specs)
    positive = magnitude > 0
    factor = xp.where(positive, magnitude, 1) ** magnitude.dtype.type(power - 1)
    specs *= xp.where(positive, factor, 0)
