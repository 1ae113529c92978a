"""Stacks of masks: radial bins, rectangles, and sparse stacks of stamped templates.

:func:`radial_bins` tiles an annulus with rings, :func:`rectangular` draws a
rectangle, and :func:`sparse_template_multi_stack` and
:func:`sparse_circular_multi_stack` stamp a template or a disk at many offsets
into the layers of a sparse stack. Re-exported by :mod:`gpucorr.masks`.
"""
import math

import numpy as np

from gpucorr._validate import check_real, check_real_array, check_size, is_int
from gpucorr.masks._geometry import (
    bounding_radius, check_geometry, patch_center, polar_map, ring_profile,
)

#: a stack of masks comes as sparse.COO when fewer than this share of its values are
#: non-zero (and use_sparse is None)
SPARSE_DENSITY = 0.125


def _maybe_sparse(stack, use_sparse):
    """``stack`` as ``sparse.COO`` where ``use_sparse`` (None: where it is sparse enough)."""
    if use_sparse is None:
        use_sparse = np.count_nonzero(stack) < SPARSE_DENSITY * stack.size
    if not use_sparse:
        return stack
    import sparse
    return sparse.COO.from_numpy(stack)


def radial_bins(centerX, centerY, imageSizeX, imageSizeY, radius=None, radius_inner=0,
                n_bins=None, normalize=False, use_sparse=None, dtype=None):
    """A stack of ``n_bins`` antialiased rings that tile ``radius_inner .. radius``.

    Ring ``i`` has the antialiased profile of ``ring(..., radius=radius_inner + (i + 1)
    w, radius_inner=radius_inner + i w, antialiased=True)`` with ``w = (radius -
    radius_inner) / n_bins``; only the innermost ring takes the centre pixel's
    weight where its inner radius is below 0.5 px (as :func:`ring` does). The
    rings' antialiased edges complement each other, so the stack sums to 1 at
    every pixel between the first ring's inner and the last ring's outer edge
    that is over a pixel away from the centre. Applied to frames (e.g. LiberTEM's
    ``ApplyMasksUDF``) it gives radial profiles.

    Parameters
    ----------
    centerX, centerY : float
        Centre in pixel coordinates.
    imageSizeX, imageSizeY : int
        Width and height of each mask.
    radius : float, optional
        Outer radius of the last ring; default :func:`bounding_radius`, so that
        the rings cover the whole frame.
    radius_inner : float, optional
        Inner radius of the first ring (default 0).
    n_bins : int, optional
        Number of rings; default ``round(radius - radius_inner)`` (rings about
        1 px wide), at least 1.
    normalize : bool, optional
        Divide each ring by its sum (rings that hold no pixel stay zero).
    use_sparse : bool, optional
        Return a pydata ``sparse.COO`` stack (True) or a NumPy array (False);
        default: sparse where fewer than :data:`SPARSE_DENSITY` of the values are
        non-zero.
    dtype : dtype, optional
        Float dtype of the result (default ``float64``).

    Returns
    -------
    numpy.ndarray or sparse.COO
        Shape ``(n_bins, imageSizeY, imageSizeX)``.

    Notes
    -----
    Backends: NumPy (and pydata sparse) only.

    Examples
    --------
    >>> bins = radial_bins(8, 8, 17, 17, n_bins=4)
    >>> bins.shape, bool(np.allclose(bins.sum(axis=0), 1))
    ((4, 17, 17), True)
    """
    imageSizeX, imageSizeY = check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    if radius is None:
        radius = bounding_radius(centerX, centerY, imageSizeX, imageSizeY)
    check_real("radius", radius, minimum=0, strict=True)
    check_real("radius_inner", radius_inner, minimum=0)
    if not radius_inner < radius:
        raise ValueError(f"radius_inner must be < radius; got radius_inner={radius_inner!r}, "
                         f"radius={radius!r}")
    if n_bins is None:
        n_bins = max(1, int(round(radius - radius_inner)))
    n_bins = check_size("n_bins", n_bins)
    dtype = np.dtype(np.float64 if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a float dtype; got {dtype}")
    width = (radius - radius_inner) / n_bins
    stack = np.empty((n_bins, imageSizeY, imageSizeX), dtype=dtype)
    r, _ = polar_map(centerX, centerY, imageSizeX, imageSizeY)
    for i in range(n_bins):
        stack[i] = ring_profile(r, radius_inner + (i + 1) * width, radius_inner + i * width)
    # only the innermost ring gets the centre pixel's weight (see the module's notes)
    patch_center(stack[0], centerX, centerY, radius_inner)
    if normalize:
        sums = stack.sum(axis=(1, 2), dtype=np.float64)
        nonzero = sums != 0
        stack[nonzero] /= sums[nonzero, np.newaxis, np.newaxis].astype(dtype)
    return _maybe_sparse(stack, use_sparse)


def _span(start, extent, size):
    """Pixels ``start .. start + extent`` (``extent`` < 0: leftwards), clipped to
    ``0 .. size``, as a slice."""
    lo, hi = (start, start + extent) if extent >= 0 else (start + extent + 1, start + 1)
    return slice(min(max(lo, 0), size), min(max(hi, 0), size))


def rectangular(X, Y, Width, Height, imageSizeX, imageSizeY):
    """Boolean mask of a ``Width`` x ``Height`` rectangle with a corner at ``(X, Y)``.

    The rectangle covers ``|Width|`` columns from column ``X`` (rightwards for a
    positive, leftwards for a negative ``Width``) and ``|Height|`` rows from row
    ``Y`` (downwards, or upwards for a negative ``Height``), clipped to the
    image; a zero ``Width`` or ``Height`` gives an empty mask.
    libertem-blobfinder 0.6.1 sets one column and one row more than asked
    (``|Width| + 1`` by ``|Height| + 1`` pixels).

    Parameters
    ----------
    X, Y : int
        Column and row of the corner pixel.
    Width, Height : int
        Signed extent in pixels.
    imageSizeX, imageSizeY : int
        Width and height of the mask.

    Returns
    -------
    numpy.ndarray of bool
        Shape ``(imageSizeY, imageSizeX)``.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> rectangular(1, 0, 2, 3, 4, 4).astype(int)
    array([[0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    >>> rectangular(1, 0, -2, 1, 4, 2).astype(int)
    array([[1, 1, 0, 0],
           [0, 0, 0, 0]])
    """
    imageSizeX = check_size("imageSizeX", imageSizeX)
    imageSizeY = check_size("imageSizeY", imageSizeY)
    for name, value in (("X", X), ("Y", Y), ("Width", Width), ("Height", Height)):
        if not is_int(value):
            raise TypeError(f"{name} must be an int; got {value!r} of type "
                            f"{type(value).__name__}")
    mask = np.zeros((imageSizeY, imageSizeX), dtype=bool)
    if Width != 0 and Height != 0:
        mask[_span(int(Y), int(Height), imageSizeY), _span(int(X), int(Width), imageSizeX)] = True
    return mask


def _check_ints(name, arr):
    """Raise TypeError unless ``arr`` is a 1-D integer array."""
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a 1-D sequence of ints; got {arr.dtype} of shape "
                        f"{arr.shape}")


def _layer_count(index, first, second):
    """Number of layers of a stack stamped at ``index`` (``mask_index``, >= 0), with the
    per-stamp ``(name, array)`` pairs ``first`` and ``second`` of the same length."""
    (name1, arr1), (name2, arr2) = first, second
    if not len(index) == len(arr1) == len(arr2):
        raise ValueError(f"mask_index, {name1} and {name2} must have one length; got "
                         f"{len(index)}, {len(arr1)} and {len(arr2)}")
    if len(index) and index.min() < 0:
        raise ValueError(f"mask_index must be >= 0; got {int(index.min())}")
    return int(index.max()) + 1 if len(index) else 0


def sparse_template_multi_stack(mask_index, offsetX, offsetY, template, imageSizeX,
                                imageSizeY):
    """A sparse stack of masks, each a copy of ``template`` at an offset.

    Mask ``mask_index[i]`` holds ``template`` with its top-left pixel at column
    ``offsetX[i]`` and row ``offsetY[i]``, clipped to the image (offsets may be
    negative or beyond the image). Several entries may stamp into the same mask;
    their values add up.

    Parameters
    ----------
    mask_index, offsetX, offsetY : array_like of int, shape (n,)
        Layer and top-left corner of each stamp.
    template : array_like, shape (h, w)
        The weights to stamp.
    imageSizeX, imageSizeY : int
        Width and height of each mask.

    Returns
    -------
    sparse.COO
        Shape ``(max(mask_index) + 1, imageSizeY, imageSizeX)``, the dtype of
        ``template``.

    Notes
    -----
    Backends: NumPy and pydata sparse only.

    Examples
    --------
    >>> stack = sparse_template_multi_stack([0, 1], [0, 2], [1, 0], np.ones((2, 2)), 4, 3)
    >>> stack.todense().astype(int)
    array([[[0, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 0, 0]],
    <BLANKLINE>
           [[0, 0, 1, 1],
            [0, 0, 1, 1],
            [0, 0, 0, 0]]])
    """
    import sparse
    imageSizeX = check_size("imageSizeX", imageSizeX)
    imageSizeY = check_size("imageSizeY", imageSizeY)
    template = check_real_array("template", template, ndim=2)
    index, ox, oy = (np.asarray(v) for v in (mask_index, offsetX, offsetY))
    for name, arr in (("mask_index", index), ("offsetX", ox), ("offsetY", oy)):
        _check_ints(name, arr)
    n_masks = _layer_count(index, ("offsetX", ox), ("offsetY", oy))
    h, w = template.shape
    ty, tx = np.nonzero(template)
    values = template[ty, tx]
    layers, rows, cols, data = [], [], [], []
    for i, y0, x0 in zip(index.tolist(), oy.tolist(), ox.tolist()):
        y, x = ty + y0, tx + x0
        keep = (y >= 0) & (y < imageSizeY) & (x >= 0) & (x < imageSizeX)
        layers.append(np.full(np.count_nonzero(keep), i))
        rows.append(y[keep])
        cols.append(x[keep])
        data.append(values[keep])
    coords = np.stack([np.concatenate(a) if a else np.zeros(0, np.int64)
                       for a in (layers, rows, cols)])
    data = np.concatenate(data) if data else np.zeros(0, template.dtype)
    return sparse.COO(coords, data.astype(template.dtype, copy=False),
                      shape=(n_masks, imageSizeY, imageSizeX))


def sparse_circular_multi_stack(mask_index, centerX, centerY, imageSizeX, imageSizeY,
                                radius):
    """A sparse boolean stack of hard-edged disks: layer ``mask_index[i]`` holds the disk
    of ``radius`` around ``(centerY[i], centerX[i])`` (as :func:`circular`), clipped to
    the image; disks in one layer are combined (logical or).

    libertem-blobfinder 0.6.1 draws each disk around the integer part of its
    centre instead (``int(centerX)``, ``int(centerY)``); for integer centres both
    agree.

    Returns
    -------
    sparse.COO of bool
        Shape ``(max(mask_index) + 1, imageSizeY, imageSizeX)``.

    Notes
    -----
    Backends: NumPy and pydata sparse only.

    Examples
    --------
    >>> stack = sparse_circular_multi_stack([0, 1], [2, 5], [2, 1], 8, 5, 1)
    >>> stack.todense().astype(int)[1]
    array([[0, 0, 0, 0, 0, 1, 0, 0],
           [0, 0, 0, 0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0]])
    """
    import sparse
    imageSizeX = check_size("imageSizeX", imageSizeX)
    imageSizeY = check_size("imageSizeY", imageSizeY)
    check_real("radius", radius, minimum=0)
    index = np.asarray(mask_index)
    cx = np.asarray(centerX, dtype=np.float64)
    cy = np.asarray(centerY, dtype=np.float64)
    _check_ints("mask_index", index)
    n_masks = _layer_count(index, ("centerX", cx), ("centerY", cy))
    if not (np.all(np.isfinite(cx)) and np.all(np.isfinite(cy))):
        raise ValueError("centerX and centerY must be finite")
    coords = set()
    r = int(math.ceil(radius))
    for i, x0, y0 in zip(index.tolist(), cx.tolist(), cy.tolist()):
        ys = np.arange(max(0, math.floor(y0) - r), min(imageSizeY, math.ceil(y0) + r + 1))
        xs = np.arange(max(0, math.floor(x0) - r), min(imageSizeX, math.ceil(x0) + r + 1))
        if not (len(ys) and len(xs)):
            continue
        dy, dx = ys[:, np.newaxis] - y0, xs[np.newaxis, :] - x0
        inside = dy * dy + dx * dx <= radius * radius
        for yy, xx in zip(*np.nonzero(inside)):
            coords.add((i, int(ys[yy]), int(xs[xx])))
    coords = np.array(sorted(coords), dtype=np.int64).reshape(-1, 3).T
    return sparse.COO(coords, np.ones(coords.shape[1], dtype=bool),
                      shape=(n_masks, imageSizeY, imageSizeX))
