"""CPU kernels (numba) of per-frame disk detection: the maxima of correlation maps, and
their refinement, height and elevation.

Part of the numba kernel set (:mod:`gpucorr.backends._numba` exports them);
``kernels/maxima.cu`` computes the same on the GPU. The rule is stated in
:func:`gpucorr.find_disks`:

* a *maximum* of map ``n`` is a pixel ``p`` at least ``edge`` pixels inside the map
  whose value is larger than that of every other pixel ``q`` within the distance
  ``min_spacing`` (``|q - p| <= s``), or equal to it with ``q`` after ``p`` in C order;
* of the maxima, ranked by value (ties in C order), the first ``K`` are kept; where
  ``min_relative > 0`` and the largest maximum ``top`` is positive, only those worth
  at least ``min_relative * top``. (:func:`gpucorr.find_disks` passes 0 and applies
  its own threshold, measured from each map's minimum.)
"""
import math

import numpy as np
from numba import njit

from gpucorr.backends._numba import refine_center

__all__ = ["find_maxima", "evaluate_at"]


@njit(cache=True, nogil=True)
def _is_maximum(m, y, x, s):
    """Whether pixel (y, x) of map ``m`` is a maximum within the distance ``s``."""
    h, w = m.shape
    v = m[y, x]
    r = int(math.floor(s))
    s2 = s * s
    for yy in range(max(y - r, 0), min(y + r + 1, h)):
        dy2 = (yy - y) * (yy - y)
        for xx in range(max(x - r, 0), min(x + r + 1, w)):
            if dy2 + (xx - x) * (xx - x) > s2 or (yy == y and xx == x):
                continue
            q = m[yy, xx]
            if q > v or (q == v and (yy < y or (yy == y and xx < x))):
                return False
    return True


@njit(cache=True, nogil=True)
def _insert(best_value, best_index, n_best, value, index):
    """Insert (value, index) into the ranked top list (value descending, index ascending);
    returns the new length (at most the list's capacity)."""
    k = best_value.shape[0]
    pos = n_best
    while pos > 0 and (best_value[pos - 1] < value
                       or (best_value[pos - 1] == value and best_index[pos - 1] > index)):
        pos -= 1
    if pos >= k:
        return n_best
    last = min(n_best, k - 1)
    for i in range(last, pos, -1):
        best_value[i] = best_value[i - 1]
        best_index[i] = best_index[i - 1]
    best_value[pos] = value
    best_index[pos] = index
    return min(n_best + 1, k)


@njit(cache=True, nogil=True)
def _maxima_of_map(m, k, s, min_relative, edge, centers, values):
    """The kept maxima of one map into ``centers`` (k, 2) and ``values`` (k,); the count."""
    h, w = m.shape
    best_value = np.empty(k, dtype=np.float64)
    best_index = np.empty(k, dtype=np.int64)
    n_best = 0
    top = -np.inf
    diagonal = s * s >= 2.0        # the diagonal neighbours lie within the spacing
    for y in range(edge, h - edge):
        for x in range(edge, w - edge):
            v = m[y, x]
            # the rule on the nearest neighbours first, most pixels fail it: an earlier
            # neighbour (C order) must be lower, a later one not higher (ties: flat
            # background fails here at once)
            if y > 0 and m[y - 1, x] >= v:
                continue
            if x > 0 and m[y, x - 1] >= v:
                continue
            if x + 1 < w and m[y, x + 1] > v:
                continue
            if y + 1 < h and m[y + 1, x] > v:
                continue
            if diagonal and y > 0 and (
                    (x > 0 and m[y - 1, x - 1] >= v) or (x + 1 < w and m[y - 1, x + 1] >= v)):
                continue
            if diagonal and y + 1 < h and (
                    (x > 0 and m[y + 1, x - 1] > v) or (x + 1 < w and m[y + 1, x + 1] > v)):
                continue
            if not _is_maximum(m, y, x, s):
                continue
            if v > top:
                top = v
            n_best = _insert(best_value, best_index, n_best, float(v), y * w + x)
    # the relative threshold (where asked for): the list is ranked, so a prefix passes
    count = 0
    for i in range(n_best):
        if min_relative > 0 and top > 0 and best_value[i] < min_relative * top:
            break
        count += 1
    for i in range(k):
        if i < count:
            centers[i, 0] = best_index[i] // w
            centers[i, 1] = best_index[i] % w
            values[i] = best_value[i]
        else:
            centers[i, 0] = -1
            centers[i, 1] = -1
            values[i] = np.nan
    return count


@njit(cache=True, nogil=True)
def _find_maxima(maps, k, s, min_relative, edge, out_centers, out_values, out_counts):
    for n in range(maps.shape[0]):
        out_counts[n] = _maxima_of_map(maps[n], k, s, min_relative, edge, out_centers[n],
                                       out_values[n])


def find_maxima(maps, max_disks, min_spacing, min_relative, edge, out_centers, out_values,
                out_counts):
    """The maxima of every correlation map (N, H, W), ranked (see the module docstring).

    Parameters
    ----------
    maps : float array (N, H, W)
        Zero-mean correlation maps.
    max_disks : int
        ``K``, maxima kept per map at most.
    min_spacing : float
        ``s`` >= 1: a maximum is the largest value within this distance.
    min_relative : float
        Maxima below this share of the map's largest maximum are left out.
    edge : int
        Maxima lie at least this many pixels inside the map.
    out_centers : int32 array (N, K, 2)
        (y, x) of the kept maxima in rank order; -1 beyond the count.
    out_values : float array (N, K)
        Their map values; NaN beyond the count.
    out_counts : int32 array (N,)
    """
    _find_maxima(maps, int(max_disks), float(min_spacing), float(min_relative), int(edge),
                 out_centers, out_values, out_counts)


@njit(cache=True, nogil=True)
def _elevation_near(center, m, height, r_min, r_max):
    """:func:`gpucorr.backends._numba.peak_elevation` with ``r_max``, over the pixels of
    the square around ``center`` that can lie closer than ``r_max`` (the same pixels,
    so the same minimum, without visiting the whole map)."""
    h, w = m.shape
    cy, cx = center
    reach = min(r_max, float(h + w))  # an infinite radius: the whole map
    y0 = max(int(math.floor(cy - reach)), 0)
    y1 = min(int(math.ceil(cy + reach)) + 1, h)
    x0 = max(int(math.floor(cx - reach)), 0)
    x1 = min(int(math.ceil(cx + reach)) + 1, w)
    r_min2 = r_min * r_min
    r_max2 = r_max * r_max
    result = np.float32(np.inf)
    for y in range(y0, y1):
        dy2 = (y - cy) ** 2
        for x in range(x0, x1):
            d2 = dy2 + (x - cx) ** 2
            if d2 < r_min2 or d2 >= r_max2:
                continue
            slope = np.float32((height - m[y, x]) / math.sqrt(d2))
            if slope < result:
                result = slope
    return max(np.float32(0), result)


@njit(cache=True, nogil=True)
def _evaluate_at(maps, centers, counts, offsets, radius, out_refineds, out_heights,
                 out_elevations):
    n_maps, k = centers.shape[0], centers.shape[1]
    for n in range(n_maps):
        m = maps[n]
        for i in range(k):
            if i >= counts[n]:
                out_refineds[n, i, 0] = np.nan
                out_refineds[n, i, 1] = np.nan
                out_heights[n, i] = np.nan
                out_elevations[n, i] = np.nan
                continue
            cy = centers[n, i, 0]
            cx = centers[n, i, 1]
            ry, rx = refine_center((cy, cx), 2, m)
            best = m[cy, cx]
            out_refineds[n, i, 0] = ry
            out_refineds[n, i, 1] = rx
            out_heights[n, i] = best + offsets[n]
            out_elevations[n, i] = _elevation_near((ry, rx), m, best, 1.5, radius)


def evaluate_at(maps, centers, counts, offsets, radius, out_refineds, out_heights,
                out_elevations):
    """Refinement (5x5 centre of mass), height and elevation at given maxima of each map.

    As :func:`gpucorr.backends._numba.evaluate` for one correlation maximum, with
    the elevation taken over the pixels closer than ``radius`` (the disks'
    spacing: farther away lie other disks' peaks). Rows beyond ``counts[n]``
    are NaN.

    Parameters
    ----------
    maps : float array (N, H, W)
    centers : int32 array (N, K, 2)
    counts : int32 array (N,)
    offsets : float64 array (N,)
        The maps' means: height = map value + offset.
    radius : float
    out_refineds : float32 array (N, K, 2)
    out_heights, out_elevations : float32 arrays (N, K)
    """
    _evaluate_at(maps, centers, counts, offsets, float(radius), out_refineds, out_heights,
                 out_elevations)
