"""The crystal's strain from a diffraction pattern's lattice: :func:`real_space`, the dual
basis of a lattice, and :func:`crystal_strain`.

Disk positions give the lattice of the diffraction pattern, the reciprocal lattice of the
crystal (up to the camera's scale and rotation). When the crystal is deformed by ``F``
its reciprocal lattice is deformed by ``F^-T``: a crystal stretched by 1 % along x gives
diffraction vectors 1 % shorter along x. :func:`gpucorr.lattice.strain` measures the
lattice it is given; :func:`crystal_strain` measures the crystal's.
"""
import warnings

from gpucorr.backends import array_namespace
from gpucorr.lattice._fit import LatticeFit
from gpucorr.lattice._strain import StrainResult, _lattice_vectors, strain

__all__ = ["real_space", "crystal_strain"]


def real_space(lattice):
    """The basis dual to a lattice's: ``a* . a = b* . b = 1``, ``a* . b = b* . a = 0``.

    Parameters
    ----------
    lattice : LatticeFit or (a, b)
        Lattice vectors, arrays ``(..., 2)`` of ``(y, x)``: e.g. the diffraction
        lattice fitted to disk positions (px).

    Returns
    -------
    (a_star, b_star) : float64 arrays (..., 2)
        ``(y, x)`` vectors in the inverse unit (1/px for px), NaN where ``a``
        and ``b`` are parallel or not finite. For a diffraction lattice these
        span the crystal's lattice (up to the camera's scale).

    Examples
    --------
    >>> import numpy as np
    >>> a_star, b_star = real_space((np.array([0.0, 20.0]), np.array([10.0, 0.0])))
    >>> (a_star + 0.0).tolist(), (b_star + 0.0).tolist()      # + 0.0: no negative zeros
    ([0.0, 0.05], [0.1, 0.0])
    """
    arrays = (lattice.a, lattice.b) if isinstance(lattice, LatticeFit) else (
        tuple(lattice) if isinstance(lattice, (tuple, list)) else ())
    xp = array_namespace(*arrays)
    a, b = _lattice_vectors(xp, lattice, "lattice")
    ay, ax, by, bx = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # parallel: NaN / inf
        det = ax * by - bx * ay
        # parallel by the test of gpucorr.lattice.strain (relative to the vectors' size)
        parallel = ~(xp.abs(det) > 1e-12 * (ax * ax + ay * ay + bx * bx + by * by))
        det = xp.where(parallel, float("nan"), det)
        a_star = xp.stack([-bx / det, by / det], axis=-1)
        b_star = xp.stack([ax / det, -ay / det], axis=-1)
    return a_star, b_star


def crystal_strain(lattice, *, reference=None):
    """The crystal's strain and rotation from the lattice of its diffraction patterns.

    :func:`gpucorr.lattice.strain` of the dual bases (:func:`real_space`) of the
    fitted diffraction lattices against the dual of the reference's: the Biot
    strain of the crystal, positive where it is stretched (where the disks come
    closer together).

    Parameters
    ----------
    lattice : LatticeFit or (a, b)
        The diffraction lattice per frame (``fit_lattice`` of disk positions).
    reference : as for :func:`gpucorr.lattice.strain`
        The unstrained diffraction lattice: the median over all frames (default),
        a region of scan positions, a mask, another ``LatticeFit``, or ``(a0, b0)``
        in the diffraction pattern's units (px).

    Returns
    -------
    StrainResult
        ``exx``, ``eyy``, ``exy``, ``rotation`` of the crystal (a rotation of the
        crystal turns its diffraction pattern by the same angle), and ``reference``:
        the diffraction-space ``(a0, b0)`` used.

    Raises
    ------
    TypeError, ValueError
        As :func:`gpucorr.lattice.strain`.

    Examples
    --------
    A crystal stretched by 1 % along x: its diffraction vectors along x shrink
    by 1 / 1.01.

    >>> import numpy as np
    >>> a0, b0 = np.array([0.0, 20.0]), np.array([20.0, 0.0])
    >>> a, b = np.array([0.0, 20.0 / 1.01]), b0
    >>> res = crystal_strain((a, b), reference=(a0, b0))
    >>> [round(float(v), 9) + 0.0 for v in (res.exx, res.eyy, res.exy, res.rotation)]
    [0.01, 0.0, 0.0, 0.0]
    >>> round(float(strain((a, b), reference=(a0, b0)).exx), 6)   # the pattern's own
    -0.009901
    """
    pattern = strain(lattice, reference=reference)        # checks; the reference in px
    crystal = strain(real_space(lattice), reference=real_space(pattern.reference))
    return StrainResult(exx=crystal.exx, eyy=crystal.eyy, exy=crystal.exy,
                        rotation=crystal.rotation, reference=pattern.reference)
