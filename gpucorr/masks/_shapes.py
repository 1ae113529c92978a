"""Single masks: disks, rings, radial gradients and background-subtracting templates.

:func:`circular`, :func:`ring`, :func:`radial_gradient`,
:func:`background_subtraction` and :func:`radial_gradient_background_subtraction`
draw one 2-D mask each; :func:`balance` scales a template's negative part so
that it sums to zero. Re-exported by :mod:`gpucorr.masks` (see the conventions
there).
"""
import numpy as np

from gpucorr._validate import check_real, check_real_array
from gpucorr.masks._geometry import antialiased_ring, check_geometry, offsets


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
    imageSizeX, imageSizeY = check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    check_real("radius", radius, minimum=0)
    if antialiased:
        return antialiased_ring(centerX, centerY, imageSizeX, imageSizeY, radius, 0)
    dy, dx = offsets(centerX, centerY, imageSizeX, imageSizeY)
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
    imageSizeX, imageSizeY = check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    check_real("radius", radius, minimum=0)
    check_real("radius_inner", radius_inner, minimum=0)
    if radius_inner > radius:
        raise ValueError(
            f"radius_inner must be <= radius; got radius_inner={radius_inner!r}, "
            f"radius={radius!r}"
        )
    if antialiased:
        return antialiased_ring(
            centerX, centerY, imageSizeX, imageSizeY, radius, radius_inner
        )
    dy, dx = offsets(centerX, centerY, imageSizeX, imageSizeY)
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
    imageSizeX, imageSizeY = check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    check_real("radius", radius, minimum=0, strict=True)
    dy, dx = offsets(centerX, centerY, imageSizeX, imageSizeY)
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
    imageSizeX, imageSizeY = check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    check_real("radius", radius, minimum=0)
    check_real("radius_inner", radius_inner, minimum=0)
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
    check_real("r0", r0, minimum=0, strict=True)
    check_real("r_outer", r_outer)
    check_real("delta", delta, minimum=0)
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
    arr = check_real_array("template", template)
    dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
    result = arr.astype(dtype, copy=True)
    below = result < 0
    negative = -result[below].sum(dtype=np.float64)
    if negative > 0:
        positive = result[result > 0].sum(dtype=np.float64)
        result[below] *= dtype.type(positive / negative)
    return result
