"""Lattice fits and strain maps from refined peak positions.

:func:`fit_lattice` fits ``position = zero + i * a + j * b`` to the refined
peak positions of every frame of a stack at once (weighted least squares);
:func:`strain` turns the fitted lattice vectors into strain and rotation
relative to a reference lattice. Vectors are ``(y, x)`` in pixels, like all
positions in gpucorr; any number of leading axes (frames ``(N,)``, a scan
``(scan_y, scan_x)``, or none) is kept.

Both functions are batched closed forms written against the array module of
their input (``xp``): no Python loop over frames, so they run unchanged on a
GPU array library once :mod:`gpucorr._backend` accepts one.

Backends
--------
NumPy; the code is array-module generic (``xp``) and makes no per-frame host
round trips.
"""
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from gpucorr._backend import array_namespace

__all__ = ["fit_lattice", "LatticeFit", "strain", "StrainResult"]

#: a frame whose weighted index covariance has det < RCOND * (trace / 2) ** 2 (roughly a
#: condition number above 4 / RCOND) counts as collinear: its fit is NaN
RCOND = 1e-10


def _shape(arr):
    return tuple(getattr(arr, "shape", np.shape(arr)))


def _kind(arr):
    return np.dtype(arr.dtype).kind


@dataclass
class LatticeFit:
    """Per-frame lattice ``position = zero + i * a + j * b`` fitted by :func:`fit_lattice`.

    Attributes
    ----------
    zero, a, b : float64 arrays (..., 2)
        Lattice origin and the two lattice vectors, ``(y, x)`` in pixels.
        NaN for frames that could not be fitted.
    residual : float64 array (...)
        Weighted RMS distance in pixels between the fitted and the refined
        positions of the peaks used. NaN where the fit is NaN.
    n_used : integer array (...)
        Number of peaks that entered the fit of each frame.

    The leading axes ``...`` are those of the ``refineds`` given to
    :func:`fit_lattice`.
    """

    zero: np.ndarray
    a: np.ndarray
    b: np.ndarray
    residual: np.ndarray
    n_used: np.ndarray

    def positions(self, indices):
        """Fitted ``(y, x)`` positions ``zero + i * a + j * b`` of lattice points.

        Parameters
        ----------
        indices : integer array (P, 2)
            Lattice indices ``(i, j)``.

        Returns
        -------
        float64 array (..., P, 2)
            One set of positions per frame (compare with the ``refineds``
            to get per-peak residuals).

        Notes
        -----
        Backends: the array module of ``zero`` and ``indices`` (``xp``).

        Examples
        --------
        >>> fit = LatticeFit(zero=np.array([10.0, 20.0]), a=np.array([0.0, 5.0]),
        ...                  b=np.array([4.0, 0.0]), residual=np.array(0.0),
        ...                  n_used=np.array(3))
        >>> fit.positions(np.array([[0, 0], [1, 0], [1, 2]])).tolist()
        [[10.0, 20.0], [10.0, 25.0], [18.0, 25.0]]
        """
        xp = array_namespace(self.zero, indices)
        idx = _check_indices(xp, indices)
        return (self.zero[..., None, :] + idx[:, 0:1] * self.a[..., None, :]
                + idx[:, 1:2] * self.b[..., None, :])


@dataclass
class StrainResult:
    """Strain and rotation per frame, computed by :func:`strain`.

    Attributes
    ----------
    exx, eyy, exy : float64 arrays (...)
        Components of the Biot strain ``U - I`` (``exy`` is the tensor shear,
        half the engineering shear). Dimensionless.
    rotation : float64 array (...)
        Rotation angle in radians, positive from +x towards +y (clockwise on
        screen, where y points down).
    reference : tuple (a0, b0)
        The reference lattice vectors used, each a float64 array ``(2,)``
        ``(y, x)``.
    """

    exx: np.ndarray
    eyy: np.ndarray
    exy: np.ndarray
    rotation: np.ndarray
    reference: tuple


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------

def _check_indices(xp, indices, n_peaks=None):
    """Lattice indices as float64 (P, 2); must have an integer dtype."""
    if not hasattr(indices, "dtype"):
        indices = xp.asarray(indices)
    shape = _shape(indices)
    if len(shape) != 2 or shape[1] != 2:
        raise ValueError(f"indices must have shape (P, 2) of lattice indices (i, j); got {shape}")
    if _kind(indices) not in "iu":
        raise TypeError(
            f"indices must be integer lattice indices (i, j) with an integer dtype; got dtype "
            f"{indices.dtype} (convert whole-number floats with numpy.rint(indices).astype(int))"
        )
    if n_peaks is not None and shape[0] != n_peaks:
        raise ValueError(
            f"refineds has P={n_peaks} peaks per frame but indices has {shape[0]} "
            f"(shape {shape}); give one (i, j) per peak"
        )
    return xp.asarray(indices, dtype=xp.float64)


def _check_fit_args(xp, refineds, indices, elevations, min_elevation, weighted):
    if not hasattr(refineds, "dtype"):
        refineds = xp.asarray(refineds)
    shape = _shape(refineds)
    if len(shape) < 2 or shape[-1] != 2:
        raise ValueError(
            "refineds must have shape (..., P, 2) of (y, x) positions, e.g. (N, P, 2), "
            f"(scan_y, scan_x, P, 2) or (P, 2); got {shape}"
        )
    if _kind(refineds) not in "iuf":
        raise TypeError(f"refineds must have a real dtype (float32, float64, ...); "
                        f"got {refineds.dtype}")
    n_peaks = shape[-2]
    idx = _check_indices(xp, indices, n_peaks)
    if n_peaks < 3:
        raise ValueError(f"a lattice fit needs at least 3 peaks per frame (P >= 3); "
                         f"got P={n_peaks}")
    if not isinstance(weighted, (bool, np.bool_)):
        raise TypeError(f"weighted must be True or False; got {weighted!r}")
    if min_elevation is not None:
        if isinstance(min_elevation, (bool, np.bool_)) or not isinstance(
                min_elevation, numbers.Real):
            raise TypeError(
                f"min_elevation must be a real number or None; got {min_elevation!r} "
                f"of type {type(min_elevation).__name__}"
            )
        if np.isnan(min_elevation):
            raise ValueError(f"min_elevation must not be NaN; got {min_elevation!r}")
    if elevations is None:
        if weighted:
            raise ValueError("weighted=True needs elevations (the weights); got elevations=None")
        if min_elevation is not None:
            raise ValueError(f"min_elevation={min_elevation!r} needs elevations; "
                             "got elevations=None")
        elev = None
    else:
        if not hasattr(elevations, "dtype"):
            elevations = xp.asarray(elevations)
        if _shape(elevations) != shape[:-1]:
            raise ValueError(
                f"elevations must have shape (..., P) = {shape[:-1]}, the shape of refineds "
                f"{shape} without its last axis; got {_shape(elevations)}"
            )
        if _kind(elevations) not in "iuf":
            raise TypeError(f"elevations must have a real dtype; got {elevations.dtype}")
        elev = xp.asarray(elevations, dtype=xp.float64)
    pos = xp.asarray(refineds, dtype=xp.float64)
    return pos, idx, elev


# ---------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------

def fit_lattice(refineds, indices, *, elevations=None, min_elevation=None, weighted=False):
    """Fit ``position = zero + i * a + j * b`` to the peaks of every frame.

    Parameters
    ----------
    refineds : float array (..., P, 2)
        Refined ``(y, x)`` peak positions, any number of leading axes
        (frames ``(N,)``, a scan ``(scan_y, scan_x)``, or none), e.g.
        ``gpucorr.refine(...).refineds``.
    indices : integer array (P, 2)
        Lattice indices ``(i, j)`` of the peaks, the same for every frame.
    elevations : float array (..., P), optional
        Quality score per peak, e.g. ``gpucorr.refine(...).elevations``.
        Needed by ``min_elevation`` and ``weighted``; otherwise unused.
    min_elevation : float, optional
        Drop peaks whose elevation is below this (or NaN).
    weighted : bool
        Weight each peak by its elevation (default False: equal weights).
        Peaks with elevation <= 0 or NaN then drop out.

    Returns
    -------
    LatticeFit
        ``zero``, ``a``, ``b`` float64 ``(..., 2)``, ``residual`` float64
        ``(...)``, ``n_used`` int ``(...)``.

    Raises
    ------
    TypeError
        If ``refineds`` is not real, ``indices`` has no integer dtype,
        ``weighted`` is not a bool or ``min_elevation`` is not a number.
    ValueError
        If the shapes do not match (``refineds`` ``(..., P, 2)``,
        ``indices`` ``(P, 2)``, ``elevations`` ``(..., P)``), ``P < 3``, or
        ``weighted`` / ``min_elevation`` are given without ``elevations``.

    Notes
    -----
    Per frame this is the weighted least-squares problem
    ``min sum_p w_p |zero + i_p a + j_p b - r_p|^2`` whose normal equations
    are the 3x3 system ``(X^T W X) [zero; a; b] = X^T W r`` with design
    matrix rows ``[1, i_p, j_p]``. It is solved for all frames at once in
    closed form: eliminating ``zero`` leaves the 2x2 system of the weighted
    covariance of the indices (centred per frame, which keeps it well
    conditioned), solved by Cramer's rule.

    A peak is used where its position is finite, its elevation is
    ``>= min_elevation`` (if given) and its weight is > 0 (with
    ``weighted=True`` the weight is the elevation; otherwise 1). Frames with
    fewer than 3 used peaks, or whose used indices are collinear
    (determinant of the index covariance below ``RCOND = 1e-10`` times its
    squared half-trace), get NaN ``zero``, ``a``, ``b`` and ``residual``;
    nothing is raised for them.

    Backends: written once against the array module of the input (``xp``),
    no loop or host round trip per frame; NumPy input runs on the CPU.

    Examples
    --------
    >>> import numpy as np
    >>> indices = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [-1, 2]])
    >>> zero, a, b = np.array([64.0, 60.0]), np.array([1.0, 20.0]), np.array([18.0, -2.0])
    >>> refineds = zero + indices[:, :1] * a + indices[:, 1:] * b   # one frame (P, 2)
    >>> fit = fit_lattice(refineds, indices)
    >>> fit.zero.round(9).tolist(), fit.a.round(9).tolist(), fit.b.round(9).tolist()
    ([64.0, 60.0], [1.0, 20.0], [18.0, -2.0])
    >>> bool(fit.residual < 1e-9), int(fit.n_used)
    (True, 5)

    Stacks keep their leading axes; a frame without 3 usable peaks is NaN:

    >>> stack = np.stack([refineds, refineds + 0.5])
    >>> stack[1, 2:] = np.nan
    >>> fit_lattice(stack, indices).a.round(9).tolist()
    [[1.0, 20.0], [nan, nan]]
    """
    xp = array_namespace(refineds, indices, elevations)
    pos, idx, elev = _check_fit_args(xp, refineds, indices, elevations, min_elevation,
                                     weighted)
    return _fit(xp, pos, idx, elev, min_elevation, bool(weighted))


def _fit(xp, pos, idx, elev, min_elevation, weighted):
    """The batched weighted least-squares fit; all arguments checked, float64."""
    usable = xp.all(xp.isfinite(pos), axis=-1)                       # (..., P)
    if weighted:
        w = xp.where(xp.isfinite(elev), elev, 0.0)
        usable = usable & (w > 0)
    else:
        w = xp.ones(usable.shape, dtype=xp.float64)
    if min_elevation is not None:
        usable = usable & (elev >= min_elevation)                     # NaN -> False
    w = xp.where(usable, w, 0.0)
    pos = xp.where(usable[..., None], pos, 0.0)                       # no NaN * 0
    n_used = xp.sum(usable, axis=-1, dtype=xp.int64)
    total = xp.sum(w, axis=-1)
    wn = w / xp.where(total > 0, total, 1.0)[..., None]               # weights sum to 1

    # weighted means; centred indices and positions per frame
    mean_idx = wn @ idx                                               # (..., 2)
    mean_pos = xp.sum(wn[..., None] * pos, axis=-2)                   # (..., 2)
    d = idx - mean_idx[..., None, :]                                  # (..., P, 2)
    di, dj = d[..., 0], d[..., 1]
    dp = pos - mean_pos[..., None, :]
    # 2x2 index covariance and right-hand sides (the Schur complement of the 3x3 system)
    cii = xp.sum(wn * di * di, axis=-1)
    cij = xp.sum(wn * di * dj, axis=-1)
    cjj = xp.sum(wn * dj * dj, axis=-1)
    ri = xp.sum((wn * di)[..., None] * dp, axis=-2)                   # (..., 2)
    rj = xp.sum((wn * dj)[..., None] * dp, axis=-2)
    det = cii * cjj - cij * cij
    half_trace = (cii + cjj) / 2
    ok = (n_used >= 3) & (det > RCOND * half_trace * half_trace)
    det = xp.where(ok, det, 1.0)[..., None]
    a = (cjj[..., None] * ri - cij[..., None] * rj) / det
    b = (cii[..., None] * rj - cij[..., None] * ri) / det
    zero = mean_pos - mean_idx[..., 0:1] * a - mean_idx[..., 1:2] * b

    fitted = zero[..., None, :] + idx[:, 0:1] * a[..., None, :] + idx[:, 1:2] * b[..., None, :]
    sq = xp.sum((fitted - pos) ** 2, axis=-1)
    residual = xp.sqrt(xp.sum(wn * sq, axis=-1))

    nan = float("nan")
    ok2 = ok[..., None]
    return LatticeFit(
        zero=xp.where(ok2, zero, nan),
        a=xp.where(ok2, a, nan),
        b=xp.where(ok2, b, nan),
        residual=xp.where(ok, residual, nan),
        n_used=n_used,
    )


# ---------------------------------------------------------------------------
# Strain
# ---------------------------------------------------------------------------

def _lattice_vectors(xp, lattice, name):
    """``(a, b)`` float64 arrays (..., 2) of a LatticeFit or an (a, b) pair."""
    if isinstance(lattice, LatticeFit):
        a, b = lattice.a, lattice.b
    elif isinstance(lattice, (tuple, list)) and len(lattice) == 2:
        a, b = lattice
    else:
        raise TypeError(
            f"{name} must be a LatticeFit or an (a, b) pair of (..., 2) arrays; "
            f"got {type(lattice).__name__}"
        )
    a = xp.asarray(a, dtype=xp.float64)
    b = xp.asarray(b, dtype=xp.float64)
    if a.ndim < 1 or a.shape[-1] != 2 or a.shape != b.shape:
        raise ValueError(
            f"{name}: a and b must have the same shape (..., 2) of (y, x) vectors; "
            f"got {_shape(a)} and {_shape(b)}"
        )
    return a, b


def _median_vectors(xp, a, b, mask=None):
    """Component-wise median of a and b over the frames (selected by mask), NaN frames left out."""
    a = xp.reshape(a, (-1, 2))
    b = xp.reshape(b, (-1, 2))
    bad = xp.any(xp.isnan(a), axis=-1) | xp.any(xp.isnan(b), axis=-1)
    if mask is not None:
        bad = bad | ~xp.reshape(mask, (-1,))
    a = xp.where(bad[:, None], float("nan"), a)
    b = xp.where(bad[:, None], float("nan"), b)
    with warnings.catch_warnings():
        # no frame left: NaN, reported by the caller
        warnings.simplefilter("ignore", RuntimeWarning)
        return xp.nanmedian(a, axis=0), xp.nanmedian(b, axis=0)


def _reference(xp, a, b, reference):
    """Reference vectors (a0, b0), each float64 (2,), and the mask (if any) they came from."""
    lead = a.shape[:-1]
    if reference is None:
        return (*_median_vectors(xp, a, b), None)
    if isinstance(reference, LatticeFit):
        ra, rb = _lattice_vectors(xp, reference, "reference")
        return (*_median_vectors(xp, ra, rb), None)
    if isinstance(reference, (tuple, list)) and len(reference) == 2 and not all(
            isinstance(v, (bool, np.bool_)) for v in reference):
        a0 = xp.asarray(reference[0], dtype=xp.float64)
        b0 = xp.asarray(reference[1], dtype=xp.float64)
        if a0.shape != (2,) or b0.shape != (2,):
            raise ValueError(
                "reference (a0, b0) must be two (y, x) vectors of shape (2,); "
                f"got shapes {_shape(a0)} and {_shape(b0)}"
            )
        return a0, b0, None
    mask = reference if hasattr(reference, "dtype") else xp.asarray(reference)
    if _kind(mask) == "b":
        if _shape(mask) != lead:
            raise ValueError(
                f"reference mask must have the leading shape of the lattice, {lead}; "
                f"got {_shape(mask)}"
            )
        return (*_median_vectors(xp, a, b, mask), mask)
    if _kind(mask) in "iuf":
        if _shape(mask) != (2, 2):
            raise ValueError(
                "reference must be a boolean mask of shape "
                f"{lead} or the vectors [a0, b0] of shape (2, 2); got {_shape(mask)} "
                f"of dtype {mask.dtype}"
            )
        ref = xp.asarray(mask, dtype=xp.float64)
        return ref[0], ref[1], None
    raise TypeError(
        "reference must be None, a LatticeFit, an (a0, b0) pair of (y, x) vectors or a "
        f"boolean mask of shape {lead}; got {type(reference).__name__} of dtype {mask.dtype}"
    )


def strain(lattice, *, reference=None):
    """Strain and rotation of each frame's lattice relative to a reference lattice.

    Parameters
    ----------
    lattice : LatticeFit or (a, b)
        Lattice vectors per frame: a :func:`fit_lattice` result, or a pair of
        float arrays ``(..., 2)`` holding ``(y, x)`` vectors.
    reference : None, LatticeFit, (a0, b0) or boolean array (...), optional
        The unstrained lattice:

        - ``None`` (default): the median of ``a`` and of ``b`` (each
          component separately) over all frames of ``lattice``, leaving out
          NaN frames;
        - a ``LatticeFit`` (e.g. of a reference scan or frame): the median of
          its ``a`` and ``b`` over its frames, the same way;
        - ``(a0, b0)``, two ``(y, x)`` vectors (or one ``(2, 2)`` array of
          rows ``a0``, ``b0``);
        - a boolean mask with the leading shape of ``lattice``: the median
          over the frames it selects (a reference region of a scan).

    Returns
    -------
    StrainResult
        ``exx``, ``eyy``, ``exy``, ``rotation``, float64, shaped like the
        leading axes of ``lattice``, and ``reference`` = ``(a0, b0)``.

    Raises
    ------
    TypeError
        If ``lattice`` or ``reference`` is of an unsupported kind.
    ValueError
        If shapes do not fit (``a``/``b`` ``(..., 2)``, ``a0``/``b0`` ``(2,)``,
        mask shape = leading shape), the reference mask selects no frame with a
        finite fit, or the reference vectors are parallel or not finite.

    Notes
    -----
    Write the lattice vectors as columns in ``(x, y)`` order,
    ``A = [[a_x, b_x], [a_y, b_y]]`` and likewise ``A0`` for ``a0``, ``b0``.
    The deformation gradient ``F = A A0^-1`` maps the reference lattice
    onto the frame's lattice. Its polar decomposition ``F = R U`` (``R`` a
    rotation, ``U`` symmetric positive definite) separates rotation from
    stretch, and the strain is the Biot strain ``E = U - I``; for small
    strains it equals the symmetric part of ``F - I``. Then

    - ``exx = E[x, x]``, ``eyy = E[y, y]``,
    - ``exy = E[x, y]``, the tensor shear (half the engineering shear
      ``gamma_xy``),
    - ``rotation`` = the angle of ``R`` in radians, positive when +x turns
      towards +y. In an image displayed with y pointing down, positive is
      clockwise.

    ``R`` and ``U`` are computed in closed form: the angle is
    ``atan2(F[y, x] - F[x, y], F[x, x] + F[y, y])`` and ``U = R^T F``.
    Frames with a NaN fit, or whose ``det F <= 0`` (lattice handedness
    flipped relative to the reference), give NaN. The same lattice
    described by different basis vectors (e.g. ``a + b`` for ``a``) is a
    different ``A`` and gives a spurious strain: fit the reference and the
    frames with the same indices.

    Backends: written once against the array module of the input (``xp``),
    no loop per frame; the one host round trip per call is the check that the
    reference is usable.

    Examples
    --------
    A lattice rotated by 0.1 rad (from +x towards +y) and stretched by 1 %
    along x, relative to ``a0 = (0, 20)``, ``b0 = (20, 0)`` (``(y, x)``):

    >>> import numpy as np
    >>> c, s = np.cos(0.1), np.sin(0.1)
    >>> a = 1.01 * np.array([20 * s, 20 * c])      # (y, x) of R @ diag(1.01, 1) @ a0
    >>> b = np.array([20 * c, -20 * s])
    >>> res = strain((a, b), reference=((0.0, 20.0), (20.0, 0.0)))
    >>> [round(float(v), 9) + 0.0 for v in (res.exx, res.eyy, res.exy, res.rotation)]
    [0.01, 0.0, 0.0, 0.1]

    With fits of a stack, the default reference is the median lattice:

    >>> indices = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    >>> frames = np.stack([indices * 20.0, indices * 20.0, indices * [20.2, 20.0]])
    >>> res = strain(fit_lattice(frames, indices))
    >>> res.eyy.round(9).tolist(), res.exx.round(9).tolist()
    ([0.0, 0.0, 0.01], [0.0, 0.0, 0.0])
    """
    if isinstance(lattice, LatticeFit):
        arrays = (lattice.a, lattice.b)
    elif isinstance(lattice, (tuple, list)):
        arrays = tuple(lattice)
    else:
        arrays = ()
    if isinstance(reference, LatticeFit):
        ref_arrays = (reference.a, reference.b)
    elif isinstance(reference, (tuple, list)):
        ref_arrays = tuple(reference)
    elif hasattr(reference, "dtype"):
        ref_arrays = (reference,)
    else:  # None, or something _reference rejects with a clear message
        ref_arrays = ()
    xp = array_namespace(*arrays, *ref_arrays)
    a, b = _lattice_vectors(xp, lattice, "lattice")
    a0, b0, mask = _reference(xp, a, b, reference)

    # columns in (x, y) order: A = [[ax, bx], [ay, by]]
    ay, ax, by, bx = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    a0y, a0x, b0y, b0x = a0[0], a0[1], b0[0], b0[1]
    det0 = a0x * b0y - b0x * a0y
    usable = xp.isfinite(det0) & (xp.abs(det0) > 1e-12 * (a0x * a0x + a0y * a0y
                                                         + b0x * b0x + b0y * b0y))
    if not bool(usable):  # the one host round trip of a call
        if mask is not None and not bool(xp.any(mask)):
            raise ValueError("reference mask selects no frame; select at least one")
        if mask is not None or reference is None or isinstance(reference, LatticeFit):
            raise ValueError(
                "the reference frames hold no finite lattice fit (all NaN) or their median "
                f"vectors are parallel; got a0={_as_list(a0)}, b0={_as_list(b0)}"
            )
        raise ValueError(
            "reference vectors a0, b0 must be finite and not parallel; "
            f"got a0={_as_list(a0)}, b0={_as_list(b0)}"
        )

    # F = A A0^-1, A0^-1 = [[b0y, -b0x], [-a0y, a0x]] / det0
    fxx = (ax * b0y - bx * a0y) / det0
    fxy = (bx * a0x - ax * b0x) / det0
    fyx = (ay * b0y - by * a0y) / det0
    fyy = (by * a0x - ay * b0x) / det0
    # polar decomposition F = R U: R by theta, U = R^T F symmetric positive definite
    theta = xp.arctan2(fyx - fxy, fxx + fyy)
    c, s = xp.cos(theta), xp.sin(theta)
    uxx = c * fxx + s * fyx
    uyy = -s * fxy + c * fyy
    uxy = 0.5 * ((c * fxy + s * fyy) + (-s * fxx + c * fyx))
    proper = (fxx * fyy - fxy * fyx) > 0                              # NaN -> False
    nan = float("nan")
    return StrainResult(
        exx=xp.where(proper, uxx - 1.0, nan),
        eyy=xp.where(proper, uyy - 1.0, nan),
        exy=xp.where(proper, uxy, nan),
        rotation=xp.where(proper, theta, nan),
        reference=(a0, b0),
    )


def _as_list(v):
    """A small vector for an error message (host copy; only on the error path)."""
    v = v.get() if hasattr(v, "get") else v
    return np.asarray(v).tolist()
