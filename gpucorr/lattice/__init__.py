"""Lattice fits and strain maps from refined peak positions.

:func:`fit_lattice` fits ``position = zero + i * a + j * b`` to the refined
peak positions of every frame of a stack at once (weighted least squares),
with one set of indices for all frames or, for disks found in each frame on
its own (:func:`gpucorr.find_disks`, indexed by
:func:`gpucorr.indexing.index_peaks`), one set per frame and a mask;
:func:`strain` turns the fitted lattice vectors into strain and rotation
relative to a reference lattice: the median of the scan, a region of scan
positions (:func:`region_mask`, ``"0:10,0:64"``), or known vectors.
Disk positions give the diffraction pattern's lattice, whose strain is
(to first order) the negative of the crystal's: :func:`crystal_strain` gives
the crystal's, through the dual basis (:func:`real_space`). Vectors
are ``(y, x)`` in pixels, like all positions in gpucorr; any number of
leading axes (frames ``(N,)``, a scan ``(scan_y, scan_x)``, or none) is kept.

Both functions are batched closed forms written against the array module of
their input (``xp``): no Python loop over frames, so they run unchanged on a
GPU array library once :mod:`gpucorr.backends` accepts one.

Backends
--------
NumPy; the code is array-module generic (``xp``) and makes no per-frame host
round trips.
"""
from gpucorr.lattice._fit import fit_lattice, LatticeFit, RCOND  # noqa: F401
from gpucorr.lattice._strain import (  # noqa: F401
    strain, StrainResult, region_mask, parse_region,
)
from gpucorr.lattice._crystal import crystal_strain, real_space  # noqa: F401

__all__ = ["fit_lattice", "LatticeFit", "strain", "crystal_strain", "real_space",
           "StrainResult", "region_mask", "parse_region"]
