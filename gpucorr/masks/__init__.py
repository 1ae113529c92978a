"""Mask and template helpers on NumPy arrays.

The functions here build the 2-D weight maps that the match patterns in
:mod:`gpucorr.patterns` correlate with diffraction frames: hard-edged and
antialiased disks and rings, radial gradients, and background-subtracting
templates.  They return the same arrays as the functions of the same name in
``libertem_blobfinder.base.masks`` (version 0.6.1), so existing code can swap
the import.

Conventions
-----------
* Arrays have shape ``(imageSizeY, imageSizeX)``; pixel ``[y, x]`` has its
  centre at integer coordinates ``(y, x)``.
* Hard-edged masks (``antialiased=False``) of :func:`circular` and
  :func:`ring` are boolean; antialiased ones are ``float64``.
* An antialiased outer edge of radius ``R`` gives a pixel at distance
  ``r`` from the centre the weight ``clip(R + 0.5 - r, 0, 1)``, an inner
  edge of radius ``R_i`` the weight ``clip(r - R_i + 0.5, 0, 1)``.  When
  ``R_i < 0.5`` the pixel at the rounded centre (``numpy.round``, halves to
  even) is set to ``1 - R_i``, so a small disk never loses its central
  pixel.

Backends
--------
NumPy only; these helpers build templates once, on the host. Stacks of many
masks (:func:`radial_bins`, :func:`sparse_template_multi_stack`) come as
pydata ``sparse.COO`` arrays where most of their values are zero.

Modules
-------
This package re-exports the functions of its parts:

- :mod:`~gpucorr.masks._geometry`: :func:`polar_map`, :func:`bounding_radius`,
  :func:`gradient_x`, :func:`gradient_y` and the antialiased edge profile;
- :mod:`~gpucorr.masks._shapes`: single masks (:func:`circular`, :func:`ring`,
  :func:`radial_gradient`, :func:`background_subtraction`,
  :func:`radial_gradient_background_subtraction`, :func:`balance`);
- :mod:`~gpucorr.masks._stacks`: stacks of masks (:func:`radial_bins`,
  :func:`rectangular`, :func:`sparse_template_multi_stack`,
  :func:`sparse_circular_multi_stack`).

The argument checks live in :mod:`gpucorr._validate`.
"""
from gpucorr.masks._geometry import (
    bounding_radius, gradient_x, gradient_y, make_polar, polar_map,
)
from gpucorr.masks._shapes import (
    background_subtraction, balance, circular, radial_gradient,
    radial_gradient_background_subtraction, ring,
)
from gpucorr.masks._stacks import (
    radial_bins, rectangular, sparse_circular_multi_stack, sparse_template_multi_stack,
)
from gpucorr.masks._stacks import SPARSE_DENSITY  # noqa: F401  (public, not in __all__)

__all__ = [
    "polar_map",
    "circular",
    "ring",
    "radial_gradient",
    "background_subtraction",
    "radial_gradient_background_subtraction",
    "balance",
    "radial_bins",
    "rectangular",
    "sparse_template_multi_stack",
    "sparse_circular_multi_stack",
    "bounding_radius",
    "gradient_x",
    "gradient_y",
    "make_polar",
]
