"""Cutting crops out of a frame and log-scaling them (or any array).

:func:`crop_disks_from_frame` (kernels) and :func:`crop_disks_from_frame_slicing`
(slicing, for sparse frames) cut the square around each peak;
:func:`log_scale` and :func:`log_scale_cropbufs_inplace` apply
``log(x - min + 1)``, refusing on the CPU a span that overflows the dtype.
"""
import numpy as np
import sparseconverter

from gpucorr import _validate, pipeline
from gpucorr.backends import array_namespace, get_backend
from gpucorr.backends.host import on_data_device
from gpucorr.correlation._buffers import _buffers, _frame_2d, _peaks, _real_result_dtype


@on_data_device
def log_scale(data, out):
    """``out[...] = log(data - min(data) + 1)``; returns ``out``.

    Backends: NumPy or CuPy (``data`` and ``out`` from the same library).
    Non-finite data raise ``ValueError`` on the CPU and give NaN on a GPU
    (no host sync).

    pydata-sparse ``data`` (COO, GCXS) with ``out=None`` gives a sparse result
    of the same format, as in libertem-blobfinder (its fill value stays 0 where
    the minimum is 0).

    >>> log_scale(np.array([1., 2., 4.]), out=np.empty(3))
    array([0.        , 0.69314718, 1.38629436])
    """
    if _is_pydata_sparse(data):
        return _log_scale_sparse(data, out)
    xp = array_namespace(data, out)
    # the dtype numpy.log gives for ``data`` (float16 for uint8, as before)
    data, result_dtype = _log_input(xp.asarray(data))
    low = _log_minimum(xp, data, data.dtype)
    if out is None:
        return xp.log(data - low + 1).astype(result_dtype, copy=False)
    return xp.log(data - low + 1, out=out)


def _is_pydata_sparse(arr):
    return type(arr).__module__.split(".")[0] == "sparse" and hasattr(arr, "fill_value")


def _log_scale_sparse(data, out):
    """:func:`log_scale` of a pydata-sparse array: a sparse result."""
    if out is not None:
        raise TypeError(f"out must be None for sparse data (the result is a new sparse "
                        f"array); got {type(out).__name__}")
    # NumPy's log dtype, but float32 for float16 (pydata sparse computes with numba,
    # which has no float16)
    data, result_dtype = _log_input(data, np.float32)
    low = _log_minimum(np, np.append(np.asarray(data.data), data.fill_value), data.dtype)
    return np.log(data - low + 1).astype(result_dtype)


def _log_input(data, *at_least):
    """``data`` (its dtype checked) ready to log-scale, and the dtype of the result: what
    ``numpy.log`` gives for ``data``, promoted with ``at_least``."""
    _validate.real_dtype(data.dtype, "data")
    result_dtype = np.result_type(np.log(np.ones(1, data.dtype)), *at_least)
    if np.dtype(data.dtype).kind in "iu":
        # integer arithmetic would wrap (uint8 0..255: 255 - 0 + 1 == 0); float64 holds
        # the shifted values exactly up to 2**53
        data = data.astype(np.float64)
    return data, result_dtype


def _log_minimum(xp, values, dtype, axis=None, name="data", extent="array",
                 where=lambda i: "in data"):
    """The minimum of ``values`` (per item along ``axis``) that the log scaling shifts by,
    after checking that they are finite and (on the CPU) that the shift stays finite in
    ``dtype`` (:func:`_check_log_span`)."""
    pipeline.check_finite(xp, ~xp.isfinite(values), name)
    low = xp.min(values, axis=axis)
    if xp is np and values.size:
        _check_log_span(dtype, np.reshape(low, -1), np.reshape(np.max(values, axis=axis), -1),
                        name, extent, where)
    return low


def _check_log_span(dtype, lo, hi, name, extent, where):
    """Raise where the log scaling ``log((x - min) + 1)`` of the values ``lo`` .. ``hi``
    (per item) is not finite in floating ``dtype`` (``hi - lo + 1`` overflows it).
    ``where(i)`` says where item ``i`` is. Non-finite items are left to the finiteness
    checks. (On the CPU only: it reads values.)"""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    over = _validate.log_scale_fails(dtype, lo, hi)
    if over.any():
        i = int(np.argmax(over))
        raise _validate.log_scale_error(name, extent, dtype, lo[i], hi[i], where(i))


@on_data_device
def log_scale_cropbufs_inplace(crop_bufs):
    """Log-scale each crop of a stack in place: ``log(x - min(x) + 1)`` per crop.

    Backends: NumPy or CuPy. Non-finite crops raise ``ValueError`` on the CPU
    and become NaN on a GPU (no host sync).

    >>> bufs = np.array([[[1., 2.]], [[5., 5.]]])
    >>> log_scale_cropbufs_inplace(bufs)
    >>> bufs
    array([[[0.        , 0.69314718]],
    <BLANKLINE>
           [[0.        , 0.        ]]])
    """
    if not (hasattr(crop_bufs, "ndim") and crop_bufs.ndim == 3):
        raise ValueError(
            f"crop_bufs must be an array (n, h, w); got {getattr(crop_bufs, 'shape', crop_bufs)}")
    if np.dtype(crop_bufs.dtype).kind != "f":
        raise TypeError(f"crop_bufs must be floating point to log-scale in place; "
                        f"got {crop_bufs.dtype}")
    xp = array_namespace(crop_bufs)
    low = _log_minimum(xp, crop_bufs, crop_bufs.dtype, axis=(-1, -2), name="crop_bufs",
                       extent="crop", where=lambda i: f"in crop_bufs[{i}]")
    # (x - min) + 1 in float64, rounded once to the crops' dtype, as the kernels do: the
    # minimum becomes exactly 1 however large it is (min - 1 would round to min beyond
    # 2**24 in float32, and the minimum to log(0))
    shifted = (crop_bufs - low.astype(np.float64)[:, np.newaxis, np.newaxis]) + 1.0
    crop_bufs[...] = shifted
    xp.log(crop_bufs, out=crop_bufs)


def _check_crop_args(xp, peaks, crop_size, out_crop_bufs):
    """Checked peaks and crop size, and ``out_crop_bufs`` that holds a crop for each peak."""
    _validate.check_crop_buffer(out_crop_bufs, "out_crop_bufs")
    peaks = _peaks(xp, peaks)
    crop_size = _validate.check_crop_size(crop_size)
    expected = (len(peaks), 2 * crop_size, 2 * crop_size)
    if tuple(out_crop_bufs.shape[1:]) != expected[1:] or len(out_crop_bufs) < len(peaks):
        raise ValueError(f"out_crop_bufs must have shape {expected} (or more crops); "
                         f"got {tuple(out_crop_bufs.shape)}")
    return peaks, crop_size


@on_data_device
def crop_disks_from_frame(peaks, frame, crop_size, out_crop_bufs):
    """Copy the ``2 * crop_size`` square around each peak into ``out_crop_bufs``.

    Pixels outside the frame are 0.

    Backends: NumPy (numba kernel) or CuPy (CUDA kernel), all arrays from the
    same library; with integer CuPy peaks no host sync.

    >>> frame = np.arange(16.).reshape(4, 4)
    >>> bufs = np.empty((1, 2, 2))
    >>> crop_disks_from_frame(np.array([[0, 1]]), frame, 1, bufs)
    >>> bufs[0]
    array([[0., 0.],
           [0., 1.]])
    """
    xp = array_namespace(peaks, frame, *_buffers(out_crop_bufs))
    peaks, crop_size = _check_crop_args(xp, peaks, crop_size, out_crop_bufs)
    frame = _frame_2d(xp, frame)
    n = len(peaks)
    h = 2 * crop_size
    tmp = xp.empty((1, n, h, h), dtype=_real_result_dtype(out_crop_bufs.dtype))
    get_backend(xp).crop_log(frame[None], peaks, crop_size, False, xp.zeros(1, tmp.dtype), tmp,
                             xp.zeros(n, np.bool_))
    out_crop_bufs[:n] = tmp[0]


@on_data_device
def crop_disks_from_frame_slicing(peaks, frame, crop_size, out_crop_bufs):
    """Like :func:`crop_disks_from_frame`, by slicing: works on sparse frames.

    ``frame`` may be any array sparseconverter knows (NumPy, scipy.sparse,
    pydata sparse, CuPy); each cut-out is converted to the type of
    ``out_crop_bufs``.

    Backends: a CuPy frame needs CuPy peaks and a CuPy ``out_crop_bufs``;
    the peaks are then read on the host (one sync) to slice the frame, and
    the cut-outs are copied on the GPU. Mixing CuPy with NumPy or SciPy
    sparse arguments raises ``TypeError``.
    """
    xp = array_namespace(peaks, frame, *_buffers(out_crop_bufs))
    peaks, crop_size = _check_crop_args(xp, peaks, crop_size, out_crop_bufs)
    fy, fx = frame.shape
    size = 2 * crop_size
    target = sparseconverter.get_backend(out_crop_bufs)
    for i, (py, px) in enumerate(peaks.tolist()):
        y0, x0 = py - crop_size, px - crop_size
        ya, yb = max(y0, 0), min(max(y0 + size, 0), fy)
        xa, xb = max(x0, 0), min(max(x0 + size, 0), fx)
        out_crop_bufs[i] = 0
        if ya < yb and xa < xb:
            out_crop_bufs[i, ya - y0:yb - y0, xa - x0:xb - x0] = sparseconverter.for_backend(
                frame[ya:yb, xa:xb], target)
