"""Mask and template helpers on NumPy arrays.

The functions here build the 2-D weight maps that the match patterns in
:mod:`gpucorr.patterns` correlate with diffraction frames: hard-edged and
antialiased disks and rings, radial gradients, and background-subtracting
templates.  They return the same arrays as the functions of the same name in
``libertem_blobfinder.base.masks`` (version 0.6.1), so existing code can swap
the import.

Conventions
-----------
* Arrays have shape ``(imageSizeY, imageSizeX)``; pixel ``[y, x]`` has its
  centre at integer coordinates ``(y, x)``.
* Hard-edged masks (``antialiased=False``) of :func:`circular` and
  :func:`ring` are boolean; antialiased ones are ``float64``.
* An antialiased outer edge of radius ``R`` gives a pixel at distance
  ``r`` from the centre the weight ``clip(R + 0.5 - r, 0, 1)``, an inner
  edge of radius ``R_i`` the weight ``clip(r - R_i + 0.5, 0, 1)``.  When
  ``R_i < 0.5`` the pixel at the rounded centre (``numpy.round``, halves to
  even) is set to ``1 - R_i``, so a small disk never loses its central
  pixel.

Backends
--------
NumPy only; these helpers build templates once, on the host. Stacks of many
masks (:func:`radial_bins`, :func:`sparse_template_multi_stack`) come as
pydata ``sparse.COO`` arrays where most of their values are zero.
"""
import math
import numbers

import numpy as np

__all__ = [
    "polar_map",
    "circular",
    "ring",
    "radial_gradient",
    "background_subtraction",
    "radial_gradient_background_subtraction",
    "balance",
    "radial_bins",
    "rectangular",
    "sparse_template_multi_stack",
    "sparse_circular_multi_stack",
    "bounding_radius",
    "gradient_x",
    "gradient_y",
    "make_polar",
]


# ---------------------------------------------------------------------------
# Argument checks shared by the modules of gpucorr that build templates.
# ---------------------------------------------------------------------------

def _is_real_number(value):
    """True for Python and NumPy real scalars, False for bool and the rest."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_real(name, value, *, minimum=None, strict=False):
    """Return ``value`` after checking that it is a finite real number.

    ``minimum`` adds a lower bound, exclusive when ``strict`` is true.
    """
    if not _is_real_number(value):
        raise TypeError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if minimum is not None:
        if strict and not value > minimum:
            raise ValueError(f"{name} must be > {minimum}; got {value!r}")
        if not strict and not value >= minimum:
            raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return value


def _check_size(name, value):
    """Return ``int(value)`` after checking that it is a positive integer."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be a positive int; got {value!r} of type {type(value).__name__}"
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _check_shape(sig_shape, name="sig_shape"):
    """Return ``sig_shape`` as a tuple of two positive Python ints."""
    try:
        items = tuple(sig_shape)
    except TypeError:
        raise TypeError(
            f"{name} must be a sequence of two positive ints; got {sig_shape!r}"
        ) from None
    if len(items) != 2:
        raise ValueError(
            f"{name} must have two entries (height, width); got {sig_shape!r}"
        )
    for item in items:
        if not isinstance(item, numbers.Integral) or isinstance(item, (bool, np.bool_)):
            raise TypeError(
                f"{name} must contain two positive ints; got {sig_shape!r}"
            )
        if item <= 0:
            raise ValueError(
                f"{name} must contain two positive ints; got {sig_shape!r}"
            )
    return tuple(int(item) for item in items)


def _check_real_array(name, value, *, ndim=None):
    """Return ``value`` as an ndarray after checking dtype, ndim and finiteness.

    Boolean, integer and floating dtypes are accepted; complex and
    non-numeric ones raise :class:`TypeError`.  The array is not copied.
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be a real-valued array; got {value!r}") from exc
    if arr.dtype.kind not in "biuf":
        kind = "complex" if arr.dtype.kind == "c" else "non-numeric"
        raise TypeError(
            f"{name} must be a real-valued array (bool, int or float); "
            f"got {kind} dtype {arr.dtype}"
        )
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array; got {arr.ndim}-D array of shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values; got NaN or Inf")
    return arr


def _check_geometry(centerX, centerY, imageSizeX, imageSizeY):
    _check_real("centerX", centerX)
    _check_real("centerY", centerY)
    return _check_size("imageSizeX", imageSizeX), _check_size("imageSizeY", imageSizeY)


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

def _offsets(centerX, centerY, imageSizeX, imageSizeY):
    """Column vector of y offsets and row vector of x offsets from the centre."""
    dy = (np.arange(imageSizeY) - centerY)[:, np.newaxis]
    dx = (np.arange(imageSizeX) - centerX)[np.newaxis, :]
    return dy, dx


def _ring_profile(r, radius, radius_inner):
    """Antialiased weight of a ring from ``radius_inner`` to ``radius`` at distance ``r``.

    The band is a triangle-topped box: weight 1 well inside the band, falling
    linearly to 0 over one pixel centred on each edge.
    """
    width = radius - radius_inner
    middle = radius_inner + width / 2
    return np.maximum(0, np.minimum(1, width / 2 + 0.5 - np.abs(r - middle)))


def _patch_center(mask, centerX, centerY, radius_inner):
    """Set the pixel at the rounded centre to ``1 - radius_inner`` for small inner radii.

    The linear edge profile would give that pixel less than full weight when
    the inner edge sits inside it.
    """
    if radius_inner < 0.5:
        yy = int(np.round(centerY))
        xx = int(np.round(centerX))
        if 0 <= yy < mask.shape[0] and 0 <= xx < mask.shape[1]:
            mask[yy, xx] = 1 - radius_inner
    return mask


def _antialiased_ring(centerX, centerY, imageSizeX, imageSizeY, radius, radius_inner):
    r, _ = polar_map(centerX, centerY, imageSizeX, imageSizeY)
    mask = _ring_profile(r, radius, radius_inner).astype(np.float64, copy=False)
    return _patch_center(mask, centerX, centerY, radius_inner)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------

def polar_map(centerX, centerY, imageSizeX, imageSizeY, stretchY=1., angle=0.):
    """Distance and direction of every pixel as seen from a centre point.

    Parameters
    ----------
    centerX, centerY : float
        Origin of the polar coordinates in pixel coordinates.
    imageSizeX, imageSizeY : int
        Width and height of the maps in pixels.
    stretchY : float, optional
        Divide the coordinate along direction ``angle`` by this factor, so
        that iso-radius lines become ellipses elongated by ``stretchY`` in
        that direction. Must not be zero. Default 1 (no distortion).
    angle : float, optional
        Direction of the stretch in radians; 0 is the y axis. Default 0.

    Returns
    -------
    radius, angle : numpy.ndarray
        Two ``float64`` arrays of shape ``(imageSizeY, imageSizeX)``: the
        (possibly distorted) distance from the centre and the angle
        ``arctan2(dy, dx)`` in radians.

    Raises
    ------
    TypeError
        If a size is not an int or a coordinate is not a real number.
    ValueError
        If a size is not positive, a value is not finite or ``stretchY`` is 0.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> r, phi = polar_map(centerX=1, centerY=1, imageSizeX=3, imageSizeY=3)
    >>> r.round(3)
    array([[1.414, 1.   , 1.414],
           [1.   , 0.   , 1.   ],
           [1.414, 1.   , 1.414]])
    >>> phi[1, 2], phi[2, 1].round(4)
    (np.float64(0.0), np.float64(1.5708))
    """
    imageSizeX, imageSizeY = _check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    _check_real("stretchY", stretchY)
    _check_real("angle", angle)
    if stretchY == 0:
        raise ValueError(f"stretchY must be non-zero; got {stretchY!r}")
    dy, dx = _offsets(centerX, centerY, imageSizeX, imageSizeY)
    dy, dx = np.broadcast_arrays(dy, dx)
    if stretchY != 1.0 or angle != 0.:
        cos, sin = np.cos(angle), np.sin(angle)
        dy, dx = (dy * cos - dx * sin) / stretchY, dx * cos + dy * sin
    dy = dy.astype(np.float64)
    dx = dx.astype(np.float64)
    radius = np.sqrt(dy * dy + dx * dx)
    phi = np.arctan2(dy, dx)
    return radius, phi


def circular(centerX, centerY, imageSizeX, imageSizeY, radius, antialiased=False):
    """Disk of a given radius around a centre point.

    Parameters
    ----------
    centerX, centerY : float
        Centre of the disk in pixel coordinates.
    imageSizeX, imageSizeY : int
        Width and height of the mask in pixels.
    radius : float
        Radius of the disk in pixels, >= 0.
    antialiased : bool, optional
        If False (default) return a boolean mask of the pixels with
        ``r <= radius``. If True return ``float64`` weights
        ``clip(radius + 0.5 - r, 0, 1)``, with the pixel at the rounded
        centre set to 1.

    Returns
    -------
    numpy.ndarray
        Mask of shape ``(imageSizeY, imageSizeX)``.

    Raises
    ------
    TypeError, ValueError
        For sizes that are not positive ints, or coordinates or radii that
        are not finite real numbers or are negative.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> circular(2, 2, 5, 5, radius=1).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0]])
    >>> circular(2, 2, 5, 5, radius=1, antialiased=True).round(2)
    array([[0.  , 0.  , 0.  , 0.  , 0.  ],
           [0.  , 0.09, 0.5 , 0.09, 0.  ],
           [0.  , 0.5 , 1.  , 0.5 , 0.  ],
           [0.  , 0.09, 0.5 , 0.09, 0.  ],
           [0.  , 0.  , 0.  , 0.  , 0.  ]])
    """
    imageSizeX, imageSizeY = _check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    _check_real("radius", radius, minimum=0)
    if antialiased:
        return _antialiased_ring(centerX, centerY, imageSizeX, imageSizeY, radius, 0)
    dy, dx = _offsets(centerX, centerY, imageSizeX, imageSizeY)
    return dy * dy + dx * dx <= radius * radius


def ring(centerX, centerY, imageSizeX, imageSizeY, radius, radius_inner, antialiased=False):
    """Annulus between an inner and an outer radius.

    Parameters
    ----------
    centerX, centerY : float
        Centre of the ring in pixel coordinates.
    imageSizeX, imageSizeY : int
        Width and height of the mask in pixels.
    radius : float
        Outer radius in pixels.
    radius_inner : float
        Inner radius in pixels, ``0 <= radius_inner <= radius``.
    antialiased : bool, optional
        If False (default) return a boolean mask of the pixels with
        ``radius_inner < r <= radius``. If True return ``float64`` weights
        that fall linearly to zero over one pixel across both edges.

    Returns
    -------
    numpy.ndarray
        Mask of shape ``(imageSizeY, imageSizeX)``.

    Raises
    ------
    TypeError, ValueError
        For invalid sizes, coordinates or radii, or ``radius_inner > radius``.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> ring(2, 2, 5, 5, radius=1.5, radius_inner=0.5).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 0, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    """
    imageSizeX, imageSizeY = _check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    _check_real("radius", radius, minimum=0)
    _check_real("radius_inner", radius_inner, minimum=0)
    if radius_inner > radius:
        raise ValueError(
            f"radius_inner must be <= radius; got radius_inner={radius_inner!r}, "
            f"radius={radius!r}"
        )
    if antialiased:
        return _antialiased_ring(
            centerX, centerY, imageSizeX, imageSizeY, radius, radius_inner
        )
    dy, dx = _offsets(centerX, centerY, imageSizeX, imageSizeY)
    r2 = dy * dy + dx * dx
    return (r2 <= radius * radius) & ~(r2 <= radius_inner * radius_inner)


def radial_gradient(centerX, centerY, imageSizeX, imageSizeY, radius, antialiased=False):
    """Disk whose weight grows linearly from 0 at the centre to 1 at ``radius``.

    Parameters
    ----------
    centerX, centerY : float
        Centre in pixel coordinates.
    imageSizeX, imageSizeY : int
        Width and height of the mask in pixels.
    radius : float
        Radius of the disk in pixels, > 0.
    antialiased : bool, optional
        If False (default) the weight is ``r / radius`` for ``r <= radius``
        and 0 outside. If True the weight is ``r / radius`` up to
        ``radius - 0.5`` and then falls linearly to 0 at ``radius + 0.5``
        (see :func:`radial_gradient_background_subtraction` with
        ``r_outer=0``).

    Returns
    -------
    numpy.ndarray
        ``float64`` array of shape ``(imageSizeY, imageSizeX)``.

    Raises
    ------
    TypeError, ValueError
        For invalid sizes or coordinates, or a radius that is not a finite
        number > 0.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> radial_gradient(2, 2, 5, 5, radius=2).round(2)
    array([[0.  , 0.  , 1.  , 0.  , 0.  ],
           [0.  , 0.71, 0.5 , 0.71, 0.  ],
           [1.  , 0.5 , 0.  , 0.5 , 1.  ],
           [0.  , 0.71, 0.5 , 0.71, 0.  ],
           [0.  , 0.  , 1.  , 0.  , 0.  ]])
    """
    imageSizeX, imageSizeY = _check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    _check_real("radius", radius, minimum=0, strict=True)
    dy, dx = _offsets(centerX, centerY, imageSizeX, imageSizeY)
    r2 = dy * dy + dx * dx
    if antialiased:
        return radial_gradient_background_subtraction(r=np.sqrt(r2), r0=radius, r_outer=0)
    return (r2 <= radius * radius) * (np.sqrt(r2) / radius)


def background_subtraction(centerX, centerY, imageSizeX, imageSizeY, radius, radius_inner,
                           antialiased=False):
    """Disk of radius ``radius_inner`` surrounded by a balancing negative ring.

    The positive disk has the weights of :func:`circular` with
    ``radius_inner``; the ring out to ``radius`` has the weights of
    :func:`ring`, scaled so that the whole template sums to zero. A flat
    background therefore correlates to zero.

    Parameters
    ----------
    centerX, centerY : float
        Centre in pixel coordinates.
    imageSizeX, imageSizeY : int
        Width and height of the mask in pixels.
    radius : float
        Outer radius of the negative ring in pixels.
    radius_inner : float
        Radius of the positive disk in pixels, ``0 <= radius_inner < radius``.
    antialiased : bool, optional
        Use antialiased disk and ring (see :func:`circular`). Default False.

    Returns
    -------
    numpy.ndarray
        ``float64`` array of shape ``(imageSizeY, imageSizeX)``.

    Raises
    ------
    TypeError, ValueError
        For invalid sizes, coordinates or radii, or ``radius <= radius_inner``.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> mask = background_subtraction(3, 3, 7, 7, radius=3, radius_inner=1.5)
    >>> float(mask[3, 3]), float(mask[3, 0].round(3))
    (1.0, -0.45)
    >>> abs(mask.sum()) < 1e-12
    np.True_
    """
    imageSizeX, imageSizeY = _check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    _check_real("radius", radius, minimum=0)
    _check_real("radius_inner", radius_inner, minimum=0)
    if not radius > radius_inner:
        raise ValueError(
            f"radius must be > radius_inner; got radius={radius!r}, "
            f"radius_inner={radius_inner!r}"
        )
    disk = circular(
        centerX, centerY, imageSizeX, imageSizeY, radius_inner, antialiased=antialiased
    )
    annulus = ring(
        centerX, centerY, imageSizeX, imageSizeY, radius, radius_inner, antialiased=antialiased
    )
    return disk - annulus * np.sum(disk) / np.sum(annulus)


def radial_gradient_background_subtraction(r, r0, r_outer, delta=1):
    """Radial gradient inside ``r0`` followed by a negative ring out to ``r_outer``.

    Given the radius of each pixel, the weight is

    * ``r / r0`` for ``r < r0 - delta/2`` (linear gradient),
    * ``(r0 - r) / (delta/2)`` for ``r0 - delta/2 <= r < r0 + delta/2``
      (linear transition from about +1 to -1),
    * ``-1`` for ``r0 + delta/2 <= r <= r_outer``,
    * ``0`` elsewhere.

    Passing the radius map rather than a centre lets the template be drawn
    in distorted coordinates, for example an elliptical map from
    :func:`polar_map` with ``stretchY`` and ``angle``.

    Parameters
    ----------
    r : array_like
        Radius of each pixel, any shape, real-valued.
    r0 : float
        Radius of the gradient disk in units of ``r``, > 0.
    r_outer : float
        Outer radius of the negative ring in units of ``r``; with
        ``r_outer <= r0 + delta/2`` there is no ring.
    delta : float, optional
        Width of the transition in units of ``r``, >= 0. Default 1.

    Returns
    -------
    numpy.ndarray
        Array of the same shape and dtype as ``r``.

    Raises
    ------
    TypeError, ValueError
        If ``r`` is not a real-valued finite array, or a parameter is not a
        finite number in its allowed range.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> radial_gradient_background_subtraction(
    ...     r=np.arange(8.), r0=4, r_outer=6, delta=2)
    array([ 0.  ,  0.25,  0.5 ,  1.  ,  0.  , -1.  , -1.  ,  0.  ])
    """
    r = np.asarray(r)
    if r.dtype.kind not in "iuf":
        raise TypeError(f"r must be a real-valued array; got dtype {r.dtype}")
    if r.dtype.kind == "f" and not np.all(np.isfinite(r)):
        raise ValueError("r must contain only finite values; got NaN or Inf")
    _check_real("r0", r0, minimum=0, strict=True)
    _check_real("r_outer", r_outer)
    _check_real("delta", delta, minimum=0)
    half = delta / 2
    result = np.zeros_like(r)

    inside = r < r0 - half
    result[inside] = r[inside] / r0

    transition = (r >= r0 - half) & (r < r0 + half)
    result[transition] = (r0 - r[transition]) / half

    outside = (r >= r0 + half) & (r <= r_outer)
    result[outside] = -1
    return result


def balance(template):
    """Scale the negative part of ``template`` so that the whole sums to zero.

    A template balanced this way gives 0 on a uniform background (and, if
    symmetric, on a linear gradient).

    Parameters
    ----------
    template : array_like
        Real weights with positive and negative values.

    Returns
    -------
    numpy.ndarray
        A new float array (``float64`` unless ``template`` is a float array);
        ``template`` is not changed. Without negative values the result equals
        ``template``; without positive values it is all zero.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> balance(np.array([1.0, 2.0, -1.0, -1.0]))
    array([ 1. ,  2. , -1.5, -1.5])
    """
    arr = _check_real_array("template", template)
    dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
    result = arr.astype(dtype, copy=True)
    below = result < 0
    negative = -result[below].sum(dtype=np.float64)
    if negative > 0:
        positive = result[result > 0].sum(dtype=np.float64)
        result[below] *= dtype.type(positive / negative)
    return result


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
    imageSizeX, imageSizeY = _check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    if radius is None:
        radius = bounding_radius(centerX, centerY, imageSizeX, imageSizeY)
    _check_real("radius", radius, minimum=0, strict=True)
    _check_real("radius_inner", radius_inner, minimum=0)
    if not radius_inner < radius:
        raise ValueError(f"radius_inner must be < radius; got radius_inner={radius_inner!r}, "
                         f"radius={radius!r}")
    if n_bins is None:
        n_bins = max(1, int(round(radius - radius_inner)))
    n_bins = _check_size("n_bins", n_bins)
    dtype = np.dtype(np.float64 if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a float dtype; got {dtype}")
    width = (radius - radius_inner) / n_bins
    stack = np.empty((n_bins, imageSizeY, imageSizeX), dtype=dtype)
    r, _ = polar_map(centerX, centerY, imageSizeX, imageSizeY)
    for i in range(n_bins):
        stack[i] = _ring_profile(r, radius_inner + (i + 1) * width, radius_inner + i * width)
    # only the innermost ring gets the centre pixel's weight (see the module's notes)
    _patch_center(stack[0], centerX, centerY, radius_inner)
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
    imageSizeX = _check_size("imageSizeX", imageSizeX)
    imageSizeY = _check_size("imageSizeY", imageSizeY)
    for name, value in (("X", X), ("Y", Y), ("Width", Width), ("Height", Height)):
        if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be an int; got {value!r} of type "
                            f"{type(value).__name__}")
    mask = np.zeros((imageSizeY, imageSizeX), dtype=bool)
    if Width != 0 and Height != 0:
        mask[_span(int(Y), int(Height), imageSizeY), _span(int(X), int(Width), imageSizeX)] = True
    return mask


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
    imageSizeX = _check_size("imageSizeX", imageSizeX)
    imageSizeY = _check_size("imageSizeY", imageSizeY)
    template = _check_real_array("template", template, ndim=2)
    index, ox, oy = (np.asarray(v) for v in (mask_index, offsetX, offsetY))
    for name, arr in (("mask_index", index), ("offsetX", ox), ("offsetY", oy)):
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must be a 1-D sequence of ints; got {arr.dtype} of shape "
                            f"{arr.shape}")
    if not len(index) == len(ox) == len(oy):
        raise ValueError(f"mask_index, offsetX and offsetY must have one length; got "
                         f"{len(index)}, {len(ox)} and {len(oy)}")
    if len(index) and index.min() < 0:
        raise ValueError(f"mask_index must be >= 0; got {int(index.min())}")
    n_masks = int(index.max()) + 1 if len(index) else 0
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


def make_polar(cartesian):
    """:func:`gpucorr.synthetic.make_polar`, also here as in libertem-blobfinder's masks."""
    from gpucorr.synthetic import make_polar as polar
    return polar(cartesian)


def bounding_radius(centerX, centerY, imageSizeX, imageSizeY):
    """A radius around ``(centerX, centerY)`` that covers the whole frame.

    One pixel more than the distance from the centre to the farthest corner of
    the frame's outer edge (``(0, 0)`` to ``(imageSizeY, imageSizeX)``), rounded
    up: an int.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> bounding_radius(3, 4, 10, 12)
    12
    """
    imageSizeX, imageSizeY = _check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    return math.ceil(math.hypot(max(centerX, imageSizeX - centerX),
                                max(centerY, imageSizeY - centerY))) + 1


def gradient_x(imageSizeX, imageSizeY, dtype=np.float32):
    """Each pixel's column index ``x``, shape ``(imageSizeY, imageSizeX)``.

    Examples
    --------
    >>> gradient_x(3, 2)
    array([[0., 1., 2.],
           [0., 1., 2.]], dtype=float32)
    """
    return _index_map(imageSizeX, imageSizeY, dtype, axis=1)


def gradient_y(imageSizeX, imageSizeY, dtype=np.float32):
    """Each pixel's row index ``y``, shape ``(imageSizeY, imageSizeX)``.

    Examples
    --------
    >>> gradient_y(3, 2)
    array([[0., 0., 0.],
           [1., 1., 1.]], dtype=float32)
    """
    return _index_map(imageSizeX, imageSizeY, dtype, axis=0)


def _index_map(imageSizeX, imageSizeY, dtype, axis):
    """Each pixel's index along ``axis`` (0: rows, 1: columns) in ``dtype``."""
    shape = (_check_size("imageSizeY", imageSizeY), _check_size("imageSizeX", imageSizeX))
    return np.indices(shape, dtype=dtype)[axis]


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
    imageSizeX = _check_size("imageSizeX", imageSizeX)
    imageSizeY = _check_size("imageSizeY", imageSizeY)
    _check_real("radius", radius, minimum=0)
    index = np.asarray(mask_index)
    cx = np.asarray(centerX, dtype=np.float64)
    cy = np.asarray(centerY, dtype=np.float64)
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise TypeError(f"mask_index must be a 1-D sequence of ints; got {index.dtype} of "
                        f"shape {index.shape}")
    if not len(index) == len(cx) == len(cy):
        raise ValueError(f"mask_index, centerX and centerY must have one length; got "
                         f"{len(index)}, {len(cx)} and {len(cy)}")
    if len(index) and index.min() < 0:
        raise ValueError(f"mask_index must be >= 0; got {int(index.min())}")
    if not (np.all(np.isfinite(cx)) and np.all(np.isfinite(cy))):
        raise ValueError("centerX and centerY must be finite")
    n_masks = int(index.max()) + 1 if len(index) else 0
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
