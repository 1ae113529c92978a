"""Strain maps: :func:`strain` of fitted lattices against a reference, :class:`StrainResult`."""
import re
import warnings
from dataclasses import dataclass

import numpy as np

from gpucorr.backends import array_namespace
from gpucorr.lattice._fit import LatticeFit, _as_list, _kind, _shape
from gpucorr.lattice._fit import fit_lattice  # noqa: F401  (in the doctests)

__all__ = ["strain", "StrainResult", "region_mask", "parse_region"]


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
    a, b = xp.asarray(a), xp.asarray(b)
    for v in (a, b):
        if v.dtype.kind not in "iuf":
            raise TypeError(f"{name}: a and b must be real (y, x) vectors; got dtype {v.dtype}")
    a, b = a.astype(xp.float64), b.astype(xp.float64)
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


def parse_region(text):
    """A region of scan positions as a tuple of slices, from ``"0:10,0:64"``.

    One ``start:stop`` (or ``start:stop:step``, ``:``, or a single index) per
    scan axis, separated by commas, as in NumPy indexing: stops are exclusive
    and negative values count from the end.

    Parameters
    ----------
    text : str
        E.g. ``"0:10,0:64"`` (rows 0 to 9, columns 0 to 63 of a 2-D scan),
        ``":,0:16"`` (the 16 left columns) or ``"100:200"`` (frames of a 1-D stack).

    Returns
    -------
    tuple of slice

    Raises
    ------
    ValueError
        Anything but integers, colons and commas.

    Examples
    --------
    >>> parse_region("0:10, 0:64")
    (slice(0, 10, None), slice(0, 64, None))
    >>> parse_region(":,-16:")
    (slice(None, None, None), slice(-16, None, None))
    >>> parse_region("3,4")
    (slice(3, 4, None), slice(4, 5, None))
    """
    if not isinstance(text, str):
        raise TypeError(f"region must be a string like '0:10,0:64'; got {type(text).__name__}")
    out = []
    for part in text.split(","):
        fields = [f.strip() for f in part.split(":")]
        try:
            values = [int(f) if f else None for f in fields]
        except ValueError:
            raise ValueError(f"region must be start:stop per scan axis, separated by commas "
                             f"(e.g. '0:10,0:64'); got {text!r}") from None
        if len(values) == 1:
            if values[0] is None:
                raise ValueError(f"region: an empty scan axis in {text!r}; use ':' for all")
            i = values[0]
            out.append(slice(i, i + 1 if i != -1 else None))
        elif len(values) <= 3:
            if len(values) == 3 and values[2] == 0:
                raise ValueError(f"region: a step of 0 in {text!r}")
            out.append(slice(*values))
        else:
            raise ValueError(f"region must be start:stop per scan axis, separated by commas "
                             f"(e.g. '0:10,0:64'); got {text!r}")
    return tuple(out)


#: what a region string is made of (anything else is not meant as a region)
_REGION_TEXT = re.compile(r"[\d\s:,+-]+")


def _is_region(value):
    return isinstance(value, str) or (
        isinstance(value, tuple) and len(value) > 0
        and all(isinstance(v, slice) for v in value))


def region_mask(region, shape):
    """Boolean mask of ``shape`` that is True on a region of scan positions.

    Parameters
    ----------
    region : str or tuple of slice
        ``"0:10,0:64"`` (see :func:`parse_region`) or slices such as
        ``numpy.s_[0:10, 0:64]``: one per scan axis.
    shape : tuple of int
        The scan shape, e.g. ``(scan_y, scan_x)``.

    Returns
    -------
    bool ndarray of ``shape``

    Raises
    ------
    ValueError
        A region with another number of axes than ``shape``, or one that
        selects no scan position.

    Examples
    --------
    >>> region_mask("0:2,1:3", (3, 4)).astype(int).tolist()
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    shape = tuple(int(n) for n in shape)
    text = region if isinstance(region, str) else None
    if isinstance(region, str):
        region = parse_region(region)
    if not _is_region(region):
        raise TypeError(f"region must be a string like '0:10,0:64' or a tuple of slices; "
                        f"got {region!r}")
    shown = text if text is not None else _show_region(region)
    if len(region) != len(shape):
        raise ValueError(f"region {shown!r} has {len(region)} scan "
                         f"ax{'is' if len(region) == 1 else 'es'}; the scan has "
                         f"{len(shape)}, shape {shape}")
    mask = np.zeros(shape, dtype=bool)
    mask[region] = True
    if not mask.any():
        raise ValueError(f"region {shown!r} selects no scan position of the scan of shape "
                         f"{shape}")
    return mask


def _show_region(region):
    def one(s):
        text = ("" if s.start is None else str(s.start)) + ":" + (
            "" if s.stop is None else str(s.stop))
        return text + (f":{s.step}" if s.step not in (None, 1) else "")
    return ",".join(one(s) for s in region)


def _reference(xp, a, b, reference):
    """Reference vectors (a0, b0), each float64 (2,), and the mask (if any) they came from."""
    lead = a.shape[:-1]
    if reference is None:
        return (*_median_vectors(xp, a, b), None)
    if isinstance(reference, str) and not _REGION_TEXT.fullmatch(reference):
        raise TypeError(
            "reference must be None, a LatticeFit, an (a0, b0) pair of (y, x) vectors, a "
            f"boolean mask of shape {lead} or a region such as '0:10,0:64'; got {reference!r}"
        )
    if _is_region(reference):
        mask = xp.asarray(region_mask(reference, lead))
        return (*_median_vectors(xp, a, b, mask), mask)
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
        "reference must be None, a LatticeFit, an (a0, b0) pair of (y, x) vectors, a "
        f"boolean mask of shape {lead} or a region such as '0:10,0:64'; got "
        f"{type(reference).__name__} of dtype {mask.dtype}"
    )


def strain(lattice, *, reference=None):
    """Strain and rotation of each frame's lattice relative to a reference lattice.

    Parameters
    ----------
    lattice : LatticeFit or (a, b)
        Lattice vectors per frame: a :func:`fit_lattice` result, or a pair of
        float arrays ``(..., 2)`` holding ``(y, x)`` vectors.
    reference : None, LatticeFit, (a0, b0), boolean array (...) or region, optional
        The unstrained lattice:

        - ``None`` (default): the median of ``a`` and of ``b`` (each
          component separately) over all frames of ``lattice``, leaving out
          NaN frames;
        - a ``LatticeFit`` (e.g. of a reference scan or frame): the median of
          its ``a`` and ``b`` over its frames, the same way;
        - ``(a0, b0)``, two ``(y, x)`` vectors (or one ``(2, 2)`` array of
          rows ``a0``, ``b0``);
        - a boolean mask with the leading shape of ``lattice``: the median
          over the frames it selects (a reference region of a scan);
        - a region of scan positions, ``"0:10,0:64"`` or a tuple of slices
          such as ``numpy.s_[0:10, 0:64]`` (see :func:`region_mask`): the
          median over the frames it selects.

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

    Against a reference region, the first two frames:

    >>> strain(fit_lattice(frames, indices), reference="0:2").eyy.round(9).tolist()
    [0.0, 0.0, 0.01]
    """
    if isinstance(lattice, LatticeFit):
        arrays = (lattice.a, lattice.b)
    elif isinstance(lattice, (tuple, list)):
        arrays = tuple(lattice)
    else:
        arrays = ()
    if isinstance(reference, LatticeFit):
        ref_arrays = (reference.a, reference.b)
    elif _is_region(reference):
        ref_arrays = ()
    elif isinstance(reference, (tuple, list)):
        ref_arrays = tuple(reference)
    elif hasattr(reference, "dtype"):
        ref_arrays = (reference,)
    else:  # None, or something _reference rejects with a clear message
        ref_arrays = ()
    xp = array_namespace(*arrays, *ref_arrays)
    a, b = _lattice_vectors(xp, lattice, "lattice")
    a0, b0, mask = _reference(xp, a, b, reference)
    # inf and NaN vectors give NaN results (or the reference's error), without warnings
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return _polar(xp, a, b, a0, b0, mask, reference)


def _polar(xp, a, b, a0, b0, mask, reference):
    """strain's computation once its lattices are read (see :func:`strain`)."""
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
