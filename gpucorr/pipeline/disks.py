"""Per-frame disk detection on a chunk, written once for every backend.

Whole frames are scaled and correlated (:func:`~gpucorr.pipeline.full_maps`); the
kernel set finds each map's maxima (``find_maxima``) and evaluates them
(``evaluate_at``: 5x5 centre of mass, height, elevation); with upsampling, the
square of the map around each maximum (``2 * half`` pixels, periodic like the map)
is refined by the rule of :func:`~gpucorr.pipeline.upsample_positions`; disks
below ``min_elevation`` (or ``min_relative_elevation`` of the frame's highest), or not
higher than ``min_height``, are dropped and the others move up, keeping their rank.
"""
from dataclasses import dataclass

import numpy as np

from gpucorr.pipeline.correlate import LOG_SCALING, Scaling
from gpucorr.pipeline.stages import full_maps, mark_bad
from gpucorr.pipeline.upsample import upsample_positions
from gpucorr.pipeline.workspace import thread_workspace

__all__ = ["DiskSearch", "run_disks", "disk_bytes"]


@dataclass(frozen=True)
class DiskSearch:
    """What :func:`run_disks` looks for (see :func:`gpucorr.find_disks`)."""

    max_disks: int
    min_spacing: float
    min_relative_height: float = 0.0
    min_height: float | None = None
    min_elevation: float = 0.0
    min_relative_elevation: float = 0.0
    edge: int = 0
    factor: int = 1
    half: int = 8
    scaling: Scaling = LOG_SCALING
    quadratic: bool = False


def run_disks(backend, frames, filt, search, out, ws=None):
    """Find and refine the disks of a chunk of frames (N, H, W) into ``out``.

    ``out``: (centers int32 (N, K, 2), positions float32 (N, K, 2), heights
    float32 (N, K), elevations float32 (N, K), counts int32 (N,)), written in place.
    """
    xp = backend.xp
    if ws is None:
        with thread_workspace(xp) as ws:
            return run_disks(backend, frames, filt, search, out, ws)
    centers, positions, heights, elevations, counts = out
    n = frames.shape[0]
    bad = xp.zeros(n, dtype=np.bool_)
    maps, _, offsets = full_maps(backend, frames, filt, bad=bad, ws=ws, scaling=search.scaling)
    values = xp.empty(centers.shape[:2], dtype=maps.dtype)
    backend.find_maxima(maps, search.max_disks, search.min_spacing, 0.0, search.edge, centers,
                        values, counts)
    if search.min_relative_height > 0:
        _threshold(xp, maps, values, centers, counts, search.min_relative_height)
    backend.evaluate_at(maps, centers, counts, offsets, search.min_spacing, positions, heights,
                        elevations)
    if search.factor > 1:
        _upsample(backend, maps, centers, counts, search, positions)
    elif search.quadratic:
        _quadratic(xp, maps, centers, counts, positions)
    if (search.min_elevation > 0 or search.min_relative_elevation > 0
            or search.min_height is not None):
        _drop_low(xp, out, search.min_elevation, search.min_relative_elevation,
                  search.min_height)
    if xp is not np:  # frames with NaN or infinite values: no disks (the CPU raised)
        counts[...] = xp.where(bad, 0, counts)
        mark_bad(xp, xp.repeat(bad, centers.shape[1]), (None, positions.reshape(-1, 2),
                                                         heights.reshape(-1),
                                                         elevations.reshape(-1)))


def _threshold(xp, maps, values, centers, counts, fraction):
    """Keep the maxima whose height above the map's minimum is at least ``fraction`` of the
    highest maximum's (the maxima are ranked: a prefix of each row)."""
    low = maps.min(axis=(1, 2))[:, None].astype(np.float64)
    top = values[:, :1].astype(np.float64)
    keep = (values - low) >= fraction * (top - low)  # NaN (no maximum) compares False
    counts[...] = xp.minimum(counts, keep.sum(axis=1).astype(np.int32))
    gone = xp.arange(values.shape[1])[None, :] >= counts[:, None]
    centers[...] = xp.where(gone[..., None], -1, centers)


def _upsample(backend, maps, centers, counts, search, positions):
    """Positions of the found maxima refined on squares of the map around them."""
    xp = backend.xp
    n, k = centers.shape[:2]
    h, w = maps.shape[1:]
    half = int(search.half)
    valid = xp.arange(k)[None, :] < counts[:, None]
    cy = xp.where(valid, centers[..., 0], 0).astype(np.int64)
    cx = xp.where(valid, centers[..., 1], 0).astype(np.int64)
    offs = xp.arange(-half, half, dtype=np.int64)
    rows = (cy[..., None, None] + offs[:, None]) % h          # (N, K, 2 half, 1)
    cols = (cx[..., None, None] + offs[None, :]) % w          # (N, K, 1, 2 half)
    frame = xp.arange(n, dtype=np.int64)[:, None, None, None]
    squares = maps[frame, rows, cols].reshape(n * k, 2 * half, 2 * half)
    middle = xp.full((n * k, 1, 2), half, dtype=np.int64)
    refined = upsample_positions(backend, squares, middle, search.factor)[:, 0]
    refined = refined.reshape(n, k, 2) - np.float32(half)
    refined[..., 0] += cy
    refined[..., 1] += cx
    positions[...] = xp.where(valid[..., None], refined, np.float32(np.nan))


def _quadratic(xp, maps, centers, counts, positions):
    """Positions of the found maxima at the vertex of the quadratic fitted by least squares
    to each maximum's 3x3 neighbourhood (periodic, like the map), in float64.

    ``f = c + gy y + gx x + hyy y^2 + hxx x^2 + hxy x y`` on ``y, x`` in ``{-1, 0, 1}``
    has the closed form ``gy = (R+ - R-) / 6``, ``hyy = (R+ + R- - 2 R0) / 6`` (``R``: row
    sums; columns likewise) and ``hxy = (f++ - f+- - f-+ + f--) / 4``; the vertex solves
    ``[[2 hyy, hxy], [hxy, 2 hxx]] d = -(gy, gx)``. Where that matrix is not negative
    definite or the vertex lies more than one pixel away, the centre of mass stays.
    """
    n, k = centers.shape[:2]
    h, w = maps.shape[1:]
    valid = xp.arange(k)[None, :] < counts[:, None]
    cy = xp.where(valid, centers[..., 0], 0).astype(np.int64)
    cx = xp.where(valid, centers[..., 1], 0).astype(np.int64)
    offs = xp.arange(-1, 2, dtype=np.int64)
    rows = (cy[..., None, None] + offs[:, None]) % h
    cols = (cx[..., None, None] + offs[None, :]) % w
    frame = xp.arange(n, dtype=np.int64)[:, None, None, None]
    f = maps[frame, rows, cols].astype(np.float64)                # (N, K, 3, 3)
    row = f.sum(axis=3)
    col = f.sum(axis=2)
    gy = (row[..., 2] - row[..., 0]) / 6
    gx = (col[..., 2] - col[..., 0]) / 6
    hyy = (row[..., 2] + row[..., 0] - 2 * row[..., 1]) / 6
    hxx = (col[..., 2] + col[..., 0] - 2 * col[..., 1]) / 6
    hxy = (f[..., 2, 2] - f[..., 2, 0] - f[..., 0, 2] + f[..., 0, 0]) / 4
    det = 4 * hyy * hxx - hxy * hxy
    maximum = (hyy < 0) & (det > 0)
    safe = xp.where(maximum, det, 1.0)
    dy = (-2 * hxx * gy + hxy * gx) / safe
    dx = (-2 * hyy * gx + hxy * gy) / safe
    use = valid & maximum & (xp.abs(dy) <= 1) & (xp.abs(dx) <= 1)
    vertex = xp.stack([cy + dy, cx + dx], axis=-1).astype(np.float32)
    positions[...] = xp.where(use[..., None], vertex, positions)


def _drop_low(xp, out, min_elevation, relative=0.0, min_height=None):
    """Leave out disks of an elevation below ``min_elevation`` and, where ``relative`` > 0,
    below that share of the frame's highest elevation or not above 0, and those whose
    height (as reported) is not above ``min_height``; the rest keep their order."""
    centers, positions, heights, elevations, counts = out
    k = centers.shape[1]
    valid = xp.arange(k)[None, :] < counts[:, None]
    keep = valid & (elevations >= min_elevation)
    if min_height is not None:
        keep &= heights.astype(np.float64) > min_height
    if relative > 0:
        top = xp.where(valid, elevations, 0).max(axis=1)[:, None]      # K >= 1 columns
        keep &= (elevations > 0) & (elevations >= np.float32(relative) * top)
    rows, cols = xp.nonzero(keep)
    dest = (xp.cumsum(keep, axis=1) - 1)[rows, cols]
    moved = [a[rows, cols] for a in (centers, positions, heights, elevations)]
    centers[...] = -1
    for a in (positions, heights, elevations):
        a[...] = np.nan
    for a, values in zip((centers, positions, heights, elevations), moved):
        a[rows, dest] = values
    counts[...] = keep.sum(axis=1)


def disk_bytes(frame_shape, max_disks, rdtype, factor, half):
    """Scratch bytes one frame needs in :func:`run_disks`."""
    r = np.dtype(rdtype).itemsize
    fy, fx = frame_shape
    total = 3 * fy * fx * r + fy * (fx // 2 + 1) * 2 * r + max_disks * (8 + 4 * 4 + r)
    if factor > 1:
        total += max_disks * (2 * half) ** 2 * (r + 16)
    return total
