"""CPU kernels (numba) for the correlation pipeline.

Each kernel works on a whole batch: every (frame, peak) pair of a chunk of
frames in one call, so the Python overhead is paid per chunk, not per frame.
The CUDA module (``_cuda``) provides the same functions with the same
signatures; :mod:`gpucorr.pipeline` calls them through
:func:`gpucorr.backends.get_backend`.

Conventions shared by both kernel sets
--------------------------------------
* crops are ``2 * crop_size`` square; crop ``(n, p)`` starts at
  ``peaks[p] - crop_size`` in frame ``n``; pixels outside the frame are 0.
* log scaling of a crop (or a whole frame in full mode) is
  ``log((x - min(x)) + 1)``, the shift in float64 rounded once to the compute
  dtype, min taken over the crop including its zero fill (as libertem-blobfinder
  does).
* evaluate works on a stack of ``M = N * P`` correlation maps; map ``m``
  belongs to peak ``m % P``. The argmax is the first maximum in C order.
"""
import math

import numpy as np
from numba import njit

from gpucorr.backends._numba_upsample import upsample  # noqa: F401  (part of this kernel set)

__all__ = ["crop_log", "log_scale_frames", "evaluate", "upsample", "find_maxima", "evaluate_at",
           "center_of_mass",
           "refine_center", "peak_elevation"]


@njit(cache=True, nogil=True)
def _shift_for_log(img, shift):
    """Whether ``img`` (2-D) is finite; if so and ``shift``, replace ``x`` by ``(x - min) + 1``.

    Afterwards ``log(img)`` is the log scaling ``log(x - min + 1)``. The shift
    is computed in float64 (``mn`` is a float64) and rounded once to the
    image's dtype: the minimum becomes exactly 1 however large it is (``min -
    1`` would round to ``min`` beyond 2**53 in float64, 2**24 in float32, and
    the minimum to log(0)); only a span ``max - min + 1`` beyond the image's
    dtype overflows. kernels/crop.cu and kernels/fast.cu do the same.
    """
    mn = np.inf
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            v = img[y, x]
            if not math.isfinite(v):
                return False
            if v < mn:
                mn = v
    if shift:
        for y in range(img.shape[0]):
            for x in range(img.shape[1]):
                img[y, x] = (img[y, x] - mn) + 1.0  # float64, rounded once
    return True


@njit(cache=True, nogil=True)
def _crop(frames, peaks, crop_size, do_log, fill, out, bad):
    n_frames, fy, fx = frames.shape
    n_peaks = peaks.shape[0]
    h, w = out.shape[2], out.shape[3]
    for job in range(n_frames * n_peaks):
        n = job // n_peaks
        p = job % n_peaks
        y0 = peaks[p, 0] - crop_size
        x0 = peaks[p, 1] - crop_size
        crop = out[n, p]
        for y in range(h):
            yy = y0 + y
            for x in range(w):
                xx = x0 + x
                if 0 <= yy < fy and 0 <= xx < fx:
                    crop[y, x] = frames[n, yy, xx]
                else:
                    crop[y, x] = fill[n]
        bad[job] = not _shift_for_log(crop, do_log)


def crop_log(frames, peaks, crop_size, do_log, fill, out, bad):
    """Crop (and optionally log-scale) every (frame, peak) pair.

    Parameters
    ----------
    frames : array (N, H, W), any real dtype, any strides
    peaks : int64 array (P, 2)
    crop_size : int
        Crop ``(n, p)`` starts at ``peaks[p] - crop_size``.
    do_log : bool
        Log-scale each crop after cropping: ``log((x - min(x)) + 1)``.
    fill : float array (N,)
        Value of the pixels outside frame ``n`` (before log scaling).
    out : float array (N, P, h, w)
    bad : bool array (N * P,)
        Set where a crop holds a NaN or infinity.
    """
    _crop(frames, peaks, crop_size, do_log, fill, out, bad)
    if do_log:
        # numpy's vectorised log is several times faster than a scalar log in numba;
        # non-finite crops (reported through ``bad``) may warn here: silence that
        with np.errstate(invalid="ignore", divide="ignore"):
            np.log(out, out=out)


@njit(cache=True, nogil=True)
def _shift_frames(frames, out, bad):
    n_frames, fy, fx = frames.shape
    for n in range(n_frames):
        dst = out[n]
        for y in range(fy):
            for x in range(fx):
                dst[y, x] = frames[n, y, x]
        bad[n] = not _shift_for_log(dst, True)


def log_scale_frames(frames, out, bad):
    """``out[n] = log((frames[n] - min(frames[n])) + 1)`` for every frame (N, H, W).

    ``bad[n]`` is set where frame ``n`` holds a NaN or infinity.
    """
    _shift_frames(frames, out, bad)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.log(out, out=out)


@njit(cache=True, nogil=True)
def center_of_mass(arr):
    """Centre of mass ``(y, x)`` of a 2-D array as float32.

    Returns the geometric centre where the array sums to zero.
    """
    sy = 0.0
    sx = 0.0
    s = 0.0
    for y in range(arr.shape[0]):
        for x in range(arr.shape[1]):
            v = float(arr[y, x])
            s += v
            sy += v * y
            sx += v * x
    if s == 0.0:
        return (np.float32((arr.shape[0] - 1) / 2), np.float32((arr.shape[1] - 1) / 2))
    return (np.float32(sy / s), np.float32(sx / s))


@njit(cache=True, nogil=True)
def refine_center(center, r, corrmap):
    """Centre of mass of the ``(2r+1)`` window around ``center`` minus its minimum.

    ``r`` shrinks so the window stays inside ``corrmap``; at ``r <= 0`` (or a
    flat window) the integer centre is returned unchanged.
    """
    y = center[0]
    x = center[1]
    h, w = corrmap.shape
    r = min(r, y, x, h - y - 1, w - x - 1)
    if r <= 0:
        return (np.float32(y), np.float32(x))
    mn = np.inf
    for yy in range(y - r, y + r + 1):
        for xx in range(x - r, x + r + 1):
            if corrmap[yy, xx] < mn:
                mn = corrmap[yy, xx]
    s = 0.0
    sy = 0.0
    sx = 0.0
    for yy in range(-r, r + 1):
        for xx in range(-r, r + 1):
            v = float(corrmap[y + yy, x + xx] - mn)
            s += v
            sy += v * yy
            sx += v * xx
    if s == 0.0:
        return (np.float32(y), np.float32(x))
    return (np.float32(y + sy / s), np.float32(x + sx / s))


@njit(cache=True, nogil=True)
def peak_elevation(center, corrmap, height, r_min=1.5, r_max=np.inf):
    """Slope of the tightest cone of apex ``height`` at ``center`` under ``corrmap``.

    Only pixels at a distance ``r_min <= d < r_max`` from ``center`` count.
    Returns 0 for a negative slope and ``inf`` where no pixel counts.
    """
    peak_y = center[0]
    peak_x = center[1]
    h, w = corrmap.shape
    r_min2 = r_min * r_min
    r_max2 = r_max * r_max
    result = np.float32(np.inf)
    bound2 = np.inf  # result**2 with a margin: pixels above it cannot lower the result
    for y in range(h):
        dy2 = (y - peak_y) ** 2
        for x in range(w):
            d2 = dy2 + (x - peak_x) ** 2
            if d2 < r_min2 or d2 >= r_max2:
                continue
            diff = height - corrmap[y, x]
            if diff >= 0 and diff * diff > bound2 * d2:
                continue
            slope = np.float32(diff / math.sqrt(d2))
            if slope < result:
                result = slope
                bound2 = float(result) * float(result) * (1 + 1e-6)
    return max(np.float32(0), result)


@njit(cache=True, nogil=True)
def evaluate(corrs, peaks, crop_size, offsets, out_centers, out_refineds, out_heights,
             out_elevations):
    """Argmax, 5x5 centre-of-mass refinement, height and elevation of each map.

    Parameters
    ----------
    corrs : float array (M, h, w)
        Correlation maps; map ``m`` belongs to peak ``m % P``.
    peaks : int64 array (P, 2)
    crop_size : int
        Results are shifted by ``peaks[p] - crop_size`` into frame coordinates.
    offsets : float64 array (M,)
        Added to each map's maximum to give its height (the maps' mean, removed
        before the inverse FFT for precision; see ``gpucorr.pipeline.correlate``).
    out_centers : integer array (M, 2)
    out_refineds : float array (M, 2)
    out_heights, out_elevations : float arrays (M,)
    """
    n_maps, h, w = corrs.shape
    n_peaks = peaks.shape[0]
    for m in range(n_maps):
        corr = corrs[m]
        best = corr[0, 0]
        cy = 0
        cx = 0
        for y in range(h):
            for x in range(w):
                if corr[y, x] > best:
                    best = corr[y, x]
                    cy = y
                    cx = x
        ry, rx = refine_center((cy, cx), 2, corr)
        elevation = peak_elevation((ry, rx), corr, best)
        p = m % n_peaks
        oy = peaks[p, 0] - crop_size
        ox = peaks[p, 1] - crop_size
        out_centers[m, 0] = cy + oy
        out_centers[m, 1] = cx + ox
        out_refineds[m, 0] = ry + oy
        out_refineds[m, 1] = rx + ox
        out_heights[m] = best + offsets[m]
        out_elevations[m] = elevation


# per-frame disk detection, part of this kernel set (below: it uses the functions above)
from gpucorr.backends._numba_disks import evaluate_at, find_maxima  # noqa: E402,F401
