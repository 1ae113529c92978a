"""Lattice fits: :func:`fit_lattice` and its result, :class:`LatticeFit`."""
import numbers
from dataclasses import dataclass

import numpy as np

from gpucorr.backends import array_namespace
from gpucorr.backends.host import to_host

__all__ = ["fit_lattice", "LatticeFit", "RCOND"]

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
        indices : integer array (P, 2) or (..., P, 2)
            Lattice indices ``(i, j)``: the same for every frame, or one set
            per frame (leading axes those of ``zero``).

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
        idx = _check_indices(xp, indices, lead=_shape(self.zero)[:-1])
        return (self.zero[..., None, :] + idx[..., 0:1] * self.a[..., None, :]
                + idx[..., 1:2] * self.b[..., None, :])


def _check_indices(xp, indices, n_peaks=None, lead=None):
    """Lattice indices as float64 (P, 2), or (..., P, 2) per frame where ``lead`` (the
    leading shape of the positions) is given; must have an integer dtype."""
    if not hasattr(indices, "dtype"):
        indices = xp.asarray(indices)
    shape = _shape(indices)
    per_frame = lead is not None and len(shape) > 2
    if len(shape) < 2 or shape[-1] != 2 or (len(shape) > 2 and lead is None):
        raise ValueError(f"indices must have shape (P, 2) of lattice indices (i, j); got {shape}")
    if per_frame and shape[:-2] != tuple(lead):
        raise ValueError(
            f"per-frame indices must have the shape of refineds, {tuple(lead) + (n_peaks, 2)}, "
            f"or be one (P, 2) for all frames; got {shape}"
        )
    if _kind(indices) not in "iu":
        raise TypeError(
            f"indices must be integer lattice indices (i, j) with an integer dtype; got dtype "
            f"{indices.dtype} (convert whole-number floats with numpy.rint(indices).astype(int))"
        )
    if n_peaks is not None and shape[-2] != n_peaks:
        raise ValueError(
            f"refineds has P={n_peaks} peaks per frame but indices has {shape[-2]} "
            f"(shape {shape}); give one (i, j) per peak"
        )
    return xp.asarray(indices, dtype=xp.float64)


def _check_mask(xp, mask, shape):
    """``mask`` (..., P) boolean with the shape of refineds without its last axis."""
    if mask is None:
        return None
    if not hasattr(mask, "dtype"):
        mask = xp.asarray(mask)
    if _kind(mask) != "b":
        raise TypeError(f"mask must be a boolean array (True where a peak is present); got "
                        f"dtype {mask.dtype}")
    if _shape(mask) != shape[:-1]:
        raise ValueError(
            f"mask must have shape (..., P) = {shape[:-1]}, the shape of refineds {shape} "
            f"without its last axis; got {_shape(mask)}"
        )
    return mask


def _check_fit_args(xp, refineds, indices, elevations, min_elevation, weighted, mask=None):
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
    idx = _check_indices(xp, indices, n_peaks, lead=shape[:-2])
    mask = _check_mask(xp, mask, shape)
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
    return pos, idx, elev, mask


# ---------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------

def fit_lattice(refineds, indices, *, mask=None, elevations=None, min_elevation=None,
                weighted=False):
    """Fit ``position = zero + i * a + j * b`` to the peaks of every frame.

    Parameters
    ----------
    refineds : float array (..., P, 2)
        Refined ``(y, x)`` peak positions, any number of leading axes
        (frames ``(N,)``, a scan ``(scan_y, scan_x)``, or none), e.g.
        ``gpucorr.refine(...).refineds``.
    indices : integer array (P, 2) or (..., P, 2)
        Lattice indices ``(i, j)`` of the peaks: the same for every frame, or
        one set per frame with the shape of ``refineds`` (e.g. from
        :func:`gpucorr.indexing.index_peaks` of per-frame peaks such as
        :func:`gpucorr.find_disks`' ``positions``).
    mask : bool array (..., P), optional
        Which peaks may enter the fit (e.g. the ``valid`` of
        :func:`~gpucorr.indexing.index_peaks`): where False a peak gets weight
        0, whatever its position and index. Default: all (NaN positions drop
        out in any case).
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
        If ``refineds`` is not real, ``indices`` has no integer dtype, ``mask``
        is not boolean, ``weighted`` is not a bool or ``min_elevation`` is not
        a number.
    ValueError
        If the shapes do not match (``refineds`` ``(..., P, 2)``,
        ``indices`` ``(P, 2)`` or ``refineds.shape``, ``elevations`` and
        ``mask`` ``(..., P)``), ``P < 3``, or ``weighted`` /
        ``min_elevation`` are given without ``elevations``.

    Notes
    -----
    Per frame this is the weighted least-squares problem
    ``min sum_p w_p |zero + i_p a + j_p b - r_p|^2`` whose normal equations
    are the 3x3 system ``(X^T W X) [zero; a; b] = X^T W r`` with design
    matrix rows ``[1, i_p, j_p]``. It is solved for all frames at once in
    closed form: eliminating ``zero`` leaves the 2x2 system of the weighted
    covariance of the indices (centred per frame, which keeps it well
    conditioned), solved by Cramer's rule.

    A peak is used where ``mask`` is True (if given), its position is finite, its
    elevation is
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

    Indices per frame, e.g. where the pattern lost a disk and the rest are
    ranked differently; the masked row (any position, any index) is left out:

    >>> per_frame = np.stack([indices, indices[::-1]])
    >>> moved = np.stack([refineds, refineds[::-1] + 3.0])
    >>> mask = np.array([[True] * 5, [False] + [True] * 4])
    >>> moved[1, 0] = -1e6
    >>> fit = fit_lattice(moved, per_frame, mask=mask)
    >>> fit.zero.round(9).tolist(), fit.n_used.tolist()
    ([[64.0, 60.0], [67.0, 63.0]], [5, 4])
    """
    xp = array_namespace(refineds, indices, elevations, mask)
    pos, idx, elev, mask = _check_fit_args(xp, refineds, indices, elevations, min_elevation,
                                           weighted, mask)
    return _fit(xp, pos, idx, elev, min_elevation, bool(weighted), mask)


def _fit(xp, pos, idx, elev, min_elevation, weighted, mask=None):
    """The batched weighted least-squares fit; all arguments checked, float64. ``idx`` is
    (P, 2) or, per frame, (..., P, 2); ``mask`` (..., P) or None."""
    usable = xp.all(xp.isfinite(pos), axis=-1)                       # (..., P)
    if mask is not None:
        usable = usable & mask
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
    # products and sums, not ``wn @ idx``: BLAS's matrix product sums in an order that
    # depends on the number of frames, and a frame's fit must not (batch invariance)
    if idx.ndim != 2:
        idx = xp.where(usable[..., None], idx, 0.0)                   # masked: any value
    mean_idx = xp.sum(wn[..., None] * idx, axis=-2)                   # (..., 2)
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

    fitted = (zero[..., None, :] + idx[..., 0:1] * a[..., None, :]
              + idx[..., 1:2] * b[..., None, :])
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

def _as_list(v):
    """A small vector for an error message (host copy; only on the error path)."""
    return np.asarray(to_host(v)).tolist()
