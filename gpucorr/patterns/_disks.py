"""Patterns of disks drawn by :mod:`gpucorr.masks`: :class:`Circular`,
:class:`RadialGradient` and :class:`BackgroundSubtraction`; and :class:`DiskEdge`,
gpucorr's edge template.
"""
import numpy as np

from gpucorr import masks
from gpucorr._validate import check_real
from gpucorr.patterns._base import (
    MatchPattern, _centred, _check_contains, _check_search, _outer_defaults,
)


#: the constructor's sections of the docstrings of :class:`_Disk`'s subclasses
_DISK_PARAMETERS = """Parameters
    ----------
    radius : float
        Radius of the disk in pixels, > 0.
    search : float, optional
        Search range in pixels, >= ``radius``. Default ``2 * radius``.

    Attributes
    ----------
    radius, search : float

    Raises
    ------
    TypeError
        If ``radius`` or ``search`` is not a real number.
    ValueError
        If ``radius`` is not finite and > 0, or ``search < radius``."""


def _with_disk_parameters(cls):
    """Class decorator: the constructor's sections (:data:`_DISK_PARAMETERS`) where the
    docstring of ``cls`` says ``{disk_parameters}``."""
    if cls.__doc__:  # None under python -OO
        cls.__doc__ = cls.__doc__.replace("{disk_parameters}", _DISK_PARAMETERS)
    return cls


class _Disk(MatchPattern):
    """A disk-shaped pattern of one radius, drawn by ``_draw`` at the mask centre."""

    _draw = None

    def __init__(self, radius, search=None):
        check_real("radius", radius, minimum=0, strict=True)
        if search is None:
            search = 2 * radius
        _check_search(search)
        _check_contains(search, radius, "radius")
        self.radius = radius
        super().__init__(search=search)

    def get_mask(self, sig_shape):
        return self._draw(**_centred(sig_shape), radius=self.radius, antialiased=True)


@_with_disk_parameters
class Circular(_Disk):
    """Antialiased solid disk.

    {disk_parameters}

    Notes
    -----
    The mask is :func:`gpucorr.masks.circular` with ``antialiased=True``.

    Backends: NumPy only.

    Examples
    --------
    >>> pattern = Circular(radius=1)
    >>> pattern.search
    2
    >>> pattern.get_mask((4, 4)).round(2)
    array([[0.  , 0.  , 0.  , 0.  ],
           [0.  , 0.09, 0.5 , 0.09],
           [0.  , 0.5 , 1.  , 0.5 ],
           [0.  , 0.09, 0.5 , 0.09]])
    """

    _draw = staticmethod(masks.circular)


@_with_disk_parameters
class RadialGradient(_Disk):
    """Disk whose weight rises linearly from 0 at the centre to 1 at the edge.

    Weighting the rim more than the middle makes the match insensitive to
    intensity variations inside a diffraction disk.

    {disk_parameters}

    Attributes
    ----------
    default_scaling : str
        ``"none"``: :func:`gpucorr.refine` correlates this pattern with the
        frames as they are unless told ``scaling="log"``.

    Notes
    -----
    The mask is :func:`gpucorr.masks.radial_gradient` with
    ``antialiased=True``.

    **Default scaling.** The log step turns each disk's brightness into an
    edge profile that this template reads as a shift. On
    :func:`~gpucorr.synthetic.cbed_frame` scans with unequal disks (160:1,
    radius 8, upsample 20) the RMS position error is 0.035 px without it
    against 0.129 px with it, and 0.074 against 0.163 px with Poisson noise;
    on the multislice frames of ``bench/physics`` the two are on a par
    (``docs/benchmarks.md``). So :func:`gpucorr.refine` and
    :func:`gpucorr.find_disks` use ``scaling="none"`` for it by default.

    **Noise.** The r / radius weight lets the Poisson noise of a disk's
    bright inside into its position: on those noisy scans the noise alone
    moves it by 0.064 px RMS, where Circular's whole error is 0.033 px. For
    precise positions use :class:`Circular` or :class:`DiskEdge`.
    The libertem-blobfinder-compatible functions (``process_frames_*``,
    the UDFs) log-scale, as the peer does.

    Backends: NumPy only.

    Examples
    --------
    >>> pattern = RadialGradient(radius=2)
    >>> pattern.get_mask((6, 6))[3].round(2)
    array([0. , 0. , 0.5, 0. , 0.5, 0. ])
    >>> pattern.default_scaling
    'none'
    """

    _draw = staticmethod(masks.radial_gradient)
    default_scaling = "none"


class BackgroundSubtraction(MatchPattern):
    """Solid disk surrounded by a negative ring that balances it to zero sum.

    A flat background correlates to zero, which suppresses false matches
    between diffraction disks.

    Parameters
    ----------
    radius : float
        Radius of the positive disk in pixels, > 0.
    search : float, optional
        Search range in pixels, >= ``radius_outer``. Default
        ``max(2 * radius, radius_outer)``.
    radius_outer : float, optional
        Outer radius of the negative ring in pixels, > ``radius``. Default
        ``1.5 * radius``.

    Attributes
    ----------
    radius, radius_outer, search : float

    Raises
    ------
    TypeError
        If a parameter is not a real number.
    ValueError
        If ``radius`` is not finite and > 0, ``radius_outer <= radius`` or
        ``search < radius_outer``.

    Notes
    -----
    The mask is :func:`gpucorr.masks.background_subtraction` with
    ``antialiased=True``.

    Backends: NumPy only.

    Examples
    --------
    >>> pattern = BackgroundSubtraction(radius=2)
    >>> pattern.radius_outer, pattern.search
    (3.0, 4)
    >>> mask = pattern.get_mask((8, 8))
    >>> bool(mask[4, 4] == 1), bool(abs(mask.sum()) < 1e-12)
    (True, True)
    """

    def __init__(self, radius, search=None, radius_outer=None):
        search, radius_outer = _outer_defaults(radius, search, radius_outer)
        self.radius = radius
        self.radius_outer = radius_outer
        super().__init__(search=search)

    def get_mask(self, sig_shape):
        return masks.background_subtraction(**_centred(sig_shape), radius=self.radius_outer,
                                            radius_inner=self.radius, antialiased=True)


class DiskEdge(MatchPattern):
    """The edge of a disk: positive just inside the rim, negative just outside.

    The template is the radial derivative of a Gaussian ring,
    ``t(rho) = (radius - rho) / width * exp(-(radius - rho)**2 / (2 width**2))``
    at distance ``rho`` from the centre (drawn at pixel centres). It responds
    to the step of the disk's edge and hardly at all to the intensity inside
    the disk, so dynamical contrast inside diffraction disks (bright on one
    side, dark bands) pulls its correlation peak much less than it pulls a
    solid disk's. Correlate it with the frames as they are: its
    ``default_scaling`` is ``"none"`` (the log step turns a disk's brightness
    profile into edges of its own).

    gpucorr's own pattern; libertem-blobfinder has none like it.

    Parameters
    ----------
    radius : float
        Radius of the disk's edge in pixels, > 0. The pattern is sensitive to
        it: give the radius to a few hundredths of a pixel
        (:func:`gpucorr.fit_edge_radius` measures it on the data).
    width : float, optional
        Gaussian sigma of the edge in pixels, > 0. Default 0.7 (the edge of
        a disk sampled by detector pixels).
    search : float, optional
        Search range in pixels, >= ``radius``. Default
        ``max(2 * radius, radius + 3 * width)``, which holds the template's
        outer lobe; a smaller one (e.g. to keep neighbouring disks out of the
        crops) cuts it off at the crop's edge.

    Attributes
    ----------
    radius, width, search : float
    default_scaling : str
        ``"none"``.

    Raises
    ------
    TypeError
        If a parameter is not a real number.
    ValueError
        If ``radius`` or ``width`` is not finite and > 0, or ``search <
        radius``.

    Notes
    -----
    Measured on multislice frames of SrTiO3 (``bench/physics``, 10 and 41 nm,
    given the true radius): strain errors of 2-3e-4 against the known field
    where libertem-blobfinder's best setting gives 9-25e-4; a radius 0.1 px
    off adds about 1e-3. See ``docs/benchmarks.md``.

    On flat disks with Poisson noise (:func:`~gpucorr.synthetic.cbed_frame`
    scans, 1e6 counts per frame) ``scaling="log"`` is more precise: 0.037
    against 0.046 px RMS. It is not the default because on dynamical disks the
    log step costs this pattern its accuracy (strain error 26e-4 instead of
    2e-4 on the 41 nm frames).

    With :func:`gpucorr.find_disks`, pass ``min_height`` (0 or a little more):
    the template sums to less than 0, so between the disks the map has maxima
    at the background's level, outside the disks' negative rings.

    Backends: NumPy only (the template; the correlation runs on any backend).

    Examples
    --------
    >>> pattern = DiskEdge(radius=3)
    >>> pattern.search, pattern.default_scaling
    (6, 'none')
    >>> row = pattern.get_mask((12, 12))[6]
    >>> bool(row[6 + 2] > 0), bool(abs(row[6 + 3]) < 1e-12), bool(row[6 + 4] < 0)
    (True, True, True)
    """

    default_scaling = "none"

    def __init__(self, radius, width=0.7, search=None):
        check_real("radius", radius, minimum=0, strict=True)
        check_real("width", width, minimum=0, strict=True)
        if search is None:
            search = max(2 * radius, radius + 3 * width)
        _check_search(search)
        _check_contains(search, radius, "radius")
        self.radius = radius
        self.width = width
        super().__init__(search=search)

    def get_mask(self, sig_shape):
        g = _centred(sig_shape)
        y = np.arange(g["imageSizeY"], dtype=np.float64) - g["centerY"]
        x = np.arange(g["imageSizeX"], dtype=np.float64) - g["centerX"]
        u = (self.radius - np.hypot(y[:, None], x[None, :])) / self.width
        return u * np.exp(-0.5 * u * u)
