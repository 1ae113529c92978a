"""The base class of the match patterns, the checks its subclasses share, and
:func:`feature_vector` (a pattern's masks around many peaks).
"""
import numpy as np

from gpucorr import _validate, masks
from gpucorr._validate import check_real, check_shape


def _check_search(search):
    return check_real("search", search, minimum=0, strict=True)


def _check_contains(search, extent, extent_name):
    """The search range must reach at least as far as the pattern itself."""
    if search < extent:
        raise ValueError(
            f"search must be >= {extent_name} so that it contains the pattern; "
            f"got search={search!r}, {extent_name}={extent!r}"
        )


def _outer_defaults(radius, search, radius_outer):
    """Defaults and checks shared by the patterns with a negative outer ring."""
    check_real("radius", radius, minimum=0, strict=True)
    if radius_outer is None:
        radius_outer = radius * 1.5
    check_real("radius_outer", radius_outer)
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
    sy, sx = check_shape(sig_shape)
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
        >>> from gpucorr.patterns import Circular
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
        >>> from gpucorr.patterns import Circular
        >>> t = Circular(radius=2).get_template((8, 8))
        >>> t.shape, t.dtype
        ((8, 5), dtype('complex128'))
        """
        return np.fft.rfft2(self.get_mask(sig_shape))


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
    >>> from gpucorr.patterns import Circular
    >>> stack = feature_vector(16, 12, np.array([[4, 5], [8, 10]]), Circular(radius=2))
    >>> stack.shape, int(stack[0].todense()[4, 5]), int(stack[1].todense()[4, 5])
    ((2, 12, 16), 1, 0)
    """
    peaks = _validate.check_peaks(peaks)
    _validate.check_pattern(match_pattern)
    crop_size = int(match_pattern.get_crop_size())
    template = np.asarray(match_pattern.get_mask((2 * crop_size, 2 * crop_size)))
    return masks.sparse_template_multi_stack(
        mask_index=np.arange(len(peaks)), offsetX=peaks[:, 1] - crop_size,
        offsetY=peaks[:, 0] - crop_size, template=template, imageSizeX=imageSizeX,
        imageSizeY=imageSizeY)
