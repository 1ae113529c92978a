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

Modules
-------
This package re-exports the classes of its parts:

- :mod:`~gpucorr.patterns._base`: :class:`MatchPattern`, the checks its subclasses
  share, and :func:`feature_vector`;
- :mod:`~gpucorr.patterns._disks`: :class:`Circular`, :class:`RadialGradient`,
  :class:`BackgroundSubtraction` (masks of :mod:`gpucorr.masks`) and
  :class:`DiskEdge` (gpucorr's edge template, for disks with structure inside);
- :mod:`~gpucorr.patterns._user`: :class:`UserTemplate` and
  :class:`RadialGradientBackgroundSubtraction` (from arrays);
- :mod:`~gpucorr.patterns._peaks`: :class:`PeakTemplates` (one template per peak).
"""
from gpucorr.patterns._base import MatchPattern, feature_vector
from gpucorr.patterns._disks import BackgroundSubtraction, Circular, DiskEdge, RadialGradient
from gpucorr.patterns._user import RadialGradientBackgroundSubtraction, UserTemplate
from gpucorr.patterns._peaks import PeakTemplates

__all__ = [
    "feature_vector",
    "MatchPattern",
    "Circular",
    "RadialGradient",
    "BackgroundSubtraction",
    "DiskEdge",
    "UserTemplate",
    "PeakTemplates",
    "RadialGradientBackgroundSubtraction",
]
