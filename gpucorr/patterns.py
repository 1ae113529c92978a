"""Match patterns: the templates that frames are correlated with.

Each pattern knows its search range (how far from a peak position the
correlation looks) and draws its template, centred on pixel
``(sig_shape[0] // 2, sig_shape[1] // 2)``, into an array of any requested
shape.  The classes accept the same arguments, apply the same defaults and
raise :class:`ValueError` under the same conditions as the classes of the
same name in ``libertem_blobfinder.common.patterns`` (version 0.6.1), and
produce the same masks, except for the two corrections documented on
:class:`UserTemplate` and :class:`RadialGradientBackgroundSubtraction`.

Backends
--------
Templates are built with NumPy on the host (``get_template(sig_shape)``
takes no array-module argument, as in libertem-blobfinder). A template or
radial map given as a GPU array (CuPy, or a PyTorch/JAX CUDA array through
DLPack or ``__cuda_array_interface__``) is copied to the host once, when the
pattern is made.
:func:`gpucorr.refine` and ``process_frames_*`` take the pattern and move its
template to the frames' GPU themselves. The per-frame functions of
:mod:`gpucorr.correlation` take the template array: with CuPy frames pass
``cupy.asarray(pattern.get_template(sig_shape))``; a NumPy template with CuPy
frames raises ``TypeError``.
"""
import math

import array_api_compat
import numpy as np

from gpucorr import masks
from gpucorr._device import as_native
from gpucorr.masks import _check_real, _check_real_array, _check_shape

__all__ = [
    "feature_vector",
    "MatchPattern",
    "Circular",
    "RadialGradient",
    "BackgroundSubtraction",
    "UserTemplate",
    "RadialGradientBackgroundSubtraction",
]


def _check_search(search):
    return _check_real("search", search, minimum=0, strict=True)


def _check_contains(search, extent, extent_name):
    """The search range must reach at least as far as the pattern itself."""
    if search < extent:
        raise ValueError(
            f"search must be >= {extent_name} so that it contains the pattern; "
            f"got search={search!r}, {extent_name}={extent!r}"
        )


def _on_host(name, value):
    """``value``, or its host copy if it is a GPU array (CuPy, DLPack, CUDA array interface).

    Patterns draw their masks with NumPy; a template handed over on the GPU is
    read once, here, not per call.
    """
    value = as_native(value, name)
    if array_api_compat.is_cupy_array(value):
        return value.get()
    return value


def _outer_defaults(radius, search, radius_outer):
    """Defaults and checks shared by the patterns with a negative outer ring."""
    _check_real("radius", radius, minimum=0, strict=True)
    if radius_outer is None:
        radius_outer = radius * 1.5
    _check_real("radius_outer", radius_outer)
    if search is None:
        search = max(2 * radius, radius_outer)
    _check_search(search)
    if radius_outer <= radius:
        raise ValueError(
            f"radius_outer must be > radius; got radius_outer={radius_outer!r}, "
            f"radius={radius!r}"
        )
    _check_contains(search, radius_outer, "radius_outer")
    return search, radius_outer


def _centred(sig_shape):
    """Mask geometry keywords: a ``sig_shape`` image centred at ``sig_shape // 2``."""
    sy, sx = _check_shape(sig_shape)
    return dict(centerX=sx // 2, centerY=sy // 2, imageSizeX=sx, imageSizeY=sy)


class MatchPattern:
    """Base class of correlation patterns.

    Subclasses implement :meth:`get_mask`; :meth:`get_template` and
    :meth:`get_crop_size` follow from it and from ``search``.

    Parameters
    ----------
    search : float
        Distance in pixels from the centre that the correlation covers, > 0.
        The correlation window is a square of side ``2 * ceil(search)``.

    Attributes
    ----------
    search : float
        As given.

    Notes
    -----
    Backends: NumPy only.

    Examples
    --------
    >>> class Dot(MatchPattern):
    ...     def get_mask(self, sig_shape):
    ...         mask = np.zeros(sig_shape)
    ...         mask[sig_shape[0] // 2, sig_shape[1] // 2] = 1
    ...         return mask
    >>> dot = Dot(search=2.5)
    >>> dot.get_crop_size()
    3
    >>> dot.get_template((4, 4)).shape
    (4, 3)
    """

    def __init__(self, search):
        self.search = _check_search(search)

    def get_crop_size(self):
        """Half the side of the correlation window: ``ceil(search)`` as int.

        Returns
        -------
        int

        Examples
        --------
        >>> Circular(radius=2, search=4.2).get_crop_size()
        5
        """
        return int(np.ceil(self.search))

    def get_mask(self, sig_shape):
        """Template drawn into an array of shape ``sig_shape``.

        Parameters
        ----------
        sig_shape : tuple of int
            ``(height, width)`` of the array; the pattern is centred on pixel
            ``(height // 2, width // 2)``.

        Returns
        -------
        numpy.ndarray
            Real array of shape ``sig_shape``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_mask(sig_shape)"
        )

    def get_template(self, sig_shape):
        """Real-input 2-D Fourier transform of :meth:`get_mask`.

        Parameters
        ----------
        sig_shape : tuple of int
            ``(height, width)`` of the mask to transform.

        Returns
        -------
        numpy.ndarray
            Complex array of shape ``(height, width // 2 + 1)``, equal to
            ``numpy.fft.rfft2(self.get_mask(sig_shape))``.

        Examples
        --------
        >>> t = Circular(radius=2).get_template((8, 8))
        >>> t.shape, t.dtype
        ((8, 5), dtype('complex128'))
        """
        return np.fft.rfft2(self.get_mask(sig_shape))


class _Disk(MatchPattern):
    """A disk-shaped pattern of one radius, drawn by ``_draw`` at the mask centre."""

    _draw = None

    def __init__(self, radius, search=None):
        _check_real("radius", radius, minimum=0, strict=True)
        if search is None:
            search = 2 * radius
        _check_search(search)
        _check_contains(search, radius, "radius")
        self.radius = radius
        super().__init__(search=search)

    def get_mask(self, sig_shape):
        return self._draw(**_centred(sig_shape), radius=self.radius, antialiased=True)


class Circular(_Disk):
    """Antialiased solid disk.

    Parameters
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
        If ``radius`` is not finite and > 0, or ``search < radius``.

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


class RadialGradient(_Disk):
    """Disk whose weight rises linearly from 0 at the centre to 1 at the edge.

    Weighting the rim more than the middle makes the match insensitive to
    intensity variations inside a diffraction disk.

    Parameters
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
        If ``radius`` is not finite and > 0, or ``search < radius``.

    Notes
    -----
    The mask is :func:`gpucorr.masks.radial_gradient` with
    ``antialiased=True``.

    Backends: NumPy only.

    Examples
    --------
    >>> pattern = RadialGradient(radius=2)
    >>> pattern.get_mask((6, 6))[3].round(2)
    array([0. , 0. , 0.5, 0. , 0.5, 0. ])
    """

    _draw = staticmethod(masks.radial_gradient)


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

    def __init__(self, template, search=None):
        template = _check_real_array("template", _on_host("template", template), ndim=2)
        if search is None:
            search = np.sqrt(template.shape[0] ** 2 + template.shape[1] ** 2) / 2
        _check_search(search)
        self.template = template
        super().__init__(search=search)

    def get_mask(self, sig_shape):
        sig_shape = _check_shape(sig_shape)
        template = np.asarray(self.template)
        if template.ndim != 2:
            raise ValueError(
                f"template must be a 2-D array; got shape {template.shape}"
            )
        result = np.zeros(sig_shape, dtype=template.dtype)
        src = []
        dst = []
        for target, source in zip(sig_shape, template.shape):
            offset = target // 2 - source // 2
            src_start = max(0, -offset)
            dst_start = max(0, offset)
            length = min(source - src_start, target - dst_start)
            src.append(slice(src_start, src_start + length))
            dst.append(slice(dst_start, dst_start + length))
        result[tuple(dst)] = template[tuple(src)]
        return result


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
        _check_real("delta", delta, minimum=0)
        if radial_map is None:
            radial_map = _default_radial_map(radius, radius_outer)
        else:
            radial_map = _check_real_array("radial_map", _on_host("radial_map", radial_map),
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


def feature_vector(imageSizeX, imageSizeY, peaks, match_pattern):
    """A sparse stack of masks, one per peak: the pattern's mask around each peak.

    Layer ``i`` holds ``match_pattern.get_mask((2 cs, 2 cs))`` (``cs`` the pattern's
    crop size) with its top-left pixel at ``peaks[i] - cs``, clipped to the frame: the
    region and weights that fast mode correlates around that peak. Applied to frames
    (e.g. with LiberTEM's ``ApplyMasksUDF``) it gives one feature per peak and frame;
    its sum over the first axis is a virtual dark-field mask of all peaks.

    Parameters
    ----------
    imageSizeX, imageSizeY : int
        Frame width and height.
    peaks : array_like of int, shape (P, 2)
        ``(y, x)`` peak positions.
    match_pattern : MatchPattern
        Any pattern with ``get_crop_size()`` and ``get_mask(sig_shape)``.

    Returns
    -------
    sparse.COO
        Shape ``(P, imageSizeY, imageSizeX)``.

    Notes
    -----
    Backends: NumPy and pydata sparse only.

    Examples
    --------
    >>> stack = feature_vector(16, 12, np.array([[4, 5], [8, 10]]), Circular(radius=2))
    >>> stack.shape, int(stack[0].todense()[4, 5]), int(stack[1].todense()[4, 5])
    ((2, 12, 16), 1, 0)
    """
    from gpucorr import _validate
    peaks = _validate.check_peaks(peaks)
    _validate.check_pattern(match_pattern)
    crop_size = int(match_pattern.get_crop_size())
    template = np.asarray(match_pattern.get_mask((2 * crop_size, 2 * crop_size)))
    return masks.sparse_template_multi_stack(
        mask_index=np.arange(len(peaks)), offsetX=peaks[:, 1] - crop_size,
        offsetY=peaks[:, 0] - crop_size, template=template, imageSizeX=imageSizeX,
        imageSizeY=imageSizeY)
