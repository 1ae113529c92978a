"""CPU kernel (numba) of DFT upsampling: the maximum of each map's trigonometric
interpolant near a position.

The rule is stated in :func:`gpucorr.pipeline.upsample_positions`;
``kernels/upsample.cu`` is the same computation, each sum in the same order.
Part of the numba kernel set (:mod:`gpucorr.backends._numba` exports
:func:`upsample`).
"""
import math

import numpy as np
from numba import njit

__all__ = ["upsample"]

@njit(cache=True, nogil=True)
def _kernel_rows(table, n, t, coefs, rows):
    """``rows[i, a]``: the ``i``-th derivative (i = 0, 1, 2) of the interpolation kernel
    ``D(t - a) = (1/n) sum_k w_k cos(omega_k (t - a))`` for ``a < n``.

    ``table`` is ``[cos(omega_k a); sin(omega_k a)]`` (2 (K + 1), n); the sums run
    over the table's rows in order.
    """
    k1 = table.shape[0] // 2
    for k in range(k1):
        omega = 2.0 * math.pi * k / n
        weight = (1.0 if k == 0 or 2 * k == n else 2.0) / n
        c = weight * math.cos(omega * t)
        s = weight * math.sin(omega * t)
        coefs[0, k] = c
        coefs[0, k1 + k] = s
        coefs[1, k] = -omega * s
        coefs[1, k1 + k] = omega * c
        coefs[2, k] = -omega * omega * c
        coefs[2, k1 + k] = -omega * omega * s
    for i in range(3):
        for a in range(n):
            rows[i, a] = 0.0
    for k in range(2 * k1):
        for i in range(3):
            cf = coefs[i, k]
            for a in range(n):
                rows[i, a] += cf * table[k, a]


@njit(cache=True, nogil=True)
def _interpolant(m, ty, tx, table_y, table_x, coefs, ky, kx, cols):
    """Value, gradient and Hessian of map ``m``'s interpolant at ``(ty, tx)`` (float64):
    ``(f, gy, gx, hyy, hxx, hxy)``."""
    h, w = m.shape
    _kernel_rows(table_y, h, ty, coefs, ky)
    _kernel_rows(table_x, w, tx, coefs, kx)
    for i in range(3):
        for x in range(w):
            cols[i, x] = 0.0
    for y in range(h):
        for i in range(3):
            d = ky[i, y]
            for x in range(w):
                cols[i, x] += d * m[y, x]
    f = gy = gx = hyy = hxx = hxy = 0.0
    for x in range(w):
        f += cols[0, x] * kx[0, x]
        gx += cols[0, x] * kx[1, x]
        hxx += cols[0, x] * kx[2, x]
        gy += cols[1, x] * kx[0, x]
        hxy += cols[1, x] * kx[1, x]
        hyy += cols[2, x] * kx[0, x]
    return f, gy, gx, hyy, hxx, hxy


@njit(cache=True, nogil=True)
def _climb(m, ty, tx, lo_y, hi_y, lo_x, hi_x, radius, iterations, tolerance, table_y,
           table_x, coefs, ky, kx, cols):
    """Newton's method with a trust region for the interpolant's maximum from ``(ty, tx)``
    within the box ``[lo_y, hi_y] x [lo_x, hi_x]``; returns ``(ty, tx, value)``.

    A step is the Newton step where the Hessian is negative definite, else a
    gradient-ascent step of length ``radius``; an axis on the box's edge whose
    gradient points out of the box is held there (a 1-D step along the other
    axis). The step is shortened to at most ``radius`` along each axis and
    clipped to the box. A step that raises the
    value is taken (and the radius doubled if the step had been shortened);
    otherwise the radius shrinks to a quarter of the step tried. The search
    ends at a step of at most ``tolerance`` or after ``iterations`` steps.
    """
    f, gy, gx, hyy, hxx, hxy = _interpolant(m, ty, tx, table_y, table_x, coefs, ky, kx, cols)
    for _ in range(iterations):
        # an axis on the box's edge with the gradient pointing out stays there
        held_y = (ty <= lo_y and gy < 0.0) or (ty >= hi_y and gy > 0.0)
        held_x = (tx <= lo_x and gx < 0.0) or (tx >= hi_x and gx > 0.0)
        det = hyy * hxx - hxy * hxy
        if held_y and held_x:
            break
        elif held_y:
            sy = 0.0
            sx = -gx / hxx if hxx < 0.0 else math.copysign(radius, gx)
        elif held_x:
            sx = 0.0
            sy = -gy / hyy if hyy < 0.0 else math.copysign(radius, gy)
        elif hyy < 0.0 and hxx < 0.0 and det > 0.0:
            sy = -(hxx * gy - hxy * gx) / det
            sx = -(hyy * gx - hxy * gy) / det
        else:
            g = math.sqrt(gy * gy + gx * gx)
            if not g > 0.0:
                break
            sy = radius * gy / g
            sx = radius * gx / g
        longest = max(abs(sy), abs(sx))
        if longest > radius:
            sy *= radius / longest
            sx *= radius / longest
        ny = min(max(ty + sy, lo_y), hi_y)
        nx = min(max(tx + sx, lo_x), hi_x)
        moved = max(abs(ny - ty), abs(nx - tx))
        if not moved > tolerance:
            break
        fn, gyn, gxn, hyyn, hxxn, hxyn = _interpolant(m, ny, nx, table_y, table_x, coefs,
                                                      ky, kx, cols)
        if fn > f:
            ty, tx, f, gy, gx, hyy, hxx, hxy = ny, nx, fn, gyn, gxn, hyyn, hxxn, hxyn
            if longest > radius:
                radius *= 2.0
        else:
            radius = 0.25 * moved
            if not radius > tolerance:
                break
    return ty, tx, f


@njit(cache=True, nogil=True)
def _grid_candidates(grid, n_best, best_index, best_value):
    """The grid's local maxima (>= each neighbour), largest first, ties in C order: the
    first ``n_best`` into ``best_index``/``best_value``; returns how many."""
    u = grid.shape[0]
    found = 0
    for a in range(u):
        for c in range(u):
            v = grid[a, c]
            if not v == v:  # NaN
                continue
            peak = True
            for da in range(-1, 2):
                for dc in range(-1, 2):
                    aa = a + da
                    cc = c + dc
                    if (da != 0 or dc != 0) and 0 <= aa < u and 0 <= cc < u:
                        if not v >= grid[aa, cc]:
                            peak = False
            if not peak:
                continue
            # insert after every candidate at least as large (earlier ones win ties)
            j = found if found < n_best else n_best
            while j > 0 and v > best_value[j - 1]:
                j -= 1
            if j >= n_best:
                continue
            last = found if found < n_best else n_best - 1
            for i in range(last, j, -1):
                best_index[i] = best_index[i - 1]
                best_value[i] = best_value[i - 1]
            best_index[j] = a * u + c
            best_value[j] = v
            if found < n_best:
                found += 1
    return found


@njit(cache=True, nogil=True)
def upsample(maps, positions, factor, grid_y, grid_x, table_y, table_x, candidates,
             iterations, tolerance, out):
    """The maximum of each map's DFT interpolant in the search region around each position.

    See :func:`gpucorr.pipeline.upsample_positions` for the rule.

    Parameters
    ----------
    maps : float array (B, H, W), C-contiguous
    positions : int64 array (B, Q, 2)
        Integer (y, x) positions, the centres of the search regions.
    factor : int
        The grid spacing is ``1 / factor``.
    grid_y, grid_x : float64 arrays (U, H), (U, W)
        The interpolation kernel on the grid (``gpucorr.pipeline.upsample._interpolation_kernel``).
    table_y, table_x : float64 arrays (2 (H // 2 + 1), H), (2 (W // 2 + 1), W)
        ``gpucorr.pipeline.upsample._harmonics``.
    candidates, iterations : int
    tolerance : float
    out : float32 array (B, Q, 2)
        The refined positions.
    """
    n_maps, h, w = maps.shape
    n_pos = positions.shape[1]
    u = grid_y.shape[0]
    half = u // 2
    rows = np.empty((u, w))
    grid = np.empty((u, u))
    kernel_x = np.empty((w, u))
    coefs = np.empty((3, max(table_y.shape[0], table_x.shape[0])))
    ky = np.empty((3, h))
    kx = np.empty((3, w))
    cols = np.empty((3, w))
    best_index = np.empty(candidates, dtype=np.int64)
    best_value = np.empty(candidates)
    lo = -half / factor
    hi = (u - 1 - half) / factor
    m64 = np.empty((h, w))
    for b in range(n_maps):
        m = maps[b]
        for y in range(h):
            for x in range(w):
                m64[y, x] = m[y, x]  # exact: float32 and float64 maps
        for q in range(n_pos):
            py = positions[b, q, 0] % h
            px = positions[b, q, 1] % w
            # the grid: rows[a, x] = sum_y grid_y[a, y - py] m[y, x], then over x
            for a in range(u):
                row = rows[a]
                for x in range(w):
                    row[x] = 0.0
                for y in range(h):
                    d = grid_y[a, (y - py) % h]
                    src = m64[y]
                    for x in range(w):
                        row[x] += d * src[x]
            for x in range(w):
                xx = (x - px) % w
                for c in range(u):
                    kernel_x[x, c] = grid_x[c, xx]
            for a in range(u):
                for c in range(u):
                    grid[a, c] = 0.0
                for x in range(w):
                    r = rows[a, x]
                    for c in range(u):
                        grid[a, c] += r * kernel_x[x, c]
            found = _grid_candidates(grid, candidates, best_index, best_value)
            dy = 0.0
            dx = 0.0
            best = -np.inf
            for j in range(found):
                a = best_index[j] // u
                c = best_index[j] % u
                ty, tx, value = _climb(m64, py + (a - half) / factor, px + (c - half) / factor,
                                       py + lo, py + hi, px + lo, px + hi, 1.0 / factor,
                                       iterations, tolerance, table_y, table_x, coefs, ky,
                                       kx, cols)
                if value > best:
                    best = value
                    dy = ty - py
                    dx = tx - px
            out[b, q, 0] = positions[b, q, 0] + dy
            out[b, q, 1] = positions[b, q, 1] + dx
