"""Whole frames: :func:`process_frame_fast` and :func:`process_frame_full` for one frame,
:func:`process_frames_fast` and :func:`process_frames_full` for a stack (through
:func:`gpucorr.refine`), with libertem-blobfinder's arguments and result types.
"""
import numpy as np

from gpucorr import _validate, pipeline
from gpucorr.api import refine
from gpucorr.backends import array_namespace, get_backend
from gpucorr.backends.host import on_data_device
from gpucorr.correlation._buffers import (
    _CROP_SIGNATURE, _buffers, _check_centers, _frame_2d, _out_buffers, _peaks,
    _real_result_dtype, _scratch, _store,
)
from gpucorr.correlation._crops import (
    _check_log_span, crop_disks_from_frame, log_scale_cropbufs_inplace,
)
from gpucorr.execution import check_log_overflow


def _blocks(n_peaks, block):
    for start in range(0, n_peaks, block):
        yield start, min(start + block, n_peaks)


@on_data_device
def process_frame_fast(template, crop_size, frame, peaks,
                       out_centers, out_refineds, out_heights, out_elevations,
                       crop_bufs, upsample=False, crop_function=crop_disks_from_frame):
    """Find and refine the peaks of one frame: crop around each peak, then correlate.

    Drop-in for libertem-blobfinder's ``process_frame_fast``; see
    :func:`gpucorr.refine` to process a whole stack in one call.

    Parameters
    ----------
    template : complex array (2 cs, cs + 1)
        ``pattern.get_template((2 * cs, 2 * cs))`` with ``cs = crop_size``.
    crop_size : int
        ``pattern.get_crop_size()``.
    frame : array (H, W)
        One frame, any real dtype; scipy.sparse and pydata sparse frames work.
    peaks : integer array (P, 2)
    out_centers : array (P, 2), integer
    out_refineds : array (P, 2), float
    out_heights, out_elevations : arrays (P,), float
        Output buffers, filled in place.
    crop_bufs : float32 or float64 array (n, 2 cs, 2 cs)
        Scratch; its length ``n`` is the number of peaks processed per block
        (:func:`allocate_crop_bufs`). Its contents are undefined afterwards.
        Integer buffers raise ``TypeError`` (they would truncate the frame).
    upsample : bool or int
        ``True`` (factor 20) or an int >= 2 to refine by DFT upsampling.
    crop_function : callable
        Crops the frame (default :func:`crop_disks_from_frame`), called as
        ``crop_function(peaks=, frame=, crop_size=, out_crop_bufs=)``.

    Returns
    -------
    None
        The results are in the output buffers.

    Notes
    -----
    Backends: NumPy frames run on the CPU (numba), CuPy frames on their GPU
    (CUDA kernels). With a CuPy frame every array argument is CuPy: the
    template (``cupy.asarray(pattern.get_template(...))``), the peaks, the
    output buffers and ``crop_bufs`` (``allocate_crop_bufs(..., xp=cupy)``);
    a NumPy one among them raises ``TypeError``. ``crop_function`` may be
    :func:`crop_disks_from_frame_slicing` (as libertem-blobfinder's UDF uses
    on CuPy). Integer CuPy peaks need no host sync. On a GPU, non-finite
    pixels in a crop give NaN refineds, heights and elevations for that peak
    (the CPU raises ``ValueError``).

    Examples
    --------
    >>> from gpucorr.correlation import allocate_crop_bufs
    >>> from gpucorr.patterns import RadialGradient
    >>> from gpucorr.synthetic import cbed_frame
    >>> frames, indices, peaks = cbed_frame(radius=4)
    >>> pattern = RadialGradient(radius=4)
    >>> crop_size = pattern.get_crop_size()
    >>> template = pattern.get_template(sig_shape=(2 * crop_size, 2 * crop_size))
    >>> centers = np.zeros((len(frames), len(peaks), 2), dtype=np.uint16)
    >>> refineds = np.zeros((len(frames), len(peaks), 2), dtype=np.float32)
    >>> heights = np.zeros((len(frames), len(peaks)), dtype=np.float32)
    >>> elevations = np.zeros((len(frames), len(peaks)), dtype=np.float32)
    >>> crop_bufs = allocate_crop_bufs(crop_size, len(peaks), frames.dtype)
    >>> for i, f in enumerate(frames):
    ...     process_frame_fast(
    ...         template=template, crop_size=crop_size,
    ...         frame=f, peaks=peaks.astype(np.int32),
    ...         out_centers=centers[i], out_refineds=refineds[i],
    ...         out_heights=heights[i], out_elevations=elevations[i],
    ...         crop_bufs=crop_bufs)
    >>> assert np.allclose(refineds[0], peaks, atol=0.1)
    """
    outs = (out_centers, out_refineds, out_heights, out_elevations)
    xp = array_namespace(frame, peaks, template, *_buffers(crop_bufs, *outs))
    backend = get_backend(xp)
    peaks = _peaks(xp, peaks)
    factor = _validate.check_upsample(upsample)
    _out_buffers(len(peaks), *outs)
    _validate.check_callable(crop_function, "crop_function", _CROP_SIGNATURE)
    # libertem-blobfinder log-scales in crop_bufs, so it refuses integer ones too
    _validate.check_crop_buffer(crop_bufs, "crop_bufs")
    custom_crop = crop_function is not crop_disks_from_frame
    if not custom_crop:
        frame = _frame_2d(xp, frame)
    crop_size = _validate.check_crop_size(crop_size, frame.shape)
    size = 2 * crop_size
    if crop_bufs.ndim != 3 or tuple(crop_bufs.shape[1:]) != (size, size) \
            or len(crop_bufs) < 1:
        raise ValueError(f"crop_bufs must have shape (n >= 1, {size}, {size}); "
                         f"got {getattr(crop_bufs, 'shape', crop_bufs)}")
    _validate.check_template(template, (size, size))
    frame_dtype = frame.dtype if np.dtype(frame.dtype).kind == "f" else np.float32
    rdtype = _real_result_dtype(frame_dtype, template.dtype)
    filt = pipeline.correlation_filter(xp, template, (size, size), rdtype)
    for start, stop in _blocks(len(peaks), len(crop_bufs)):
        block = peaks[start:stop]
        scratch = _scratch(backend, len(block))
        if custom_crop:
            bufs = crop_bufs[:stop - start]
            crop_function(peaks=block, frame=frame, crop_size=crop_size, out_crop_bufs=bufs)
            crops = xp.array(bufs, dtype=rdtype)
            if xp is np:
                _check_log_span(rdtype, crops.min(axis=(1, 2)), crops.max(axis=(1, 2)),
                                "frame", "crop", lambda i: "in the crop around peak "
                                f"{tuple(block[i].tolist())} (cut by crop_function)")
            log_scale_cropbufs_inplace(crops)
            pipeline.finish_fast(backend, crops, block, crop_size, filt, factor, scratch)
            pipeline.mark_bad(xp, ~xp.isfinite(crops).all(axis=(1, 2)), scratch)
        else:
            pipeline.run_fast(backend, frame[None], block, crop_size, filt, factor, scratch)
            check_log_overflow(xp, frame[None], block, crop_size, "fast", rdtype, scratch,
                                name="frame")
        _store([o[start:stop] for o in outs], scratch, block)


@on_data_device
def process_frame_full(template, crop_size, frame, peaks,
                       out_centers=None, out_refineds=None, out_heights=None,
                       out_elevations=None, frame_buf=None, buf_count=None,
                       upsample=False, crop_function=crop_disks_from_frame):
    """Find and refine the peaks of one frame: correlate the whole frame, then crop.

    Drop-in for libertem-blobfinder's ``process_frame_full``; see
    :func:`gpucorr.refine` (``mode="full"``) for a whole stack.

    Parameters
    ----------
    template : complex array (H, W // 2 + 1)
        ``pattern.get_template(frame.shape)``.
    crop_size : int
        ``pattern.get_crop_size()``.
    frame : array (H, W)
        One frame, any real dtype.
    peaks : integer array (P, 2)
    out_centers, out_refineds, out_heights, out_elevations : arrays, optional
        Output buffers as in :func:`process_frame_fast`; allocated if omitted.
    frame_buf : array (H, W), optional
        Accepted for compatibility; gpucorr uses its own scratch.
    buf_count : int, optional
        Accepted for compatibility (peaks per block).
    upsample : bool or int
        ``True`` (factor 20) or an int >= 2 to refine by DFT upsampling.
    crop_function : callable
        Crops the correlation map (default :func:`crop_disks_from_frame`).

    Returns
    -------
    (centers, refineds, heights, elevations)
        The output buffers (libertem-blobfinder returns None); those not
        given are allocated in the array library of ``frame``.

    Notes
    -----
    Backends: as :func:`process_frame_fast`; with a CuPy frame, the template,
    peaks and any given buffers (``frame_buf`` included) are CuPy too. On a
    GPU a non-finite frame gives NaN refineds, heights and elevations.

    Examples
    --------
    >>> from gpucorr.patterns import RadialGradient
    >>> from gpucorr.synthetic import cbed_frame
    >>> frames, indices, peaks = cbed_frame()
    >>> pattern = RadialGradient(radius=4)
    >>> template = pattern.get_template(sig_shape=frames[0].shape)
    >>> centers, refineds, heights, elevations = process_frame_full(
    ...     template=template, crop_size=pattern.get_crop_size(),
    ...     frame=frames[0], peaks=peaks.astype(np.int32))
    >>> assert np.allclose(refineds, peaks, atol=0.1)
    """
    xp = array_namespace(frame, peaks, template,
                         *_buffers(out_centers, out_refineds, out_heights, out_elevations,
                                   frame_buf))
    backend = get_backend(xp)
    peaks = _peaks(xp, peaks)
    factor = _validate.check_upsample(upsample)
    frame = _frame_2d(xp, frame)
    crop_size = _validate.check_crop_size(crop_size, frame.shape)
    _validate.check_template(template, frame.shape)
    n = len(peaks)
    outs = [out_centers, out_refineds, out_heights, out_elevations]
    _out_buffers(n, *outs, required=False)
    _validate.check_callable(crop_function, "crop_function", _CROP_SIGNATURE)
    defaults = (xp.zeros((n, 2), np.uint16), xp.zeros((n, 2), np.float32),
                xp.zeros(n, np.float32), xp.zeros(n, np.float32))
    outs = [d if o is None else o for o, d in zip(outs, defaults)]
    if buf_count is not None and (not isinstance(buf_count, (int, np.integer)) or buf_count < 1):
        raise ValueError(f"buf_count must be a positive int or None; got {buf_count!r}")
    frame_dtype = frame.dtype if np.dtype(frame.dtype).kind == "f" else np.float32
    rdtype = _real_result_dtype(frame_dtype, template.dtype)
    filt = pipeline.correlation_filter(xp, template, frame.shape, rdtype)
    scratch = _scratch(backend, n)
    if crop_function is crop_disks_from_frame:
        pipeline.run_full(backend, frame[None], peaks, crop_size, filt, factor, scratch)
    else:
        bad = xp.zeros(1, dtype=np.bool_)
        maps, _, offsets = pipeline.full_maps(backend, frame[None], filt, bad=bad)
        crops = xp.zeros((n, 2 * crop_size, 2 * crop_size), dtype=rdtype)
        crop_function(peaks=peaks, frame=maps[0] + offsets[0].astype(rdtype),
                      crop_size=crop_size, out_crop_bufs=crops)
        crops -= offsets[0].astype(rdtype)
        pipeline.finish_full(backend, crops, maps, offsets, peaks, crop_size, factor, scratch)
        pipeline.mark_bad(xp, xp.repeat(bad, n), scratch)
    check_log_overflow(xp, frame[None], peaks, crop_size, "full", rdtype, scratch,
                        name="frame")
    _store(outs, scratch, peaks)
    return tuple(outs)


def _process_frames(mode, centers_dtype, pattern, frames, peaks, upsample):
    """:func:`gpucorr.refine` with libertem-blobfinder's peak truncation and result types."""
    _validate.check_pattern(pattern)
    xp = array_namespace(frames, peaks)
    # libertem-blobfinder truncates peaks with astype(np.int32)
    peaks = _peaks(xp, peaks, truncate=True).astype(np.int32).astype(np.int64)
    res = refine(frames, peaks, pattern, mode=mode, upsample=upsample, scaling="log")
    _check_centers(array_namespace(res.centers), res.centers, centers_dtype,
                   f"process_frames_{mode}'s centers", stacklevel=3)
    return (res.centers.astype(centers_dtype), res.refineds, res.heights, res.elevations)


def process_frames_fast(pattern, frames, peaks, upsample=False):
    """Fast-mode results for a stack of frames, as libertem-blobfinder returns them.

    Runs :func:`gpucorr.refine` (batched) and returns the tuple
    ``(centers (N, P, 2) int16, refineds, heights, elevations)``. CuPy
    ``frames`` and ``peaks`` run on their GPU and give CuPy results; float
    CuPy peaks are truncated after a check on the host (one sync).

    Examples
    --------
    >>> from gpucorr.patterns import RadialGradient
    >>> from gpucorr.synthetic import cbed_frame
    >>> frames, indices, peaks = cbed_frame()
    >>> centers, refineds, heights, elevations = process_frames_fast(
    ...     pattern=RadialGradient(radius=4), frames=frames, peaks=peaks.astype(np.int32))
    >>> assert np.allclose(refineds[0], peaks, atol=0.1)
    """
    return _process_frames("fast", np.int16, pattern, frames, peaks, upsample)


def process_frames_full(pattern, frames, peaks, upsample=False):
    """Full-mode results for a stack of frames, as libertem-blobfinder returns them.

    Runs :func:`gpucorr.refine` (``mode="full"``, batched) and returns the tuple
    ``(centers (N, P, 2) uint16, refineds, heights, elevations)``. CuPy input
    as in :func:`process_frames_fast`.

    Examples
    --------
    >>> from gpucorr.patterns import RadialGradient
    >>> from gpucorr.synthetic import cbed_frame
    >>> frames, indices, peaks = cbed_frame(radius=4)
    >>> centers, refineds, heights, elevations = process_frames_full(
    ...     pattern=RadialGradient(radius=4), frames=frames, peaks=peaks.astype(np.int32))
    >>> assert np.allclose(refineds[0], peaks, atol=0.1)
    """
    return _process_frames("full", np.uint16, pattern, frames, peaks, upsample)
