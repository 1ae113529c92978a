"""Assign lattice indices to peak positions: of a sum frame, or of every frame on its own.

:func:`gpucorr.get_peaks` finds where the disks are; a lattice fit
(:func:`gpucorr.lattice.fit_lattice`) also needs to know which lattice point
each peak is. :func:`index_peaks` finds a reduced basis (a, b) from the
shortest difference vectors around the central peak and rounds every peak's
coordinates in that basis to integers. Given per-frame peaks ``(..., K, 2)``
(e.g. :func:`gpucorr.find_disks`' ``positions``, with its ``mask``), it
indexes each frame's lattice on its own and brings every frame's basis to the
one equivalent basis nearest a common reference, so that ``a`` and ``b`` mean
the same lattice vectors in every frame (what a strain map compares).
"""
import numpy as np

from gpucorr._validate import check_real
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


def _unimodular(limit=2):
    """Integer 2x2 matrices with entries in [-limit, limit] and det +-1, (M, 2, 2)."""
    r = np.arange(-limit, limit + 1)
    m = np.stack(np.meshgrid(r, r, r, r, indexing="ij"), -1).reshape(-1, 2, 2)
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    return m[np.abs(det) == 1].astype(np.float64)


#: the changes of basis searched to bring a frame's basis next to a reference
_CHANGES = _unimodular()


def _align(indices, basis, reference):
    """Indices and basis in the equivalent basis (a', b') = M (a, b) nearest to ``reference``.

    ``indices`` (..., P, 2) and ``basis`` (..., 3, 2) of frames, ``reference``
    rows (zero0,) a0, b0; NaN frames stay NaN.
    """
    ab = basis[..., 1:, :]                                              # (..., 2, 2)
    candidates = np.einsum("mkl,...lc->...mkc", _CHANGES, ab)           # (..., M, 2, 2)
    dist = np.sum((candidates - reference[-2:]) ** 2, axis=(-1, -2))    # (..., M)
    dist = np.where(np.isnan(dist), np.inf, dist)
    m = _CHANGES[np.argmin(dist, axis=-1)]                              # (..., 2, 2)
    new_ab = m @ ab
    # p = zero + (i, j) (a, b) = zero + (i, j) M^-1 (a', b')
    m_inv = np.rint(np.linalg.inv(m)).astype(np.int64)
    new_indices = indices @ m_inv
    out = basis.copy()
    out[..., 1:, :] = new_ab
    return new_indices, out


def _check_reference(reference):
    """``reference`` as float64 (2, 2) rows a0, b0 or (3, 2) rows zero0, a0, b0, or None."""
    if reference is None:
        return None
    try:
        ref = np.asarray(reference, dtype=np.float64)
    except (TypeError, ValueError):
        ref = None
    if ref is None or ref.shape not in ((2, 2), (3, 2)) or not np.all(np.isfinite(ref)):
        raise ValueError("reference must be finite (y, x) vectors (a0, b0) or (zero0, a0, b0), "
                         f"shape (2, 2) or (3, 2); got {reference!r}")
    a0, b0 = ref[-2:]
    if abs(a0[0] * b0[1] - a0[1] * b0[0]) <= 1e-12 * (a0 @ a0 + b0 @ b0):
        raise ValueError(f"reference vectors a0, b0 must not be parallel; got {ref.tolist()}")
    return ref


def _shift_zero(indices, basis, zero0):
    """Indices and basis with each frame's (0, 0) the lattice point nearest ``zero0``."""
    ab = basis[..., 1:, :]
    good = np.all(np.isfinite(basis), axis=(-1, -2))
    safe = np.where(good[..., None, None], ab, np.eye(2))
    # zero0 - zero = c @ ab; the nearest lattice point is zero + rint(c) @ ab
    c = np.linalg.solve(np.swapaxes(safe, -1, -2), (zero0 - np.where(
        good[..., None], basis[..., 0, :], 0.0))[..., None])[..., 0]
    shift = np.where(good[..., None], np.rint(c), 0.0)
    out = basis.copy()
    out[..., 0, :] = basis[..., 0, :] + np.einsum("...k,...kc->...c", shift, ab)
    return indices - shift.astype(np.int64)[..., None, :], out


def _follow_zero(indices, basis, lead, zero0):
    """In place: each frame's (0, 0) the lattice point nearest the (0, 0) of the frame
    before it along the last scan axis (a row's first: the first of the row before; the
    first frame: nearest ``zero0``), so that a pattern that moves little from frame to
    frame keeps its labels however far it moves across the scan."""
    cols = lead[-1] if lead else 1
    previous = row_start = zero0
    for f in range(len(basis)):
        if f % cols == 0:
            previous, first_of_row = row_start, True
        if not np.all(np.isfinite(basis[f])):
            continue
        indices[f], basis[f] = _shift_zero(indices[f], basis[f], previous)
        previous = basis[f, 0]
        if first_of_row:
            row_start, first_of_row = previous, False


def _check_mask(mask, shape):
    if mask is None:
        return np.ones(shape[:-1], dtype=bool)
    m = np.asarray(mask)
    if m.dtype != bool:
        raise TypeError(f"mask must be a boolean array (True where a peak is present); got "
                        f"dtype {m.dtype}")
    if m.shape != shape[:-1]:
        raise ValueError(f"mask must have shape (..., P) = {shape[:-1]}, the shape of peaks "
                         f"{shape} without its last axis; got {m.shape}")
    return m


def _check_zero(zero, lead, n_peaks):
    """``zero`` as an int64 array of shape ``lead`` (-1: the default per frame)."""
    if zero is None:
        return np.full(lead, -1, dtype=np.int64)
    z = np.asarray(zero)
    if isinstance(zero, (bool, np.bool_)) or z.dtype.kind not in "iu" or (
            z.shape != () and z.shape != lead):
        if lead == ():
            raise TypeError(f"zero must be None or an int (the index of a peak); got "
                            f"{zero!r}")
        raise ValueError(f"zero must be None, an int or an integer array of shape {lead} "
                         f"(one peak index per frame); got {zero!r}")
    if np.any((z < 0) | (z >= n_peaks)):
        raise ValueError(f"zero must index one of the {n_peaks} peaks; got {zero!r}")
    return np.broadcast_to(z.astype(np.int64), lead)


def index_peaks(peaks, *, mask=None, zero=None, tolerance=0.25, min_angle=20.0,
                reference=None):
    """Lattice indices ``(i, j)`` of peaks, such that ``peak ~ zero + i a + j b``.

    Parameters
    ----------
    peaks : array (P, 2) or (..., P, 2)
        (y, x) positions: one set, e.g. from :func:`gpucorr.get_peaks`, or one
        set per frame (any leading axes, e.g. a scan ``(scan_y, scan_x, K, 2)``
        from :func:`gpucorr.find_disks`), each frame indexed on its own. Rows
        holding NaN are absent peaks.
    mask : bool array (P,) or (..., P), optional
        Which peaks are present (e.g. ``find_disks(...).mask``); rows where it
        is False are left out, like NaN rows. Default: every finite row.
    zero : int or integer array (...), optional
        Index into ``peaks`` (along ``P``) of the zero-order peak, one for all
        frames or one per frame; default the present peak nearest to the mean
        of the present peaks (of each frame; for per-frame peaks then moved to
        the lattice point nearest the reference's ``zero0``, see
        ``reference``). A frame whose ``zero`` is absent is not indexed.
    tolerance : float
        A peak is indexed only where it lies within ``tolerance * min(|a|, |b|)``
        of its lattice point.
    min_angle : float
        Smallest angle in degrees between the two basis vectors searched for.
    reference : (a0, b0) or (zero0, a0, b0), optional
        Approximate lattice: (y, x) vectors, a (2, 2) or (3, 2) array of rows.
        Each frame's basis becomes the equivalent basis ``(a', b') = M (a, b)``
        (``M`` an integer matrix of determinant +-1) nearest to ``a0``, ``b0``,
        and its indices change with it, so that every frame labels its lattice
        the same way. With ``zero0`` (and ``zero=None``), each frame's index
        ``(0, 0)`` is then its lattice point nearest ``zero0``. Without it,
        per-frame peaks follow their ``(0, 0)`` along the scan (see Notes).
        Default: none for one set (the reduced basis found); for per-frame
        peaks, the vectors ``a``, ``b`` of the frame with the most indexed
        peaks (the first of them), and no ``zero0``.

    Notes
    -----
    Every pair of the 8 peaks nearest to ``zero`` spans a candidate basis
    (Lagrange-Gauss reduced); the one that indexes the most peaks wins, so a
    few spurious peaks (noise maxima between the disks) do not derail it.

    Per-frame peaks are indexed one frame after the other on the host (a
    loop). The common labelling holds where each frame's lattice differs from
    the reference by less than half the angle between ``a0`` and ``b0`` (and
    the lengths by less than about a third). Without ``zero0`` (and with
    ``zero=None``) the common ``(0, 0)`` is followed along the scan: the first
    indexed frame takes the lattice point nearest the zero-order peak of the
    frame with the most indexed peaks, then each frame the one nearest the
    ``(0, 0)`` of the frame before it along the last axis, and the first frame
    of a row the one nearest that of the row before (frames that are not
    indexed skipped). It holds where the pattern moves by less than half a
    lattice spacing between those neighbours, however far it moves across the
    scan; with ``zero0``, where each frame's pattern lies within half a
    spacing of ``zero0``. Where that fails the indices are offset by whole
    lattice vectors (this moves ``zero`` of a fit, never ``a`` or ``b``, and
    so not the strain): give ``zero`` per frame then.

    Returns
    -------
    indices : int64 array (P, 2) or (..., P, 2)
        Lattice indices; rows of peaks that are not indexed (absent, or too
        far from a lattice point) are 0.
    valid : bool array (P,) or (..., P)
        Which peaks were indexed (present, and no other peak has the same
        indices and lies closer to that lattice point). All False in a frame
        that could not be indexed.
    basis : float64 array (3, 2) or (..., 3, 2)
        ``zero``, ``a``, ``b`` (each (y, x)) fitted to the indexed peaks; NaN
        for a frame that could not be indexed (fewer than 3 present peaks,
        peaks on one line, or its ``zero`` absent).

    Raises
    ------
    ValueError
        Shapes: ``peaks`` not ``(..., P, 2)``, ``mask`` not ``peaks.shape[:-1]``,
        ``zero`` outside the peaks, a ``reference`` not two finite, independent
        vectors. For one set ``(P, 2)`` also fewer than 3 present peaks, no
        two independent difference vectors, or ``zero`` absent.
    TypeError
        ``mask`` not boolean.

    Backends: computed with NumPy. CuPy peaks (or CUDA arrays through DLPack),
    a few hundred values per frame, are copied to the host, and the results
    come back as CuPy arrays on the same device.

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

    Per frame: the second frame's pattern has moved by (2, -3) px and lost
    its last disk (a NaN row); both are labelled in the basis given:

    >>> frames = np.stack([peaks, peaks + [2.0, -3.0]])
    >>> frames[1, -1] = np.nan
    >>> indices, valid, basis = index_peaks(frames, reference=(a, b))
    >>> valid.tolist()
    [[True, True, True, True, True], [True, True, True, True, False]]
    >>> basis[:, 0].round(6).tolist(), basis[1, 1:].round(6).tolist()
    ([[64.3, 64.3], [66.3, 61.3]], [[0.0, 16.0], [16.0, 0.0]])
    >>> bool((indices[0] == ij).all())
    True
    """
    peaks = as_native(peaks, "peaks")
    if is_cupy(peaks):
        host_mask = None if mask is None else to_host(as_native(mask, "mask"), "mask")
        return like(index_peaks(to_host(peaks), mask=host_mask, zero=zero,
                                tolerance=tolerance, min_angle=min_angle,
                                reference=reference), peaks)
    p = np.asarray(peaks)
    if p.dtype.kind not in "iuf":
        raise TypeError(f"peaks must be real (y, x) positions; got dtype {p.dtype}")
    p = p.astype(np.float64)
    if p.ndim < 2 or p.shape[-1] != 2 or p.shape[-2] == 0:
        raise ValueError(f"peaks must have shape (P, 2), or (..., P, 2) with one set per "
                         f"frame, P >= 1; got {p.shape}")
    check_real("tolerance", tolerance, minimum=0, strict=True)
    if not 0 < check_real("min_angle", min_angle) < 90:
        raise ValueError(f"min_angle must be in degrees, 0 < min_angle < 90; got {min_angle!r}")
    if p.ndim == 2 and zero is not None:
        _check_zero(zero, (), p.shape[-2])
    present = _check_mask(mask, p.shape) & np.all(np.isfinite(p), axis=-1)
    ref = _check_reference(reference)
    if p.ndim == 2:
        return _index_set(p, present, zero, tolerance, min_angle, ref)
    return _index_frames(p, present, _check_zero(zero, p.shape[:-2], p.shape[-2]),
                         tolerance, min_angle, ref)


def _index_set(p, present, zero, tolerance, min_angle, ref):
    """One set of peaks (P, 2): errors raised, as index_peaks has always done."""
    if present.all():  # the original behaviour, unchanged
        indices, valid, basis = _index_present(p, zero, tolerance, min_angle)
    else:
        keep = np.flatnonzero(present)
        if zero is not None:
            if not 0 <= int(zero) < len(p):
                raise ValueError(f"zero must index one of the {len(p)} peaks; got {zero}")
            if not present[int(zero)]:
                raise ValueError(f"zero={zero} is an absent peak (masked or NaN)")
            zero = int(np.searchsorted(keep, int(zero)))
        sub_indices, sub_valid, basis = _index_present(p[keep], zero, tolerance, min_angle)
        indices = np.zeros((len(p), 2), dtype=np.int64)
        valid = np.zeros(len(p), dtype=bool)
        indices[keep], valid[keep] = sub_indices, sub_valid
    if ref is not None:
        indices, basis = _align(indices, basis, ref)
        if zero is None and len(ref) == 3:
            indices, basis = _shift_zero(indices, basis, ref[0])
        indices[~valid] = 0
    return indices, valid, basis


def _index_frames(p, present, zeros, tolerance, min_angle, ref):
    """Peaks per frame (..., P, 2): each frame indexed on its own, then aligned to ``ref``."""
    lead, n_peaks = p.shape[:-2], p.shape[-2]
    flat, flat_present, flat_zero = (p.reshape(-1, n_peaks, 2),
                                     present.reshape(-1, n_peaks), zeros.reshape(-1))
    n = len(flat)
    indices = np.zeros((n, n_peaks, 2), dtype=np.int64)
    valid = np.zeros((n, n_peaks), dtype=bool)
    basis = np.full((n, 3, 2), np.nan)
    for f in range(n):
        keep = np.flatnonzero(flat_present[f])
        z = int(flat_zero[f])
        if len(keep) < 3 or (z >= 0 and not flat_present[f, z]):
            continue
        try:
            ij, ok, bas = _index_present(flat[f, keep], None if z < 0 else
                                         int(np.searchsorted(keep, z)), tolerance, min_angle)
        except ValueError:  # on one line: this frame is not indexed
            continue
        indices[f, keep], valid[f, keep], basis[f] = ij, ok, bas
    if valid.any():
        best = basis[int(np.argmax(valid.sum(axis=1)))]   # the frame with the most indexed
        ref = best if ref is None else ref
        indices, basis = _align(indices, basis, ref)
        if np.all(flat_zero < 0) and len(ref) == 3:
            indices, basis = _shift_zero(indices, basis, ref[0])
        elif np.all(flat_zero < 0):
            _follow_zero(indices, basis, lead, best[0])
        indices[~valid] = 0
    return (indices.reshape(lead + (n_peaks, 2)), valid.reshape(lead + (n_peaks,)),
            basis.reshape(lead + (3, 2)))


def _index_present(p, zero, tolerance, min_angle):
    """Indices, valid and basis of peaks ``p`` (P, 2), all present (finite)."""
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
