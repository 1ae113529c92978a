"""Arguments and result buffers of the per-frame functions of :mod:`gpucorr.correlation`.

Checks of peaks, frames and output buffers, the scratch arrays the kernels
fill and :func:`_store`, which copies them into the caller's buffers (with a
warning where the caller's dtype cannot hold a centre); and the crop buffers
(:func:`get_buf_count`, :func:`allocate_crop_bufs`).
"""
import warnings

import numpy as np
import sparseconverter

from gpucorr import _validate, pipeline
from gpucorr.backends import array_namespace, is_cupy, is_sparse


def _real_result_dtype(*dtypes):
    """Real dtype numpy promotion gives for ``dtypes`` (float32 at least)."""
    dt = np.result_type(np.float32, *[np.dtype(d) for d in dtypes])
    return np.dtype(np.float64) if dt in (np.float64, np.complex128) else np.dtype(np.float32)


def _peaks(xp, peaks, truncate=False):
    """Validated int64 peaks (P, 2) in ``xp``.

    Integer CuPy peaks are checked by shape and dtype only (no host sync);
    float CuPy peaks are checked on the host (one sync). ``truncate`` truncates
    float peaks toward zero (libertem-blobfinder's ``astype(np.int32)``).
    """
    if isinstance(peaks, (list, tuple)):
        peaks = np.asarray(peaks)
    if truncate and np.dtype(getattr(peaks, "dtype", np.int64)).kind == "f":
        host = peaks.get() if is_cupy(peaks) else peaks
        peaks = xp.asarray(_validate.check_peaks(host, truncate=True))
    return _validate.peaks_in(xp, peaks)


def _frame_2d(xp, frame, name="frame"):
    """A dense 2-D native-order frame in ``xp`` (sparse frames are densified)."""
    if is_sparse(frame):
        target = sparseconverter.NUMPY if xp is np else sparseconverter.CUPY
        frame = sparseconverter.for_backend(frame, target)
    frame = xp.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"{name} must be a 2-D frame (H, W); got shape {frame.shape}")
    _validate.frame_dtype(frame.dtype, name)
    if pipeline.native(frame.dtype) == np.float16:
        frame = frame.astype(np.float32)
    elif not frame.dtype.isnative:
        frame = frame.astype(pipeline.native(frame.dtype))
    return frame


def _buffers(*buffers):
    """The arguments that look like arrays: buffers join the namespace check, while
    anything else is left for their own checks, which name the argument."""
    return [b for b in buffers if hasattr(b, "shape") and hasattr(b, "dtype")]


def _out_buffers(n_peaks, out_centers, out_refineds, out_heights, out_elevations,
                 required=True):
    """Check the output buffers; ``None`` is a TypeError unless not ``required`` (then the
    caller allocates)."""
    _validate.check_out(out_centers, (n_peaks, 2), "out_centers", "iuf", required)
    _validate.check_out(out_refineds, (n_peaks, 2), "out_refineds", "f", required)
    _validate.check_out(out_heights, (n_peaks,), "out_heights", "f", required)
    _validate.check_out(out_elevations, (n_peaks,), "out_elevations", "f", required)


#: what a ``crop_function`` is called with (by keyword)
_CROP_SIGNATURE = "(peaks=, frame=, crop_size=, out_crop_bufs=)"


#: dtype of the centres each backend's evaluate kernel writes: int32 on the GPU (as
#: :func:`gpucorr.refine` returns them), int64 on the CPU (far-off peaks do not wrap)
_CENTERS_DTYPE = {"cpu": np.int64, "cuda": np.int32}


def _scratch(backend, n_peaks):
    """Result arrays (centers, refineds, heights, elevations) the evaluate kernel fills."""
    xp = backend.xp
    return (xp.empty((n_peaks, 2), _CENTERS_DTYPE[backend.name]),
            xp.empty((n_peaks, 2), np.float32), xp.empty(n_peaks, np.float32),
            xp.empty(n_peaks, np.float32))


def _check_centers(xp, centers, dtype, what, stacklevel):
    """Warn where ``dtype`` cannot hold a centre exactly (a correlation maximum above or left
    of the frame, negative, in libertem-blobfinder's uint16): such centres are stored as
    the reference stores them, wrapped by the cast. The check reads values, so it runs on
    the CPU only; on a GPU (no sync) the cast is as CuPy's."""
    if xp is not np:
        return
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        hi = 2 ** (np.finfo(dtype).nmant + 1)       # integers it holds exactly
        lo = -hi
    else:
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    src = np.iinfo(centers.dtype)
    if lo <= src.min and hi >= src.max:
        return
    if centers.size and (centers.min() < lo or centers.max() > hi):
        warnings.warn(
            f"{what} ({dtype}) cannot hold some centres (e.g. correlation maxima above or "
            "left of the frame): they are stored wrapped, as libertem-blobfinder stores them; "
            "their refineds are right. Use int32 centres (gpucorr.refine's) to keep them.",
            RuntimeWarning, stacklevel=stacklevel + 1)


def _store(dst, src, peaks):
    """Write the results ``src`` for ``peaks`` into the caller's buffers ``dst`` (None:
    skipped). On a GPU, rows of peaks beyond +-2**30 (CuPy peaks, not checked on the
    host) become NaN."""
    xp = array_namespace(src[0])
    if xp is not np:
        pipeline.mark_bad(xp, _validate.far_peaks(xp, peaks), src)
    if dst[0] is not None:
        # the caller's frame: _store <- the function <- on_data_device <- caller
        _check_centers(xp, src[0], dst[0].dtype, "out_centers", stacklevel=4)
    for d, s in zip(dst, src):
        if d is not None:
            d[...] = s


def get_buf_count(crop_size, n_peaks, dtype, limit=2**19):
    """Number of crops of ``2 * crop_size`` square that fit in ``limit`` bytes.

    At least 1, at most ``n_peaks``.

    >>> get_buf_count(crop_size=16, n_peaks=49, dtype="float32")
    49
    >>> get_buf_count(crop_size=64, n_peaks=49, dtype="float32")
    8
    """
    crop_size = _validate.check_crop_size(crop_size)
    full_size = (2 * crop_size) ** 2 * np.dtype(dtype).itemsize
    return int(min(max(1, int(limit) // full_size), int(n_peaks)))


def allocate_crop_bufs(crop_size, n_peaks, dtype, limit=2**19, xp=np):
    """Zeroed stack of crop buffers ``(get_buf_count(...), 2 * crop_size, 2 * crop_size)``.

    ``xp`` is the array module to allocate with: ``numpy`` (default) or
    ``cupy`` for buffers on the current GPU.

    >>> allocate_crop_bufs(crop_size=8, n_peaks=3, dtype="float32").shape
    (3, 16, 16)
    """
    count = get_buf_count(crop_size, n_peaks, dtype, limit)
    return xp.zeros((count, 2 * crop_size, 2 * crop_size), dtype=dtype)
