"""Correlate a whole frame with a match pattern and find its strongest peaks.

:func:`get_peaks` is the usual first step of disk finding: correlate a sum
or average frame with a :class:`gpucorr.patterns.MatchPattern` and take the
local maxima as approximate disk positions, to be refined per frame later.
The functions are drop-in replacements for ``get_correlation`` and
``get_peaks`` of ``libertem_blobfinder.common.correlation`` (version 0.6.1)
without a scikit-image dependency.

Backends
--------
Computed on the CPU with NumPy and SciPy: it is one (sum) frame. CuPy and
other DLPack frames are read to the host once; CuPy frames give CuPy results
on their device.
"""
import numbers

import numpy as np
from scipy import ndimage

from gpucorr import pipeline
from gpucorr._validate import check_shape, is_int
from gpucorr.backends.host import on_host

__all__ = ["get_correlation", "get_peaks"]


def _check_frame(sum_result):
    """Return ``sum_result`` as a C-contiguous float64 2-D array."""
    try:
        frame = np.asarray(sum_result)
    except Exception as exc:
        raise TypeError(
            f"sum_result must be a 2-D real-valued array; got {type(sum_result).__name__}"
        ) from exc
    if frame.dtype.kind not in "biuf":
        kind = "complex" if frame.dtype.kind == "c" else "non-numeric"
        raise TypeError(
            f"sum_result must be a real-valued array; got {kind} dtype {frame.dtype}"
        )
    if frame.ndim != 2:
        raise ValueError(
            f"sum_result must be a 2-D array; got {frame.ndim}-D array of shape {frame.shape}"
        )
    check_shape(frame.shape, name="sum_result.shape")
    frame = np.ascontiguousarray(frame, dtype=np.float64)
    if not np.all(np.isfinite(frame)):
        raise ValueError("sum_result must contain only finite values; got NaN or Inf")
    return frame


def _check_pattern(match_pattern):
    # duck-typed, like gpucorr.refine: libertem-blobfinder's patterns work too
    if not callable(getattr(match_pattern, "get_mask", None)):
        raise TypeError(
            "match_pattern must be a gpucorr.patterns.MatchPattern (or have get_mask()); "
            f"got {type(match_pattern).__name__}"
        )


@on_host("sum_result")
def get_correlation(sum_result, match_pattern):
    """Cross-correlation of a frame with a match pattern, centred.

    Parameters
    ----------
    sum_result : array_like
        2-D real-valued frame, for example the sum of a data set; any real
        dtype, converted to ``float64``.
    match_pattern : gpucorr.patterns.MatchPattern
        Pattern to correlate with; its mask is drawn at the frame's shape.

    Returns
    -------
    numpy.ndarray
        ``float64`` array of the frame's shape. Entry ``[y, x]`` is the sum
        of the frame times the pattern's mask centred on pixel ``(y, x)``
        (with periodic wrap-around at the borders).

    Raises
    ------
    TypeError
        If ``sum_result`` is complex or non-numeric, or ``match_pattern`` is
        not a :class:`~gpucorr.patterns.MatchPattern`.
    ValueError
        If ``sum_result`` is not 2-D, is empty or contains NaN or Inf.

    Notes
    -----
    The result is ``fftshift(irfft2(conj(rfft2(mask)) * rfft2(frame)))``
    with ``mask = match_pattern.get_mask(frame.shape)`` centred on pixel
    ``(H // 2, W // 2)``.

    **Differences from libertem-blobfinder.** libertem-blobfinder 0.6.1
    multiplies by ``rfft2(mask)`` without the conjugate, which is a
    convolution: an asymmetric template is mirrored. For odd frame sizes its
    ``irfft2`` also returns one column too few and the result is one pixel
    off. gpucorr computes the correlation at the full frame shape. For the
    built-in (point-symmetric) patterns on even-sized frames both agree to
    floating-point rounding.

    Backends: computed on the CPU. A CuPy (or other DLPack) frame is read to
    the host once, and a CuPy frame gives a CuPy result on its device.

    Examples
    --------
    >>> from gpucorr.masks import circular
    >>> from gpucorr.patterns import Circular
    >>> frame = circular(centerX=9, centerY=5, imageSizeX=16, imageSizeY=16,
    ...                  radius=2, antialiased=True)
    >>> corr = get_correlation(frame, Circular(radius=2))
    >>> [int(i) for i in np.unravel_index(np.argmax(corr), corr.shape)]
    [5, 9]
    """
    frame = _check_frame(sum_result)
    _check_pattern(match_pattern)
    mask = np.asarray(match_pattern.get_mask(frame.shape))
    if mask.shape != frame.shape:
        raise ValueError(
            f"match_pattern.get_mask returned shape {mask.shape}; expected {frame.shape}"
        )
    if mask.dtype.kind not in "biuf":
        raise TypeError(
            f"match_pattern.get_mask must return a real-valued array; got dtype {mask.dtype}"
        )
    template = np.fft.rfft2(mask.astype(np.float64, copy=False))
    filt = pipeline.correlation_filter(np, template, frame.shape, np.float64)
    return np.fft.irfft2(np.fft.rfft2(frame) * filt, s=frame.shape)


def _local_maxima(image, num_peaks):
    """Strongest strict-plateau local maxima away from the border.

    Same selection as ``skimage.feature.peak_local_max(image,
    num_peaks=num_peaks)`` with its other defaults (``min_distance=1``,
    ``exclude_border=True``, threshold ``image.min()``):

    * a candidate equals the maximum of its 3x3 neighbourhood (image edges
      replicated); if every pixel is a candidate the image is flat and has
      none;
    * a candidate must be greater than the image minimum;
    * the outermost row and column on each side are excluded;
    * candidates are ordered by decreasing value, ties in C order, and the
      first ``num_peaks`` are kept. With a minimum distance of 1 no further
      spacing step applies.
    """
    neighbourhood_max = ndimage.maximum_filter(image, size=3, mode="nearest")
    candidates = image == neighbourhood_max
    if np.all(candidates):
        candidates[:] = False
    candidates &= image > image.min()
    candidates[:1, :] = False
    candidates[-1:, :] = False
    candidates[:, :1] = False
    candidates[:, -1:] = False
    coords = np.argwhere(candidates)
    order = np.argsort(-image[candidates], kind="stable")
    return coords[order[:num_peaks]].astype(np.int64, copy=False)


@on_host("sum_result")
def get_peaks(sum_result, match_pattern, num_peaks):
    """Positions of the strongest local maxima of the correlation with a pattern.

    Parameters
    ----------
    sum_result : array_like
        2-D real-valued frame, for example the sum of a data set.
    match_pattern : gpucorr.patterns.MatchPattern
        Pattern to correlate with (see :func:`get_correlation`).
    num_peaks : int
        Maximum number of peaks to return, > 0.

    Returns
    -------
    numpy.ndarray
        ``int64`` array of shape ``(n, 2)`` with ``n <= num_peaks``: the
        ``(y, x)`` positions of local maxima of the correlation, strongest
        first (ties in row-major order).

    Raises
    ------
    TypeError
        If ``num_peaks`` is not a number, or for invalid ``sum_result`` or
        ``match_pattern`` (see :func:`get_correlation`).
    ValueError
        If ``num_peaks`` is a number but not an int >= 1 (floats and bools
        included), or for invalid ``sum_result``.

    Notes
    -----
    A local maximum is a pixel equal to the maximum of its 3x3
    neighbourhood and greater than the minimum of the correlation; pixels
    on the outermost rows and columns are never reported. This is the
    selection of ``skimage.feature.peak_local_max(corr, num_peaks=num_peaks)``
    that libertem-blobfinder uses, implemented with
    :func:`scipy.ndimage.maximum_filter`. The correlation differs from
    libertem-blobfinder's for odd frame sizes and asymmetric patterns (see
    :func:`get_correlation`).

    Backends: computed on the CPU with NumPy and SciPy (one sum frame). A CuPy
    (or other DLPack) frame is read to the host once, and a CuPy frame gives
    CuPy peaks on its device, ready for :func:`gpucorr.refine` on CuPy frames.

    Examples
    --------
    >>> from gpucorr.synthetic import cbed_frame
    >>> from gpucorr.patterns import RadialGradient
    >>> frame, _, _ = cbed_frame(radius=4)
    >>> pattern = RadialGradient(radius=4)
    >>> peaks = get_peaks(frame[0], pattern, 7)
    >>> print(peaks)
    [[64 64]
     [64 80]
     [80 80]
     [80 64]
     [48 80]
     [48 64]
     [64 96]]
    """
    if not isinstance(num_peaks, numbers.Number):
        raise TypeError(
            f"num_peaks must be a positive int; got {num_peaks!r} of type "
            f"{type(num_peaks).__name__}"
        )
    if not is_int(num_peaks) or num_peaks < 1:
        raise ValueError(
            f"num_peaks must be a positive int; got {num_peaks!r} of type "
            f"{type(num_peaks).__name__}"
        )
    corr = get_correlation(sum_result, match_pattern)
    return _local_maxima(corr, int(num_peaks))
