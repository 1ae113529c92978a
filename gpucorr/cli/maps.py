"""Context maps of a run, read chunk by chunk: the sum frame, a virtual bright field, elevations.

:func:`sum_frame` adds up all frames (for ``--peaks auto`` and ``--radius
auto``); :func:`central_peak` picks the disk a virtual detector sits on;
:func:`virtual_bright_field` sums each frame over that disk, reading only the
box around it; :func:`elevation_map` is the mean peak elevation per frame. None
of them loads a whole file: frames are read in chunks of at most
``CHUNK_BYTES``.
"""
import math

import numpy as np

__all__ = ["CHUNK_BYTES", "sum_frame", "central_peak", "virtual_bright_field",
           "elevation_map", "first_frame"]

#: bytes of frames (as float64) read at a time
CHUNK_BYTES = 64 * 2**20


def _frames_per_chunk(frame_pixels):
    return max(1, CHUNK_BYTES // (8 * max(1, int(frame_pixels))))


def sum_frame(frames):
    """The sum of all frames ``(..., H, W)`` as float64 ``(H, W)``, read chunk by chunk.

    >>> sum_frame(np.ones((2, 3, 4, 5))).tolist()[0]
    [6.0, 6.0, 6.0, 6.0, 6.0]
    """
    from gpucorr.execution import as_source
    source, _ = as_source(frames)
    total = np.zeros(source.shape[-2:], dtype=np.float64)
    step = _frames_per_chunk(np.prod(source.shape[-2:]))
    for start in range(0, len(source), step):
        chunk = source.chunk(start, min(start + step, len(source)))
        total += np.asarray(chunk, dtype=np.float64).sum(axis=0)
    return total


def first_frame(frames):
    """The first frame as a NumPy array ``(H, W)``.

    >>> first_frame(np.arange(8).reshape(2, 2, 2)).tolist()
    [[0, 1], [2, 3]]
    """
    from gpucorr.execution import as_source
    source, _ = as_source(frames)
    return np.asarray(source.chunk(0, 1))[0]


def central_peak(peaks, indices, shape):
    """The peak a bright-field detector sits on: index ``(0, 0)``, else nearest the centre.

    Parameters
    ----------
    peaks : (P, 2) array
        Peak positions ``(y, x)`` in pixels.
    indices : (P, 2) integer array or None
        Their lattice indices, where known.
    shape : (H, W)
        The frame shape.

    Returns
    -------
    float64 ndarray (2,)

    >>> central_peak(np.array([[5, 5], [16, 15]]), None, (32, 32)).tolist()
    [16.0, 15.0]
    """
    peaks = np.asarray(peaks, dtype=np.float64)
    if indices is not None:
        zero = np.flatnonzero(np.all(np.asarray(indices) == 0, axis=1))
        if zero.size:
            return peaks[zero[0]].copy()
    centre = (np.asarray(shape[-2:], dtype=np.float64) - 1) / 2
    return peaks[np.argmin(np.sum((peaks - centre) ** 2, axis=1))].copy()


def virtual_bright_field(frames, center, radius):
    """The sum of each frame over the disk of ``radius`` px about ``center`` ``(y, x)``.

    Only the box around the disk is read, for a block of frames at a time.

    Parameters
    ----------
    frames : array-like (..., H, W)
        NumPy array or memmap, h5py dataset, zarr or dask array.
    center : (2,) array_like
        The disk centre ``(y, x)`` in pixels.
    radius : float
        The disk radius in pixels (> 0).

    Returns
    -------
    float64 ndarray
        Shaped like the leading (scan) axes of ``frames`` (0-d for one frame).

    Raises
    ------
    ValueError
        A radius that is not > 0, or a disk that lies outside the frame.

    Examples
    --------
    >>> frames = np.ones((2, 3, 16, 16))
    >>> virtual_bright_field(frames, (8, 8), 1.0).tolist()   # 5 pixels within 1 px
    [[5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]
    """
    shape = tuple(int(n) for n in frames.shape)
    if not radius > 0:
        raise ValueError(f"radius must be > 0; got {radius}")
    cy, cx = (float(c) for c in center)
    h, w = shape[-2:]
    y0, y1 = max(math.floor(cy - radius), 0), min(math.ceil(cy + radius) + 1, h)
    x0, x1 = max(math.floor(cx - radius), 0), min(math.ceil(cx + radius) + 1, w)
    if y0 >= y1 or x0 >= x1:
        raise ValueError(f"center {tuple(center)} with radius {radius}: the disk lies outside "
                         f"the {h}x{w} frame")
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2).astype(np.float64)
    lead = shape[:-2]
    # sums of products per frame, not BLAS (tensordot): a frame's sum must not depend on
    # the chunk it is read in
    if not lead:
        return np.asarray(np.sum(np.asarray(frames[y0:y1, x0:x1], dtype=np.float64) * mask))
    out = np.empty(lead, dtype=np.float64)
    per_row = int(np.prod(lead[1:], dtype=np.int64))
    rows = max(1, _frames_per_chunk(mask.size) // max(1, per_row))
    for start in range(0, lead[0], rows):
        stop = min(start + rows, lead[0])
        crop = np.asarray(frames[start:stop, ..., y0:y1, x0:x1], dtype=np.float64)
        out[start:stop] = np.sum(crop * mask, axis=(-2, -1))
    return out


def elevation_map(elevations):
    """The mean elevation over the peaks of each frame: ``(..., P)`` -> ``(...)`` float64.

    Peaks whose elevation is NaN are left out; a frame with none is NaN.

    >>> elevation_map(np.array([[1.0, 3.0], [2.0, np.nan]])).tolist()
    [2.0, 2.0]
    """
    import warnings
    values = np.asarray(elevations, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a frame of NaN only: NaN
        return np.nanmean(values, axis=-1)
