"""Synthetic convergent-beam electron diffraction (CBED) frames for tests and demos.

:func:`cbed_frame` draws antialiased disks on a 2-D lattice. Without a dose
it gives the same pixel values as ``libertem_blobfinder.base.utils.cbed_frame``
(version 0.6.1); with ``dose`` it turns the frame into Poisson counts.

The helpers convert between polar and Cartesian vectors and select lattice
points inside a frame; they behave like the functions of the same names in
``libertem_blobfinder.base.utils``.

Backends
--------
NumPy only.
"""
import numpy as np

from gpucorr._validate import check_real, check_size
from gpucorr.masks._geometry import ring_profile

__all__ = [
    "cbed_frame",
    "make_polar",
    "make_cartesian",
    "calc_coords",
    "within_frame",
    "frame_peaks",
    "regularize_indices",
]


def make_cartesian(polar):
    """Convert polar vectors ``(r, phi)`` to Cartesian vectors ``(y, x)``.

    Parameters
    ----------
    polar : array_like
        Array of shape ``(..., 2)`` holding ``(r, phi)`` with ``phi`` in
        radians, measured from the x axis towards the y axis.

    Returns
    -------
    numpy.ndarray
        Array of the same shape holding ``(r sin(phi), r cos(phi))``.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> make_cartesian(np.array([[2, 0], [1, np.pi / 2]])).round(6)
    array([[0., 2.],
           [1., 0.]])
    """
    polar = np.asarray(polar)
    r = polar[..., 0]
    phi = polar[..., 1]
    return np.stack((np.sin(phi) * r, np.cos(phi) * r), axis=-1)


def make_polar(cartesian):
    """Convert Cartesian vectors ``(y, x)`` to polar vectors ``(r, phi)``.

    Parameters
    ----------
    cartesian : array_like
        Array of shape ``(..., 2)`` holding ``(y, x)``.

    Returns
    -------
    numpy.ndarray
        Array of the same shape holding the length ``r`` and the angle
        ``phi = arctan2(y, x)`` in radians.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> make_polar(np.array([[0, 2], [3, 0]])).round(4)
    array([[2.    , 0.    ],
           [3.    , 1.5708]])
    """
    cartesian = np.asarray(cartesian)
    y = cartesian[..., 0]
    x = cartesian[..., 1]
    return np.stack((np.linalg.norm(cartesian, axis=-1), np.arctan2(y, x)), axis=-1)


def regularize_indices(indices):
    """Bring lattice indices into the shape ``(n, 2)``.

    Parameters
    ----------
    indices : numpy.ndarray
        Either a list of ``(i, j)`` pairs of shape ``(n, 2)``, returned
        unchanged, or a grid of shape ``(2, n, m)`` as made by
        ``numpy.mgrid``, flattened into ``n * m`` pairs with the first grid
        axis varying fastest.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(n, 2)``.

    Raises
    ------
    ValueError
        For any other shape.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> regularize_indices(np.mgrid[0:2, 0:2])
    array([[0, 0],
           [1, 0],
           [0, 1],
           [1, 1]])
    """
    indices = np.asarray(indices)
    shape = indices.shape
    if len(shape) == 3 and shape[0] == 2:
        return indices.T.reshape(-1, 2)
    if len(shape) == 2 and shape[1] == 2:
        return indices
    raise ValueError(
        f"indices must have shape (n, 2) or (2, n, m); got {shape}"
    )


def calc_coords(zero, a, b, indices):
    """Positions ``zero + i * a + j * b`` of lattice points.

    Parameters
    ----------
    zero : array_like
        ``(y, x)`` of the lattice origin.
    a, b : array_like
        ``(y, x)`` of the two lattice vectors.
    indices : array_like
        Integer pairs ``(i, j)``, shape ``(n, 2)``.

    Returns
    -------
    numpy.ndarray
        ``(y, x)`` positions, shape ``(n, 2)``.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> calc_coords((10, 10), (4, 0), (0, 3), np.array([[1, 0], [1, 2]]))
    array([[14, 10],
           [14, 16]])
    """
    basis = np.array((a, b))
    return zero + np.dot(indices, basis)


def within_frame(peaks, r, fy, fx):
    """Which peaks lie in ``[r, fy - r) x [r, fx - r)``.

    Parameters
    ----------
    peaks : array_like
        ``(y, x)`` positions, shape ``(n, 2)``.
    r : float
        Margin to keep from the frame border.
    fy, fx : int
        Frame height and width.

    Returns
    -------
    numpy.ndarray
        Boolean vector of length ``n``.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> within_frame(np.array([[2, 2], [5, 5], [7, 2]]), r=2, fy=8, fx=8)
    array([ True,  True, False])
    """
    peaks = np.asarray(peaks)
    inside = (peaks >= (r, r)) & (peaks < (fy - r, fx - r))
    return inside.all(axis=-1)


def frame_peaks(fy, fx, zero, a, b, r, indices):
    """Lattice points whose positions lie inside a frame with margin ``r``.

    Parameters
    ----------
    fy, fx : int
        Frame height and width.
    zero, a, b : array_like
        Lattice origin and vectors, each ``(y, x)``.
    r : float
        Margin to keep from the frame border.
    indices : numpy.ndarray
        Lattice indices, shape ``(n, 2)`` or ``(2, n, m)``
        (see :func:`regularize_indices`).

    Returns
    -------
    indices, peaks : numpy.ndarray
        The indices and ``(y, x)`` positions of the points inside.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> idx, pos = frame_peaks(16, 16, zero=(8, 8), a=(5, 0), b=(0, 5), r=2,
    ...                        indices=np.array([[0, 0], [1, 0], [2, 0]]))
    >>> idx.tolist(), pos.tolist()
    ([[0, 0], [1, 0]], [[8, 8], [13, 8]])
    """
    indices = regularize_indices(indices)
    peaks = calc_coords(zero, a, b, indices)
    selector = within_frame(peaks, r, fy, fx)
    return indices[selector], peaks[selector]


def _add_disk(frame, center, radius, weight):
    """Add an antialiased disk times ``weight`` to a float32 frame in place.

    Only the bounding box of the disk is touched; pixel values equal those
    of :func:`gpucorr.masks.circular` with ``antialiased=True`` evaluated on
    the whole frame.
    """
    fy, fx = frame.shape
    cy, cx = center
    reach = radius + 1.0
    y0 = max(0, int(np.floor(cy - reach)))
    y1 = min(fy, int(np.ceil(cy + reach)) + 1)
    x0 = max(0, int(np.floor(cx - reach)))
    x1 = min(fx, int(np.ceil(cx + reach)) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    dy = (np.arange(y0, y1) - cy)[:, np.newaxis].astype(np.float64)
    dx = (np.arange(x0, x1) - cx)[np.newaxis, :].astype(np.float64)
    r = np.sqrt(dy * dy + dx * dx)
    disk = ring_profile(r, radius, 0).astype(np.float64, copy=False)
    # The pixel at the rounded centre always gets full weight (see masks.circular).
    # Round in frame coordinates: numpy rounds halves to even.
    yy = int(np.round(cy))
    xx = int(np.round(cx))
    if 0 <= yy < fy and 0 <= xx < fx:
        disk[yy - y0, xx - x0] = 1
    # In-place add into float32 storage, as drawing on the full frame would.
    frame[y0:y1, x0:x1] += disk * weight


def cbed_frame(
        fy=128, fx=128, zero=None, a=None, b=None, indices=None,
        radius=4, all_equal=False, margin=None, *, dose=None, seed=None):
    """Synthetic CBED frame: antialiased disks on a 2-D lattice.

    Parameters
    ----------
    fy, fx : int, optional
        Frame height and width in pixels. Default 128 each.
    zero : array_like, optional
        ``(y, x)`` of the lattice origin. Default ``(fy // 2, fx // 2)``.
    a : array_like, optional
        ``(y, x)`` of the first lattice vector. Default ``(fy // 8, 0)``.
    b : array_like, optional
        ``(y, x)`` of the second lattice vector. Default: ``a`` rotated by
        -90 degrees.
    indices : numpy.ndarray, optional
        Lattice indices to draw, shape ``(n, 2)`` or ``(2, n, m)``. Default
        ``numpy.mgrid[-10:11, -10:11]``. Points closer than ``margin`` to the
        border are left out.
    radius : float, optional
        Disk radius in pixels, > 0. Default 4.
    all_equal : bool, optional
        If True every disk has weight 1. Otherwise (default) disk ``i``
        at distance ``d_i`` from ``zero`` has weight
        ``max(1, max_val - d_i + i)`` with
        ``max_val = max(max(d) + 1, n + 1)``, so the disks have distinct
        brightness that decreases away from the origin.
    margin : float, optional
        Minimum distance of disk centres from the border. Default
        ``radius``.
    dose : float, optional
        Expected total electron count of the frame, > 0. If given, the
        frame is scaled to sum to ``dose`` and replaced by Poisson counts.
        Default None: noise-free weights.
    seed : int, numpy.random.Generator or None, optional
        Seed for ``numpy.random.default_rng``, used only with ``dose``.

    Returns
    -------
    data : numpy.ndarray
        ``float32`` array of shape ``(1, fy, fx)``.
    indices : numpy.ndarray
        Lattice indices of the drawn disks, shape ``(n, 2)``.
    peaks : numpy.ndarray
        ``(y, x)`` centres of the drawn disks, shape ``(n, 2)``.

    Raises
    ------
    TypeError
        If ``fy`` or ``fx`` is not an int, or ``radius``, ``margin`` or
        ``dose`` is not a real number.
    ValueError
        If ``fy`` or ``fx`` is not positive, ``radius`` or ``dose`` is not
        finite and > 0, ``indices`` has the wrong shape, or a dose is asked
        for a frame without any disk.

    Notes
    -----
    Without ``dose`` the pixel values equal those of
    ``libertem_blobfinder.base.utils.cbed_frame``; gpucorr draws each disk
    only within its bounding box, so large lattices are much faster. If no
    lattice point lies inside the frame, gpucorr returns an empty frame
    where libertem-blobfinder raises.

    Backends: NumPy only.

    Examples
    --------
    >>> data, indices, peaks = cbed_frame(fy=64, fx=64, radius=3)
    >>> data.shape, data.dtype, len(peaks)
    ((1, 64, 64), dtype('float32'), 49)
    >>> peaks[0].tolist(), indices[0].tolist()
    ([8.0, 8.0], [-3, -3])

    With a dose, the frame holds Poisson counts:

    >>> counts, _, _ = cbed_frame(fy=64, fx=64, radius=3, dose=1e4, seed=0)
    >>> bool(np.all(counts == np.round(counts)))
    True
    """
    fy = check_size("fy", fy)
    fx = check_size("fx", fx)
    check_real("radius", radius, minimum=0, strict=True)
    if margin is not None:
        check_real("margin", margin)
    if dose is not None:
        check_real("dose", dose, minimum=0, strict=True)

    if zero is None:
        zero = (fy // 2, fx // 2)
    zero = np.array(zero)
    if a is None:
        a = (fy // 8, 0)
    a = np.array(a)
    if b is None:
        b = make_cartesian(make_polar(a) - (0, np.pi / 2))
    b = np.array(b)
    if indices is None:
        indices = np.mgrid[-10:11, -10:11]
    if margin is None:
        margin = radius
    indices, peaks = frame_peaks(fy=fy, fx=fx, zero=zero, a=a, b=b, r=margin, indices=indices)

    data = np.zeros((1, fy, fx), dtype=np.float32)
    if len(peaks):
        dists = np.linalg.norm(peaks - zero, axis=-1)
        max_val = max(dists.max() + 1, len(peaks) + 1)
        for i, p in enumerate(peaks):
            weight = 1 if all_equal else max(1, max_val - dists[i] + i)
            _add_disk(data[0], p, radius, weight)

    if dose is not None:
        total = data.sum(dtype=np.float64)
        if not total > 0:
            raise ValueError(
                "dose needs a frame with at least one disk; no lattice point lies "
                f"within margin {margin!r} of the {fy}x{fx} frame"
            )
        rng = np.random.default_rng(seed)
        expected = data.astype(np.float64) * (dose / total)
        data = rng.poisson(expected).astype(np.float32)
    return (data, indices, peaks)
