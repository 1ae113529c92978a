"""Pixel geometry of the masks: distances from a centre, the antialiased edge profile.

:func:`polar_map` gives each pixel's distance and direction from a centre,
:func:`bounding_radius` a radius that covers a frame, :func:`gradient_x` and
:func:`gradient_y` each pixel's column and row. The helpers here
(:func:`ring_profile`, :func:`patch_center`, :func:`antialiased_ring`) draw the
antialiased edges that :mod:`gpucorr.masks._shapes`, :mod:`gpucorr.masks._stacks`
and :mod:`gpucorr.synthetic` share (see the conventions in :mod:`gpucorr.masks`).
"""
import math

import numpy as np

from gpucorr._validate import check_real, check_size


def check_geometry(centerX, centerY, imageSizeX, imageSizeY):
    """Check a mask's centre (finite reals) and size; return the sizes as ints."""
    check_real("centerX", centerX)
    check_real("centerY", centerY)
    return check_size("imageSizeX", imageSizeX), check_size("imageSizeY", imageSizeY)


def offsets(centerX, centerY, imageSizeX, imageSizeY):
    """Column vector of y offsets and row vector of x offsets from the centre."""
    dy = (np.arange(imageSizeY) - centerY)[:, np.newaxis]
    dx = (np.arange(imageSizeX) - centerX)[np.newaxis, :]
    return dy, dx


def ring_profile(r, radius, radius_inner):
    """Antialiased weight of a ring from ``radius_inner`` to ``radius`` at distance ``r``.

    The band is a triangle-topped box: weight 1 well inside the band, falling
    linearly to 0 over one pixel centred on each edge.
    """
    width = radius - radius_inner
    middle = radius_inner + width / 2
    return np.maximum(0, np.minimum(1, width / 2 + 0.5 - np.abs(r - middle)))


def patch_center(mask, centerX, centerY, radius_inner):
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


def antialiased_ring(centerX, centerY, imageSizeX, imageSizeY, radius, radius_inner):
    """``float64`` mask of the antialiased ring (a disk for ``radius_inner=0``)."""
    r, _ = polar_map(centerX, centerY, imageSizeX, imageSizeY)
    mask = ring_profile(r, radius, radius_inner).astype(np.float64, copy=False)
    return patch_center(mask, centerX, centerY, radius_inner)


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
    imageSizeX, imageSizeY = check_geometry(centerX, centerY, imageSizeX, imageSizeY)
    check_real("stretchY", stretchY)
    check_real("angle", angle)
    if stretchY == 0:
        raise ValueError(f"stretchY must be non-zero; got {stretchY!r}")
    dy, dx = offsets(centerX, centerY, imageSizeX, imageSizeY)
    dy, dx = np.broadcast_arrays(dy, dx)
    if stretchY != 1.0 or angle != 0.:
        cos, sin = np.cos(angle), np.sin(angle)
        dy, dx = (dy * cos - dx * sin) / stretchY, dx * cos + dy * sin
    dy = dy.astype(np.float64)
    dx = dx.astype(np.float64)
    radius = np.sqrt(dy * dy + dx * dx)
    phi = np.arctan2(dy, dx)
    return radius, phi


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
    imageSizeX, imageSizeY = check_geometry(centerX, centerY, imageSizeX, imageSizeY)
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
    """Each pixel's row index ``y``, shape ``(imageSizeY, imageSizeX)``: the transpose of
    :func:`gradient_x` with the sizes swapped.

    >>> gradient_y(3, 2)[:, 0]
    array([0., 1.], dtype=float32)
    >>> bool((gradient_y(3, 2) == gradient_x(2, 3).T).all())
    True
    """
    return _index_map(imageSizeX, imageSizeY, dtype, axis=0)


def _index_map(imageSizeX, imageSizeY, dtype, axis):
    """Each pixel's index along ``axis`` (0: rows, 1: columns) in ``dtype``."""
    shape = (check_size("imageSizeY", imageSizeY), check_size("imageSizeX", imageSizeX))
    return np.indices(shape, dtype=dtype)[axis]
