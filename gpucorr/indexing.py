"""Assign lattice indices to peak positions found on a sum frame.

:func:`gpucorr.get_peaks` finds where the disks are; a lattice fit
(:func:`gpucorr.lattice.fit_lattice`) also needs to know which lattice point
each peak is. :func:`index_peaks` finds a reduced basis (a, b) from the
shortest difference vectors around the central peak and rounds every peak's
coordinates in that basis to integers.
"""
import numpy as np

from gpucorr.backends import is_cupy
from gpucorr.backends.devices import as_native
from gpucorr.backends.host import like, to_host

__all__ = ["index_peaks"]


def _reduce(a, b):
    """Lagrange-Gauss reduction: the shortest basis of the lattice spanned by a, b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a @ a > b @ b:
        a, b = b, a
    for _ in range(64):
        mu = np.rint((a @ b) / (a @ a))
        b = b - mu * a
        if b @ b >= a @ a:
            break
        a, b = b, a
    return a, b


def _assign(d, a, b, tolerance):
    """Indices of the offsets ``d`` in the basis (a, b), misfits, and which fit."""
    basis_matrix = np.stack([a, b])                          # rows a, b
    coeffs = np.linalg.solve(basis_matrix.T, d.T).T          # d = i a + j b
    indices = np.rint(coeffs).astype(np.int64)
    misfit = np.linalg.norm(d - indices @ basis_matrix, axis=1)
    valid = misfit <= tolerance * min(np.linalg.norm(a), np.linalg.norm(b))
    return indices, misfit, valid


def index_peaks(peaks, *, zero=None, tolerance=0.25, min_angle=20.0):
    """Lattice indices ``(i, j)`` of peaks, such that ``peak ~ zero + i a + j b``.

    Parameters
    ----------
    peaks : array (P, 2)
        (y, x) positions, e.g. from :func:`gpucorr.get_peaks`.
    zero : int, optional
        Index into ``peaks`` of the zero-order peak; default the peak nearest
        to the mean of all peaks.
    tolerance : float
        A peak is indexed only where it lies within ``tolerance * min(|a|, |b|)``
        of its lattice point.
    min_angle : float
        Smallest angle in degrees between the two basis vectors searched for.

    Notes
    -----
    Every pair of the 8 peaks nearest to ``zero`` spans a candidate basis
    (Lagrange-Gauss reduced); the one that indexes the most peaks wins, so a
    few spurious peaks (noise maxima between the disks) do not derail it.

    Returns
    -------
    indices : int64 array (P, 2)
        Lattice indices; rows of peaks that are not indexed are 0.
    valid : bool array (P,)
        Which peaks were indexed (no other peak has the same indices and lies
        closer to that lattice point).
    basis : float64 array (3, 2)
        ``zero``, ``a``, ``b`` (each (y, x)) used for the indexing.

    Raises
    ------
    ValueError
        Fewer than 3 peaks, or no two independent difference vectors.

    Backends: computed with NumPy. CuPy peaks (or CUDA arrays through DLPack),
    a few hundred values, are copied to the host, and the results come back as
    CuPy arrays on the same device.

    Examples
    --------
    >>> zero, a, b = np.array([64., 64.]), np.array([0., 16.]), np.array([16., 0.])
    >>> ij = np.array([[0, 0], [1, 0], [0, 1], [-1, 2], [2, -1]])
    >>> peaks = zero + ij @ np.stack([a, b]) + 0.3
    >>> indices, valid, basis = index_peaks(peaks)
    >>> bool(valid.all())
    True
    >>> fitted = basis[0] + indices @ basis[1:]
    >>> bool(np.abs(fitted - peaks).max() < 1e-9)
    True
    """
    peaks = as_native(peaks, "peaks")
    if is_cupy(peaks):
        return like(index_peaks(to_host(peaks), zero=zero, tolerance=tolerance,
                                min_angle=min_angle), peaks)
    p = np.asarray(peaks, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"peaks must have shape (P, 2); got {p.shape}")
    if len(p) < 3:
        raise ValueError(f"need at least 3 peaks to find a lattice; got {len(p)}")
    if zero is None:
        zero = int(np.argmin(np.linalg.norm(p - p.mean(axis=0), axis=1)))
    if not 0 <= int(zero) < len(p):
        raise ValueError(f"zero must index one of the {len(p)} peaks; got {zero}")
    d = p - p[zero]
    norms = np.linalg.norm(d, axis=1)
    near = [k for k in np.argsort(norms, kind="stable") if norms[k] > 1e-9][:8]
    # every pair of the nearest neighbours is a candidate basis; the one that
    # indexes the most peaks wins (robust to spurious peaks), then the smaller cell
    best = None
    for m, k in enumerate(near):
        for l in near[m + 1:]:
            cos = abs(d[k] @ d[l]) / (norms[k] * norms[l])
            if cos >= np.cos(np.radians(min_angle)):
                continue
            a, b = _reduce(d[k], d[l])
            indices, misfit, valid = _assign(d, a, b, tolerance)
            area = abs(a[0] * b[1] - a[1] * b[0])
            score = (int(valid.sum()), -area)
            if best is None or score > best[0]:
                best = (score, indices, misfit, valid)
    if best is None:
        raise ValueError("the peaks lie on one line: no second lattice vector found")
    _, indices, misfit, valid = best
    # one peak per lattice point: the closest
    for key in {tuple(ij) for ij in indices[valid]}:
        same = np.flatnonzero(valid & np.all(indices == key, axis=1))
        if len(same) > 1:
            valid[same[same != same[np.argmin(misfit[same])]]] = False
    # refit zero, a, b to the indexed peaks by least squares
    design = np.column_stack([np.ones(valid.sum()), indices[valid]])
    basis, *_ = np.linalg.lstsq(design, p[valid], rcond=None)
    indices[~valid] = 0
    return indices, valid, basis
