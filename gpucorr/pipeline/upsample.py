"""Sub-pixel refinement by DFT upsampling: the rule, written once, and its tables.

The kernels (``upsample`` of the numba and CUDA kernel sets) evaluate it; this
module states the rule (:func:`upsample_positions`) and builds the float64
interpolation tables they read.
"""
import functools
import math

import numpy as np

from gpucorr.backends.host import on_device

__all__ = ["upsample_positions", "upsample_region_size", "UPSAMPLE_CANDIDATES",
           "NEWTON_ITERATIONS", "NEWTON_TOLERANCE"]


def upsample_region_size(factor):
    """Edge of the upsampled search square, in upsampled pixels (1.5 original pixels)."""
    return int(math.ceil(1.5 * factor))


#: grid local maxima of a search region refined by Newton's method, best first
UPSAMPLE_CANDIDATES = 4
#: Newton iterations at most per candidate
NEWTON_ITERATIONS = 24
#: a step of at most this many pixels ends the search
NEWTON_TOLERANCE = 1e-7


@functools.lru_cache(maxsize=64)
def _interpolation_kernel(n, factor):
    """Weights ``D[u, m]`` of sample ``m`` for the point ``(u - U // 2) / factor`` (float64).

    ``D(t) = (1/n) sum_k w_k cos(2 pi k t / n)`` over ``k = 0 .. n // 2`` with
    ``w = 1`` for DC and (even ``n``) Nyquist, 2 otherwise: the real
    trigonometric interpolant of ``n`` periodic samples, i.e. the inverse DFT
    of the full, Hermitian-symmetric spectrum evaluated between samples.
    """
    u = upsample_region_size(factor)
    t = (np.arange(u)[:, None] - u // 2) / factor - np.arange(n)[None, :]
    kernel = np.ones_like(t)
    for k in range(1, n // 2 + 1):
        weight = 1.0 if 2 * k == n else 2.0
        kernel += weight * np.cos(2 * np.pi * k * t / n)
    kernel /= n
    kernel.flags.writeable = False
    return kernel


@functools.lru_cache(maxsize=64)
def _harmonics(n):
    """``[cos(omega_k a); sin(omega_k a)]``, ``omega_k = 2 pi k / n``, ``k = 0 .. n // 2``,
    ``a = 0 .. n - 1``: (2 (n // 2 + 1), n) float64.

    The interpolation kernel of :func:`_interpolation_kernel` and its first two
    derivatives at ``t - a`` are per-point coefficients times this table
    (``cos(w (t - a)) = cos(w t) cos(w a) + sin(w t) sin(w a)``).
    """
    omega = 2 * np.pi * np.arange(n // 2 + 1) / n
    angle = omega[:, None] * np.arange(n)[None, :]
    table = np.ascontiguousarray(np.concatenate([np.cos(angle), np.sin(angle)]))
    table.flags.writeable = False
    return table


def upsample_positions(backend, maps, positions, factor):
    """Refine integer peak positions to the maximum of the maps' DFT interpolant.

    The rule, the same on every backend and for every batch:

    1. Each map is evaluated on a ``U x U`` grid (``U = ceil(1.5 factor)``) of
       spacing ``1 / factor`` around each position by trigonometric (DFT)
       interpolation, as in the matrix-multiply DFT of Guizar-Sicairos: the
       *search region*.
    2. The grid's local maxima (points at least as large as each of their up
       to 8 neighbours) are ranked by value, largest first, ties in C order;
       the first :data:`UPSAMPLE_CANDIDATES` are kept.
    3. From each, Newton's method on the interpolant itself (gradient and
       Hessian of the exact band-limited continuation of the map, with a
       trust region starting at one grid step and gradient-ascent steps where
       the Hessian is not negative definite) climbs to the maximum of its
       basin within the search region, until a step is at most
       :data:`NEWTON_TOLERANCE` px or after :data:`NEWTON_ITERATIONS` steps.
    4. The candidate whose maximum has the largest interpolated value wins
       (the earlier candidate on an exact tie).

    The grid, the interpolant and its derivatives are computed in float64
    from the maps' values, each sum in a fixed order per (map, position),
    by :meth:`Backend.upsample <gpucorr.backends.Backend>` (a numba kernel on the CPU,
    kernels/upsample.cu on the GPU): a result depends only on its own map and
    position, never on how many maps are processed together, on BLAS or on
    thread counts. Two maxima worth 1e-5 of each other are told apart by
    their value, not by rounding noise, and the result is continuous in the
    map: it does not jump where two grid points nearly tie.

    The interpolation is the exact inverse DFT of the map's full Hermitian
    spectrum (Nyquist terms split evenly). libertem-blobfinder instead drops
    the negative x frequencies of the half spectrum, which biases x.

    Parameters
    ----------
    maps : real array (B, H, W)
        Correlation maps (a constant offset does not matter).
    positions : integer array (B, Q, 2)
        Integer (y, x) positions in map coordinates; ``Q`` positions per map.
    factor : int
        Upsampling factor (> 1).

    Returns
    -------
    float32 array (B, Q, 2)
    """
    xp = backend.xp
    n_maps, h, w = maps.shape
    n_pos = positions.shape[1]
    out = xp.empty((n_maps, n_pos, 2), dtype=np.float32)
    if n_maps * n_pos == 0:
        return out
    tables = [on_device(xp, a) for a in (_interpolation_kernel(h, factor),
                                          _interpolation_kernel(w, factor),
                                          _harmonics(h), _harmonics(w))]
    backend.upsample(xp.ascontiguousarray(maps), xp.ascontiguousarray(positions, dtype=np.int64),
                     int(factor), *tables, UPSAMPLE_CANDIDATES, NEWTON_ITERATIONS,
                     NEWTON_TOLERANCE, out)
    return out
