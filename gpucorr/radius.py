"""Estimate the diffraction-disk radius from the data.

This module owns :func:`estimate_radius`, which measures the radius of the
disks in a frame (typically the sum or mean frame of a scan) to a fraction of
a pixel, so that a correlation template need not be sized by guesswork, and
:class:`RadiusEstimate`, the per-disk details it can return.

The radius is the one that the patterns of :mod:`gpucorr.patterns` and the
frames of :func:`gpucorr.synthetic.cbed_frame` mean: the distance from the
disk centre at which the antialiased edge is half way between the disk and
the background.

Backends
--------
NumPy and SciPy on the CPU: the input is one frame. A CuPy frame is copied
to the host once.
"""
import math
import numbers
from typing import NamedTuple

import numpy as np
from gpucorr._disk_fit import fit_disks
from gpucorr._validate import check_count, check_real
from gpucorr.backends.host import to_host
from gpucorr.execution.sources import stack_list

__all__ = ["RadiusEstimate", "estimate_radius", "fit_edge_radius"]


class RadiusEstimate(NamedTuple):
    """What :func:`estimate_radius` found, with ``return_details=True``.

    Attributes
    ----------
    radius : float
        The combined radius estimate in pixels.
    radii : numpy.ndarray
        Fitted radius of each disk used, shape ``(n,)``, the most
        significant fit (amplitude over its standard error) first.
    errors : numpy.ndarray
        Standard error of each radius from its fit, shape ``(n,)``.
    centers : numpy.ndarray
        Fitted ``(y, x)`` centre of each disk, shape ``(n, 2)``.
    amplitudes : numpy.ndarray
        Disk level above the local background, shape ``(n,)``.
    edge_widths : numpy.ndarray
        Gaussian sigma of each fitted edge in pixels, shape ``(n,)``.
    inliers : numpy.ndarray
        Boolean, shape ``(n,)``: which disks the combined radius averages.
    """
    radius: float
    radii: np.ndarray
    errors: np.ndarray
    centers: np.ndarray
    amplitudes: np.ndarray
    edge_widths: np.ndarray
    inliers: np.ndarray


def _check_frame(frame):
    """Return ``frame`` as a C-contiguous float64 2-D array on the host."""
    frame = to_host(frame, "frame")
    try:
        arr = np.asarray(frame)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(
            f"frame must be a 2-D real-valued array; got {type(frame).__name__}") from exc
    if arr.dtype.kind not in "biuf":
        kind = "complex" if arr.dtype.kind == "c" else "non-numeric"
        raise TypeError(f"frame must be a real-valued array (bool, int or float); "
                        f"got {kind} dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"frame must be a 2-D array; got {arr.ndim}-D array of shape {arr.shape}")
    if min(arr.shape) < 3:
        raise ValueError(f"frame must be at least 3x3 pixels; got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("frame must contain only finite values; got NaN or Inf")
    if arr.min() == arr.max():
        raise ValueError(f"frame must not be constant; all pixels are {arr.flat[0].item()!r}")
    return arr


def _check_options(max_disks, radius_range, shape):
    """Return ``(max_disks, (rmin, rmax))`` after checking them."""
    if isinstance(max_disks, (bool, np.bool_)) or not isinstance(max_disks, numbers.Integral):
        raise TypeError(
            f"max_disks must be an int >= 1; got {max_disks!r} ({type(max_disks).__name__})")
    if max_disks < 1:
        raise ValueError(f"max_disks must be an int >= 1; got {max_disks!r}")
    if radius_range is None:
        return int(max_disks), (1.0, min(shape) / 2)
    try:
        rmin, rmax = (float(v) for v in radius_range)
    except (TypeError, ValueError):
        raise TypeError("radius_range must be a pair of numbers (min, max); "
                        f"got {radius_range!r}") from None
    if not (math.isfinite(rmin) and math.isfinite(rmax) and 0 < rmin < rmax):
        raise ValueError("radius_range must be (min, max) with 0 < min < max, both finite; "
                         f"got {radius_range!r}")
    return int(max_disks), (rmin, rmax)


def _weighted_median(values, weights):
    """The value at which the sorted values' cumulative weight passes half the total."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _combine(radii, errors):
    """Inverse-variance mean of the radii that agree with their median.

    The median is weighted by the inverse standard errors (inverse variances would
    let one overconfident fit decide it alone). A radius agrees when it is within
    three standard errors plus 2 % of the median. Returns ``(radius, inliers)``.
    """
    errors = np.maximum(errors, 1e-3)
    median = _weighted_median(radii, 1.0 / errors)
    weights = 1.0 / errors ** 2
    inliers = np.abs(radii - median) <= 3 * errors + 0.02 * median
    radius = float(np.sum(radii[inliers] * weights[inliers]) / np.sum(weights[inliers]))
    return radius, inliers


def estimate_radius(frame, *, max_disks=10, radius_range=None, return_details=False):
    """Estimate the diffraction-disk radius of a frame, to a fraction of a pixel.

    The brightest disks are found on the frame smoothed by a 1-pixel Gaussian: each
    is thresholded half way between its level and its surroundings, which gives a
    rough centre and radius; disks too close to the border are skipped. Each disk is
    then fitted on the unsmoothed frame, out to 3 pixels past its edge and without
    the pixels of brighter neighbours, by a disk with an error-function edge
    (centre, radius, edge width, level, background) by least squares. Fits whose
    level is under 8 standard errors are dropped; if none reaches 30 (a noisy
    frame), disks are also looked for on the frame smoothed by 3 pixels. The radii
    are combined by their inverse-variance weighted mean over the disks that agree
    with the median.

    Parameters
    ----------
    frame : array_like
        2-D real frame (any real dtype, e.g. uint16 counts), typically the sum or
        mean frame of a scan. Disks must not overlap and should share one radius.
    max_disks : int, optional
        How many of the brightest disks to fit, >= 1. Default 10.
    radius_range : tuple of float, optional
        ``(min, max)`` radius in pixels, ``0 < min < max``: disks whose fitted
        radius lies outside are ignored. Default ``(1, min(frame.shape) / 2)``.
    return_details : bool, optional
        If True, return a :class:`RadiusEstimate` with the per-disk fits.

    Returns
    -------
    float or RadiusEstimate
        The radius in pixels: where the disk edge is half way between the disk
        level and the background (the ``radius`` of :mod:`gpucorr.patterns`).

    Raises
    ------
    TypeError
        If ``frame`` is not real-valued, ``max_disks`` not an int or
        ``radius_range`` not a pair of numbers.
    ValueError
        If ``frame`` is not 2-D, smaller than 3x3, holds NaN or Inf, is constant
        or has no disk whose edge can be fitted within ``radius_range``;
        if ``max_disks < 1`` or ``radius_range`` is not ``0 < min < max``.

    Notes
    -----
    On noise-free synthetic lattices (:func:`gpucorr.synthetic.cbed_frame`,
    radii 2 to 13 pixels) the estimate is within 0.01 pixels of the drawn
    radius for disks at sub-pixel positions, within 0.05 for disks centred on
    pixels. With Poisson noise of 1e6 (1e5) counts per 256 x 256 frame it is
    within 0.02 (0.08) pixels; at 1e4 counts, about one count per pixel in the
    brightest disk, it comes out low by up to 0.45 pixels, so prefer a sum
    frame. A blurred edge gives the radius of its half level: for a Gaussian
    blur of sigma ``s`` (``edge_widths`` of the details) that is about
    ``s**2 / (2 * radius)`` inside the unblurred edge. ``tests/test_radius.py``
    holds these cases.

    Disks with strong contrast inside (dynamical diffraction in thick crystals)
    can mislead the fit of a whole disk: on the 41 nm SrTiO3 frames of
    ``bench/physics`` it gives 4.05 px for disks of radius 8.7 px. There, start
    from a rough radius and measure it on the edges with
    :func:`fit_edge_radius`.

    Backends: NumPy and SciPy on the CPU, for one frame. A CuPy frame is copied
    to the host once (``.get()``); the result is a Python float either way.

    Examples
    --------
    >>> from gpucorr.synthetic import cbed_frame
    >>> data, _, _ = cbed_frame(fy=128, fx=128, radius=5.3)
    >>> round(estimate_radius(data[0]), 1)
    5.3

    With the fit of each disk:

    >>> details = estimate_radius(data[0], max_disks=3, return_details=True)
    >>> details.radii.round(1), details.inliers
    (array([5.3, 5.3, 5.3]), array([ True,  True,  True]))
    """
    frame = _check_frame(frame)
    max_disks, (rmin, rmax) = _check_options(max_disks, radius_range, frame.shape)
    # the fit in units of about the frame's largest value, scaled by a power of 2 (exact):
    # its tolerances are absolute, so the radius would depend on the intensity unit
    scale = 2.0 ** np.round(np.log2(np.abs(frame).max()))
    fits = fit_disks(frame / scale, max_disks, rmin, rmax)
    if not fits:
        raise ValueError(
            f"frame has no disk whose edge could be fitted with a radius in "
            f"[{rmin:g}, {rmax:g}] pixels away from the border; got a frame of shape "
            f"{frame.shape} with values from {frame.min():g} to {frame.max():g}")
    params = np.array([p for p, _ in fits])
    errors = np.array([e for _, e in fits])
    radius, inliers = _combine(params[:, 2], errors[:, 2])
    if not return_details:
        return radius
    return RadiusEstimate(radius, params[:, 2], errors[:, 2], params[:, :2],
                          params[:, 4] * scale, params[:, 3], inliers)


MAX_EDGE_RADII = 100
"""fit_edge_radius tries at most ``2 * MAX_EDGE_RADII + 1`` radii (``span / step`` at most
this)."""


def _frame_sample(frames, max_frames):
    """Up to ``max_frames`` frames, evenly spaced over the scan, as one host stack."""
    frames = stack_list(frames)                 # a list of frames, as refine takes it
    shape = tuple(getattr(frames, "shape", None) or np.shape(frames))
    if len(shape) < 2:
        raise ValueError(f"frames must be a frame (H, W) or a stack (..., H, W); "
                         f"got shape {shape}")
    if len(shape) == 2:
        return np.asarray(to_host(frames, "frames"))[None]
    n = math.prod(shape[:-2])
    if n == 0:
        raise ValueError(f"frames must hold at least one frame; got shape {shape}")
    picks = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(np.int64))
    return np.stack([np.asarray(to_host(frames[tuple(int(i) for i in np.unravel_index(k,
                     shape[:-2]))], "frames")) for k in picks])


def fit_edge_radius(frames, peaks, radius, *, width=0.7, span=1.0, step=0.1, search=None,
                    max_frames=32, device="cpu", workers=None):
    """Measure the disks' radius as :class:`~gpucorr.patterns.DiskEdge` sees it.

    Each frame is correlated with ``DiskEdge`` templates of radii ``radius - span``
    to ``radius + span`` in steps of ``step``, at the given peaks (fast mode,
    upsample 20). For each frame the summed correlation heights over the disks,
    as a function of the template radius, peak where the template's rim lies on
    the disks' edges; a parabola through the highest three gives that frame's
    radius, and the result is the median over the frames used. It reads only
    the edges, so contrast inside the disks (dynamical diffraction) disturbs it
    much less than it disturbs a fit of a whole disk (:func:`estimate_radius`).

    Parameters
    ----------
    frames : array_like
        A frame ``(H, W)`` or a stack ``(..., H, W)`` (NumPy, CuPy, memmap,
        HDF5 dataset). Up to ``max_frames`` frames, evenly spaced, are read.
    peaks : array_like
        ``(P, 2)`` integer ``(y, x)`` disk positions, as for :func:`gpucorr.refine`.
    radius : float
        A first guess in pixels, > ``span``: the middle of the radii tried.
    width : float, optional
        The ``DiskEdge`` width the radius is for. Default 0.7.
    span, step : float, optional
        Radii tried: from ``radius`` in steps of ``step`` up and down, as far as
        ``span`` (> 0, ``step <= span``, ``span / step <= 100``). Defaults 1.0
        and 0.1.
    search : float, optional
        Search range of every template, >= the largest radius tried. Default
        ``DiskEdge(radius + span, width).search``.
    max_frames : int, optional
        How many frames to use, >= 1. Default 32.
    device, workers
        As for :func:`gpucorr.refine`.

    Returns
    -------
    float
        The radius in pixels.

    Raises
    ------
    TypeError, ValueError
        For bad arguments (as :func:`gpucorr.refine`), and if in no frame the
        heights peak inside the radii tried (the guess is more than ``span``
        off, or the peaks are not on disks).

    Notes
    -----
    The heights of a ring peak a little outside a sharp edge (about
    ``width**2 / radius``, plus pixel effects): on noise-free
    :func:`gpucorr.synthetic.cbed_frame` lattices of radius 4 to 12 px the
    result is 0.05 to 0.16 px above the drawn radius. On the multislice
    frames of ``bench/physics`` (SrTiO3, nominal radius 8.70 px, where
    ``DiskEdge`` gives the smallest strain error at 8.70-8.72 px) it gives
    8.69 px at 10 nm and 8.65 px at 41 nm, the frames' own values spreading
    from 8.58 to 8.73 px. ``DiskEdge`` positions reach 2e-4 in strain there
    only with the radius right to about 0.02 px, so for thick crystals this
    is a start, not yet the answer (``docs/benchmarks.md``).

    Examples
    --------
    >>> from gpucorr.synthetic import cbed_frame
    >>> data, _, peaks = cbed_frame(fy=160, fx=160, radius=8.0)
    >>> r = fit_edge_radius(data, np.rint(peaks).astype(int), 7.5)
    >>> bool(8.0 < r < 8.1)
    True
    """
    from gpucorr.api import refine
    from gpucorr.patterns import DiskEdge

    check = DiskEdge(radius, width)          # checks radius and width
    for name, value in (("span", span), ("step", step)):
        check_real(name, value, minimum=0, strict=True)
    if step > span:
        raise ValueError(f"step must be <= span; got step={step!r}, span={span!r}")
    if not radius > span:
        raise ValueError(f"radius must be > span (the radii tried are radius +- span); "
                         f"got radius={radius!r}, span={span!r}")
    max_frames = check_count(max_frames, "max_frames", "an int >= 1")
    k = int(math.floor(span / step * (1 + 1e-9)))     # the radii tried lie within +- span
    if k > MAX_EDGE_RADII:
        raise ValueError(f"span / step must be at most {MAX_EDGE_RADII} (one refine call per "
                         f"radius tried, {2 * MAX_EDGE_RADII + 1} at most); got span={span!r}, "
                         f"step={step!r}")
    radii = radius + step * np.arange(-k, k + 1)
    if search is None:
        search = DiskEdge(radii[-1], check.width).search
    elif not check_real("search", search) >= radii[-1]:
        raise ValueError(f"search must be >= the largest radius tried, radius + span = "
                         f"{radii[-1]:g} px; got search={search!r}")
    sample = _frame_sample(frames, max_frames)
    totals = np.stack([
        np.asarray(to_host(refine(sample, peaks, DiskEdge(float(r), width, search=search),
                                  mode="fast", upsample=20, device=device, workers=workers)
                           .heights, "heights"), dtype=np.float64).sum(axis=-1)
        for r in radii])                                        # (K, frames)
    best = np.argmax(totals, axis=0)
    inside = (best > 0) & (best < len(radii) - 1)
    if not inside.any():
        raise ValueError(
            f"the edge response peaks at the end of the radii tried ({radii[0]:g} to "
            f"{radii[-1]:g} px) in every frame: radius={radius!r} is more than span={span!r} "
            f"px off the disks' radius, or the peaks are not on disks")
    cols = np.nonzero(inside)[0]
    i = best[cols]
    a, b, c = totals[i - 1, cols], totals[i, cols], totals[i + 1, cols]
    curvature = a - 2 * b + c
    offset = np.where(curvature < 0, 0.5 * (a - c) / np.where(curvature < 0, curvature, -1), 0)
    return float(np.median(radii[i] + step * offset))
