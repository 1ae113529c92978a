"""Patterns from arrays: :class:`UserTemplate` (any 2-D template) and
:class:`RadialGradientBackgroundSubtraction` (drawn on a radius map, which may be
distorted).
"""
import math

import numpy as np

from gpucorr import masks
from gpucorr._validate import check_real, check_real_array, check_shape
from gpucorr.backends.host import to_host
from gpucorr.patterns._base import MatchPattern, _check_search, _outer_defaults


class UserTemplate(MatchPattern):
    """Pattern from a user-supplied 2-D template.

    Parameters
    ----------
    template : array_like
        2-D real-valued (bool, int or float) array without NaN or Inf. Its
        centre is pixel ``(template.shape[0] // 2, template.shape[1] // 2)``.
        An ndarray is stored as given, not copied, and never modified; a GPU
        array (CuPy, or CUDA memory through DLPack or
        ``__cuda_array_interface__``) is copied to the host and the copy stored.
    search : float, optional
        Search range in pixels, > 0. Default: half the template's diagonal,
        ``sqrt(h**2 + w**2) / 2``.

    Attributes
    ----------
    template : numpy.ndarray
    search : float

    Raises
    ------
    TypeError
        If ``template`` has a complex or non-numeric dtype, or ``search`` is
        not a real number.
    ValueError
        If ``template`` is not 2-D, is empty or has NaN or Inf, or ``search``
        is not finite and > 0.

    Notes
    -----
    :meth:`get_mask` pads the template with zeros, or crops it, so that its
    centre pixel lands on pixel ``(sig_shape[0] // 2, sig_shape[1] // 2)``.
    The result has the template's dtype.

    **Differences from libertem-blobfinder.** libertem-blobfinder 0.6.1 pads
    or crops symmetrically and puts the odd extra pixel at the end of the
    axis. When it pads an odd-sized axis to an even size, the template's
    centre lands one pixel before ``sig_shape // 2``; when it crops an
    even-sized axis to an odd size, one pixel after. Correlation peaks found
    with such a mask are shifted by that pixel. gpucorr aligns the centres
    exactly (offset ``sig_shape[i] // 2 - template.shape[i] // 2`` on each
    axis). In every other case (both sizes even, both odd, padding even to
    odd, cropping odd to even) the two placements agree.

    Backends: masks are drawn with NumPy; GPU input arrays are copied to the host
    once, at construction.

    Examples
    --------
    >>> template = np.zeros((3, 3))
    >>> template[1, 1] = 1
    >>> pattern = UserTemplate(template)
    >>> round(float(pattern.search), 3)
    2.121
    >>> mask = pattern.get_mask((6, 6))
    >>> [int(i) for i in np.argwhere(mask == 1)[0]]
    [3, 3]
    """

    #: dimensions of ``template`` and the argument's name (a subclass may stack templates)
    _ndim = 2
    _name = "template"

    def __init__(self, template, search=None):
        template = check_real_array(self._name, to_host(template, self._name), ndim=self._ndim)
        if search is None:
            search = np.sqrt(template.shape[-2] ** 2 + template.shape[-1] ** 2) / 2
        _check_search(search)
        self.template = template
        super().__init__(search=search)

    def get_mask(self, sig_shape):
        sig_shape = check_shape(sig_shape)
        template = np.asarray(self.template)
        if template.ndim != self._ndim:
            raise ValueError(
                f"{self._name} must be a {self._ndim}-D array; got shape {template.shape}"
            )
        result = np.zeros(template.shape[:-2] + tuple(sig_shape), dtype=template.dtype)
        src, dst = placement(sig_shape, template.shape[-2:])
        lead = (slice(None),) * (template.ndim - 2)
        result[lead + dst] = template[lead + src]
        return result


def placement(sig_shape, template_shape):
    """``(src, dst)`` slices that put a template's centre pixel (``shape // 2``) on
    ``sig_shape // 2``, cropping or zero-padding each axis."""
    src = []
    dst = []
    for target, source in zip(sig_shape, template_shape):
        offset = target // 2 - source // 2
        src_start = max(0, -offset)
        dst_start = max(0, offset)
        length = min(source - src_start, target - dst_start)
        src.append(slice(src_start, src_start + length))
        dst.append(slice(dst_start, dst_start + length))
    return tuple(src), tuple(dst)


def _default_radial_map(radius, radius_outer):
    """Distance from pixel ``(c, c)`` on a ``2c x 2c`` grid, ``c = ceil(max radius) + 1``."""
    c = int(math.ceil(max(radius, radius_outer))) + 1
    radial_map, _ = masks.polar_map(
        centerX=c, centerY=c, imageSizeX=2 * c, imageSizeY=2 * c
    )
    return radial_map


class RadialGradientBackgroundSubtraction(UserTemplate):
    """Radial gradient disk with a negative ring, optionally in distorted coordinates.

    The template is
    :func:`gpucorr.masks.radial_gradient_background_subtraction` evaluated
    on ``radial_map``: weight ``r / radius`` inside the disk, a linear
    transition of width ``delta`` at the rim, and -1 out to
    ``radius_outer``.

    Parameters
    ----------
    radius : float
        Radius of the gradient disk in units of ``radial_map``, > 0.
    search : float, optional
        Search range in pixels, >= ``radius_outer``. Default
        ``max(2 * radius, radius_outer)``.
    radius_outer : float, optional
        Outer radius of the negative ring, > ``radius``. Default
        ``1.5 * radius``.
    delta : float, optional
        Width of the transition between positive and negative, >= 0.
        Default 1.
    radial_map : array_like, optional
        2-D map of the radius of each pixel, centred on pixel
        ``(h // 2, w // 2)``. Use it to distort the pattern, for example with
        an elliptical map from :func:`gpucorr.masks.polar_map`, or to work in
        physical units. Default: the pixel distance from the centre of a
        square grid (see below). A GPU array is copied to the host.

    Attributes
    ----------
    radius, radius_outer, delta, search : float
    radial_map : numpy.ndarray
    template : numpy.ndarray
        The template computed at construction. :meth:`get_mask` recomputes
        it from ``radial_map``, ``radius``, ``radius_outer`` and ``delta``,
        so changing those attributes takes effect.

    Raises
    ------
    TypeError
        If a parameter is not a real number, or ``radial_map`` is not
        real-valued.
    ValueError
        If ``radius`` is not finite and > 0, ``radius_outer <= radius``,
        ``search < radius_outer``, ``delta < 0`` or ``radial_map`` is not a
        finite 2-D array.

    Notes
    -----
    **Differences from libertem-blobfinder.** With ``radial_map=None``,
    libertem-blobfinder 0.6.1 measures distances from the point
    ``(r + 1, r + 1)`` on a grid of side ``ceil(2 r + 2)``, with
    ``r = max(radius, radius_outer)``. For a non-integer ``r`` that point is
    not a pixel centre, so the template is not symmetric about any pixel and
    the correlation peak of a round disk is biased by a fraction of a pixel.
    gpucorr measures distances from pixel ``(c, c)`` of a grid of side
    ``2 c`` with ``c = ceil(r) + 1``, which :meth:`get_mask` then centres
    exactly (see :class:`UserTemplate`). For integer ``r`` both give the
    same map.

    Backends: masks are drawn with NumPy; GPU input arrays are copied to the host
    once, at construction.

    Examples
    --------
    >>> pattern = RadialGradientBackgroundSubtraction(radius=2, radius_outer=3)
    >>> pattern.radial_map.shape
    (8, 8)
    >>> pattern.get_mask((8, 8))[4].round(2)
    array([ 0. , -1. ,  0. ,  0.5,  0. ,  0.5,  0. , -1. ])

    An elliptical template, elongated along the diagonal:

    >>> r, _ = masks.polar_map(centerX=16, centerY=16, imageSizeX=32,
    ...                        imageSizeY=32, stretchY=2., angle=np.pi / 4)
    >>> ellipse = RadialGradientBackgroundSubtraction(radius=5, radial_map=r)
    >>> ellipse.get_mask((32, 32)).shape
    (32, 32)
    """

    def __init__(self, radius, search=None, radius_outer=None, delta=1, radial_map=None):
        search, radius_outer = _outer_defaults(radius, search, radius_outer)
        check_real("delta", delta, minimum=0)
        if radial_map is None:
            radial_map = _default_radial_map(radius, radius_outer)
        else:
            radial_map = check_real_array("radial_map", to_host(radial_map, "radial_map"),
                                           ndim=2)
        self.radius = radius
        self.radius_outer = radius_outer
        self.delta = delta
        self.radial_map = radial_map
        super().__init__(template=self._compute_template(), search=search)

    def _compute_template(self):
        return masks.radial_gradient_background_subtraction(
            r=self.radial_map,
            r0=self.radius,
            r_outer=self.radius_outer,
            delta=self.delta,
        )

    def get_mask(self, sig_shape):
        # Parameters are public attributes; honour changes made after construction.
        self.template = self._compute_template()
        return super().get_mask(sig_shape)
