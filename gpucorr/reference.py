"""Refinement against a reference: each disk correlated with its own mean in a reference
region, the disk shape taken from the data itself.

This module owns :func:`refine_by_reference` and :func:`reference_templates`. Where the
disks carry contrast of their own (dynamical diffraction: bright sides, dark bands,
different for every reflection), one template for all disks matches none of them
exactly, and the mismatch moves the correlation peak. A reference region of the scan
(unstrained material, or the substrate) holds every disk's own shape: its mean crop
around each peak is that disk's template, and each frame's disk is located by how
far it has moved from it. The result measures displacements relative to the
reference, which is what a strain map relative to a reference region needs.

Backends
--------
Whatever :func:`gpucorr.refine` runs on: the templates are built on the host from
the reference's mean frame, then one ``refine`` call correlates every peak with its
own template (:class:`~gpucorr.patterns.PeakTemplates`).
"""
import math
import numbers

import numpy as np

from gpucorr.backends.host import like, to_host
from gpucorr.execution.sources import stack_list

__all__ = ["refine_by_reference", "reference_templates"]


def _check_scaling(scaling):
    if scaling not in ("log", "none"):
        raise ValueError(f"scaling must be 'log' or 'none'; got {scaling!r}")
    return scaling


def _check_peaks(peaks):
    arr = np.asarray(to_host(peaks, "peaks"))
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"peaks must be an integer array of shape (P, 2), P >= 1; got shape "
                         f"{arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"peaks must be integers (y, x); got dtype {arr.dtype}")
    return arr.astype(np.int64)


def default_search(peaks):
    """Half the smallest distance between two peaks, rounded down (at least 2)."""
    peaks = _check_peaks(peaks)
    if len(peaks) < 2:
        raise ValueError("search must be given for a single peak (the default is half the "
                         "distance to the nearest other peak)")
    d = np.sqrt(((peaks[:, None, :] - peaks[None, :, :]) ** 2).sum(-1).astype(np.float64))
    d[np.arange(len(peaks)), np.arange(len(peaks))] = np.inf
    if d.min() == 0:
        p, q = sorted(int(i) for i in np.unravel_index(np.argmin(d), d.shape))
        raise ValueError(f"peaks {p} and {q} are the same, {tuple(int(v) for v in peaks[p])}: "
                         f"give each disk once (or pass search)")
    return max(2, int(math.floor(d.min() / 2)))


def _check_search(search, peaks):
    if search is None:
        return default_search(peaks)
    if (isinstance(search, (bool, np.bool_)) or not isinstance(search, numbers.Integral)):
        raise TypeError(f"search must be an int >= 2 (half the side of each template, px); "
                        f"got {search!r} ({type(search).__name__})")
    if search < 2:
        raise ValueError(f"search must be an int >= 2; got {search!r}")
    return int(search)


def _is_region(reference):
    return isinstance(reference, str) or (
        isinstance(reference, tuple) and all(isinstance(s, slice) for s in reference))


def _mean_frame(reference, frames):
    """The reference's mean frame (float64, host): ``reference`` frames (..., H, W), or a
    region of ``frames``' scan positions (``"0:10,0:64"`` or a tuple of slices)."""
    if _is_region(reference):
        from gpucorr.lattice import parse_region
        if frames is None:
            raise ValueError(f"reference {reference!r} is a region of scan positions: pass "
                             "the frames it refers to (frames=...)")
        shape = tuple(frames.shape)
        if len(shape) < 3:
            raise ValueError(f"reference {reference!r} is a region of scan positions, but the "
                             f"frames have none (shape {shape})")
        region = parse_region(reference) if isinstance(reference, str) else reference
        if len(region) != len(shape) - 2 or not all(isinstance(s, slice) for s in region):
            raise ValueError(f"reference must be one slice per scan axis ({len(shape) - 2}); "
                             f"got {reference!r}")
        reference = frames[region]
    reference = stack_list(reference)
    if not hasattr(reference, "shape"):
        reference = np.asarray(reference)
    shape = tuple(reference.shape)
    if len(shape) < 2:
        raise ValueError(f"reference must be frames (..., H, W) or a region of the scan; "
                         f"got shape {shape}")
    if math.prod(shape[:-2]) == 0:
        raise ValueError(f"reference holds no frame (shape {shape})")
    if 0 in shape[-2:]:
        raise ValueError(f"reference frames are empty (shape {shape})")
    if frames is not None and tuple(frames.shape[-2:]) != shape[-2:]:
        raise ValueError(f"reference frames must have the frames' shape "
                         f"{tuple(frames.shape[-2:])}; got {shape[-2:]}")
    dtype = np.dtype(reference.dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"reference must hold real numbers; got dtype {dtype}")
    # summed one index of the first axis at a time: a reference on disk (memmap, HDF5)
    # or on a GPU is never copied whole to host memory
    rows = [reference] if len(shape) == 2 else (reference[i] for i in range(shape[0]))
    total = np.zeros(shape[-2:])
    for row in rows:
        data = np.asarray(to_host(row, "reference"))
        total += data.reshape((-1,) + shape[-2:]).sum(axis=0, dtype=np.float64)
    mean = total / math.prod(shape[:-2])
    if not np.all(np.isfinite(mean)):
        raise ValueError("reference holds NaN or infinite values")
    return mean


def reference_templates(reference, peaks, search=None, scaling="log", *, frames=None):
    """Each disk's template: its crop of the reference's mean frame.

    Parameters
    ----------
    reference : array (..., H, W), or str / tuple of slices with ``frames``
        Reference frames (any leading axes), or a region of ``frames``' scan
        positions such as ``"0:10,0:64"`` (see :func:`gpucorr.lattice.parse_region`).
    peaks : integer array (P, 2)
        ``(y, x)`` of the disks in the reference.
    search : int, optional
        Half the side of each template, >= 2 (the templates are ``2 search``
        square, centred on the peak). Default: half the distance between the
        two nearest peaks.
    scaling : {"log", "none"}
        ``"log"`` (default): ``log(x - min + 1)`` of each crop, as ``refine``
        scales the frames' crops; ``"none"``: as they are.
    frames : array, optional
        The frames a region refers to.

    Returns
    -------
    numpy.ndarray (P, 2 search, 2 search) float64
        Zero-mean templates; crop ``p`` covers rows ``peaks[p, 0] - search`` to
        ``peaks[p, 0] + search - 1`` (likewise columns), 0 outside the frame.

    Examples
    --------
    >>> from gpucorr.synthetic import cbed_frame
    >>> data, _, centers = cbed_frame(fy=64, fx=64, radius=3)
    >>> peaks = np.rint(centers).astype(int)
    >>> templates = reference_templates(data, peaks)
    >>> templates.shape[0] == len(peaks), abs(float(templates.mean())) < 1e-12
    (True, True)
    """
    scaling = _check_scaling(scaling)
    peaks = _check_peaks(peaks)
    search = _check_search(search, peaks)
    return _crops(_mean_frame(reference, stack_list(frames)), peaks, search, scaling)


def _crops(mean, peaks, search, scaling):
    """The zero-mean (log-scaled) ``2 search`` squares of ``mean`` about ``peaks``."""
    h, w = mean.shape
    if 2 * search > min(h, w):
        raise ValueError(f"search={search} makes templates of {2 * search}x{2 * search} px, "
                         f"larger than the {h}x{w} frames")
    padded = np.zeros((h + 4 * search, w + 4 * search))
    padded[2 * search:2 * search + h, 2 * search:2 * search + w] = mean
    out = np.empty((len(peaks), 2 * search, 2 * search))
    for p, (y, x) in enumerate(peaks):
        y0, x0 = y - search + 2 * search, x - search + 2 * search
        if not (0 <= y0 and y0 + 2 * search <= padded.shape[0]
                and 0 <= x0 and x0 + 2 * search <= padded.shape[1]):
            raise ValueError(f"peak {p} at ({y}, {x}) lies more than search={search} px "
                             f"outside the {h}x{w} frame")
        crop = padded[y0:y0 + 2 * search, x0:x0 + 2 * search]
        if scaling == "log":
            crop = np.log((crop - crop.min()) + 1)
        out[p] = crop - crop.mean()
    return out


def refine_by_reference(frames, peaks, reference, *, pattern=None, search=None,
                        scaling="log", upsample=20, device=None, memory_limit=None,
                        workers=None, progress=None):
    """Refine every disk of every frame against the same disk in a reference.

    Each disk's template is its own crop of the reference's mean frame
    (:func:`reference_templates`); each frame's crop around the peak is correlated
    with it (:func:`gpucorr.refine` in fast mode with
    :class:`~gpucorr.patterns.PeakTemplates`, one template per peak; the frames are
    read once), so the refined position is ``peak + the disk's displacement from
    the reference``. Fit the lattice of these positions and of the reference's own
    (``refine_by_reference(reference_frames, peaks, reference_frames)``) and take the
    strain of one relative to the other.

    Parameters
    ----------
    frames : array (..., H, W)
        As for :func:`gpucorr.refine`.
    peaks : integer array (P, 2)
        ``(y, x)`` of the disks in the reference, P >= 1.
    reference : array (..., H, W), or str / tuple of slices
        The reference frames, or a region of ``frames``' scan positions
        (``"0:10,0:64"``).
    pattern : gpucorr.patterns.MatchPattern, optional
        Measures the centre of every disk in the reference's mean frame
        (:func:`gpucorr.refine`, fast mode, with ``upsample``); the positions are
        then those centres plus the displacements, so their lattice is absolute
        and not only relative to the reference. For disks with contrast inside,
        ``DiskEdge`` at the radius :func:`gpucorr.fit_edge_radius` measures.
        Default: none, the positions are ``peaks`` plus the displacements.
    search : int, optional
        Half the side of the templates and crops, >= 2. Default: half the
        distance between the two nearest peaks, so no crop reaches the next disk.
    scaling : {"log", "none"}
        Of the templates and the frames' crops. Default ``"log"`` (measured the
        more accurate here).
    upsample, device, memory_limit, workers, progress
        As for :func:`gpucorr.refine` (fast mode); ``upsample`` defaults to 20.

    Returns
    -------
    RefineResult
        As :func:`gpucorr.refine`'s, in the frames' array library; ``refineds``
        minus ``peaks`` is each disk's displacement from the reference.

    Raises
    ------
    TypeError, ValueError
        For bad arguments, naming them.

    Notes
    -----
    The templates carry the noise of the reference's mean, and the log step
    bends flat, sharp disks (below): for flat disks a built-in pattern is the
    better choice. On the demo's scan (flat disks, 1e6 counts per frame, an
    8-frame reference region) the strain error is 2e-4 against 3e-5 with
    ``Circular``.

    Without ``pattern``, ``refineds`` are ``peak + displacement``: they carry
    each disk's sub-pixel offset from its rounded peak in the reference (up to
    0.5 px, the same in every frame). A lattice fit of them shows it as
    residual; strain relative to the reference does not see it.

    With ``pattern=DiskEdge(fit_edge_radius(reference, peaks, 8.7))`` the
    multislice frames' strain against the known field (not a reference) is
    0.7-22e-4 over the 12 conditions, within the accuracy issue's targets in
    all of them (libertem-blobfinder's best: 8.7-37e-4).

    One ``refine`` call in fast mode: the frames are read once. On a GPU, fast
    mode with per-peak templates runs as separate kernels, not the fused one.
    Results do not depend on how the frames are batched.

    On the multislice frames of ``bench/physics`` (strain relative to an
    unstrained reference scan, 25 disks, elevation-weighted lattice fits) the
    RMS strain error is 1.7 / 2.6e-4 at 10 nm noise-free (uniform /
    non-uniform strain) against 3.2 / 3.5e-4 for ``DiskEdge`` and 2.8 / 4.0e-4
    for libertem-blobfinder's best setting; 22 / 21e-4 at 1e4 electrons per
    frame against 29 / 28e-4 and 27 / 26e-4. At 41 nm: 3.0 / 5.6e-4 noise-free
    (``DiskEdge`` 3.4 / 2.5e-4) and 13 / 11e-4 at 1e4 electrons (``DiskEdge``
    18 / 18e-4, libertem-blobfinder 19 / 18e-4) (``docs/benchmarks.md``).

    The log step (the default) is the better choice for disks with contrast
    inside, but it bends the antialiased edge of flat, sharp synthetic disks
    differently from the template's: on :func:`~gpucorr.synthetic.cbed_frame`
    lattices moved by (0.3, -0.2) px it measures 0.25-0.31 / 0.17-0.20 px;
    ``scaling="none"`` measures 0.295 / 0.190 px for every disk.

    Examples
    --------
    A lattice moved by (0.3, -0.2) px against the reference:

    >>> from gpucorr.synthetic import cbed_frame
    >>> ref, _, centers = cbed_frame(fy=96, fx=96, radius=4, zero=(48, 48))
    >>> moved, _, _ = cbed_frame(fy=96, fx=96, radius=4, zero=(48.3, 47.8))
    >>> peaks = np.rint(centers).astype(int)
    >>> res = refine_by_reference(moved[0], peaks, ref, scaling="none")
    >>> np.round(np.median(res.refineds - peaks, axis=0), 2)
    array([ 0.3 , -0.19])
    """
    from gpucorr.api import RefineResult, refine
    from gpucorr.patterns import PeakTemplates
    from gpucorr.backends.host import as_native

    frames = as_native(stack_list(frames), "frames")
    scaling = _check_scaling(scaling)
    host_peaks = _check_peaks(peaks)
    search = _check_search(search, host_peaks)
    mean = _mean_frame(reference, frames)
    templates = _crops(mean, host_peaks, search, scaling)
    if pattern is not None:      # the reference disks' own centres
        centres = refine(mean, host_peaks, pattern, upsample=upsample, device="cpu")
        offsets = np.asarray(centres.refineds, dtype=np.float64) - host_peaks
    peaks = like(host_peaks, frames)     # in the frames' array library
    res = refine(frames, peaks, PeakTemplates(templates, search=search), mode="fast",
                 upsample=upsample, device=device, memory_limit=memory_limit,
                 workers=workers, progress=progress, scaling=scaling)
    if pattern is None:
        return res
    return RefineResult(res.centers, res.refineds + like(offsets.astype(np.float32), res.refineds),
                        res.heights, res.elevations)
