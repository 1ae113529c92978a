"""Argument checks shared by the public functions.

Every check raises ``TypeError`` (wrong kind of thing) or ``ValueError``
(right kind, wrong value) with a message that names what was given and what
is allowed.
"""
import math
import numbers
import operator

import numpy as np

from gpucorr.backends import is_cupy

#: the largest accepted upsampling factor (the search grid is ``1.5 * factor`` square)
MAX_UPSAMPLE = 1000
#: the factor that ``upsample=True`` stands for
DEFAULT_UPSAMPLE = 20


def _shape(arr):
    return tuple(getattr(arr, "shape", np.shape(arr)))


def is_real_number(value):
    """True for Python and NumPy real scalars, False for bool and the rest."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_int(value):
    """True for Python and NumPy integers, False for bool and the rest."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def real_dtype(dtype, name):
    """Raise TypeError unless ``dtype`` is a real integer or floating dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must have a real integer or floating dtype "
            f"(uint8, uint16, int32, float32, float64, ...); got {dtype}"
        )
    return dtype


def frame_dtype(dtype, name="frames"):
    """Raise TypeError unless ``dtype`` is a real dtype the kernels read: integers and
    floats of at most 64 bits (``numpy.longdouble``, float128 on x86-64, is refused: it
    cannot be converted to float64 exactly, so gpucorr will not do it behind the
    caller's back)."""
    dtype = real_dtype(dtype, name)
    if dtype.itemsize > 8:
        raise TypeError(
            f"{name} must have a real dtype of at most 64 bits (uint8, uint16, int32, "
            f"float32, float64, ...); got {dtype} ({dtype.itemsize * 8}-bit); convert it "
            f"first, e.g. {name}.astype(numpy.float64), if that precision loss is acceptable"
        )
    return dtype


def check_count(value, name, allowed, allow_none=False):
    """``value`` as an int >= 1 (``None`` passes where ``allow_none``).

    Only integers count: bool, float (1.5, NaN, inf) and str ("2") are a
    TypeError naming ``name``; integers below 1 a ValueError. ``allowed``
    says what is allowed, e.g. ``"an int >= 1"``.
    """
    if value is None and allow_none:
        return None
    if not is_int(value):
        raise TypeError(f"{name} must be {allowed}; got {value!r} ({type(value).__name__})")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be {allowed}; got {value}")
    return value


def check_workers(workers, allow_none=True):
    """``workers`` (threads) as an int >= 1, or None where ``allow_none``."""
    return check_count(workers, "workers", "an int >= 1" + (" or None" if allow_none else ""),
                       allow_none=allow_none)


def check_memory_limit(memory_limit):
    """``memory_limit`` (bytes) as an int >= 1, or None."""
    return check_count(memory_limit, "memory_limit", "a positive int (bytes) or None",
                       allow_none=True)


#: largest |peak| coordinate: centres (int32) hold every position of its crops
PEAK_LIMIT = 2**30


def check_peaks(peaks, name="peaks", truncate=False):
    """Peaks as an int64 array (P, 2).

    Integer dtypes pass; floats pass when they hold whole numbers, or are
    truncated toward zero with ``truncate=True`` (as libertem-blobfinder's
    ``peaks.astype(np.int32)`` does).
    """
    if isinstance(peaks, (list, tuple)):
        peaks = np.asarray(peaks)
    shape = _shape(peaks)
    if len(shape) != 2 or shape[1] != 2:
        raise ValueError(f"{name} must have shape (P, 2) of (y, x) positions; got {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {shape}); give at least one (y, x) position")
    dtype = np.dtype(peaks.dtype)
    if dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integer (y, x) positions; got dtype {dtype}")
    if dtype.kind == "f":
        if not np.all(np.isfinite(peaks)):
            raise ValueError(f"{name} contain NaN or infinite values")
        if not truncate and not np.array_equal(peaks, np.trunc(peaks)):
            bad = peaks[peaks != np.trunc(peaks)][0]
            raise ValueError(
                f"{name} must be integer (y, x) positions; got non-integer values "
                f"(e.g. {bad}); round them first (numpy.rint(peaks).astype(int))"
            )
    # compared as they are: abs() of int64's minimum is negative, and a conversion to int64
    # first would wrap large unsigned or float values into range
    values = np.trunc(peaks) if dtype.kind == "f" else peaks
    lo, hi = np.min(values), np.max(values)
    if hi > PEAK_LIMIT or lo < -PEAK_LIMIT:
        raise ValueError(f"{name} hold positions beyond +-2**30 (centres are int32); got "
                         f"{hi if hi > PEAK_LIMIT else lo}")
    return np.ascontiguousarray(peaks, dtype=np.int64)


def far_peaks(xp, peaks):
    """Mask (P,) of int64 ``peaks`` beyond +-PEAK_LIMIT, computed where they are (no
    sync): integer CuPy peaks reach the GPU unchecked (:func:`peaks_in`), and their
    rows get NaN results (:func:`gpucorr.pipeline.mark_bad`) instead of an error."""
    return xp.any((peaks > PEAK_LIMIT) | (peaks < -PEAK_LIMIT), axis=1)


def check_upsample(upsample):
    """Upsampling factor as an int; 0 or 1 mean no upsampling.

    ``False``/``None`` -> 0, ``True`` -> 20, an int 0..1000 -> itself.
    """
    if upsample is None or upsample is False:
        return 0
    if upsample is True:
        return DEFAULT_UPSAMPLE
    if isinstance(upsample, (bool, np.bool_)):
        return DEFAULT_UPSAMPLE if upsample else 0
    if not isinstance(upsample, numbers.Integral):
        raise TypeError(
            f"upsample must be False, True or an integer factor >= 2; got {upsample!r} "
            f"({type(upsample).__name__})"
        )
    factor = operator.index(upsample)
    if factor < 0 or factor > MAX_UPSAMPLE:
        raise ValueError(
            f"upsample must be False, True or an integer factor from 2 to {MAX_UPSAMPLE}; "
            f"got {factor}"
        )
    return factor


def check_crop_size(crop_size, frame_shape=None):
    """``crop_size`` as a positive int whose crop (2 * crop_size) fits in the frame."""
    if not is_int(crop_size):
        raise TypeError(f"crop_size must be a positive int; got {crop_size!r}")
    crop_size = operator.index(crop_size)
    if crop_size < 1:
        raise ValueError(f"crop_size must be >= 1; got {crop_size}")
    if frame_shape is not None and (2 * crop_size > frame_shape[0]
                                    or 2 * crop_size > frame_shape[1]):
        raise ValueError(
            f"the crop (2 * crop_size = {2 * crop_size} px) is larger than the frame "
            f"{tuple(frame_shape)}; use a smaller pattern search radius"
        )
    return crop_size


def check_template(template, shape, name="template", finite=True):
    """``template`` must be the rfft2 of a real array of ``shape``: (h, w // 2 + 1).

    With ``finite``, a NumPy template holding NaN or infinity is a ValueError
    (a CuPy one is not read: that would need a host sync; its results are NaN).
    """
    expected = (shape[0], shape[1] // 2 + 1)
    got = _shape(template)
    if got != expected:
        raise ValueError(
            f"{name} must be rfft2 of a {shape[0]}x{shape[1]} mask, shape {expected}; got {got}"
        )
    if np.dtype(template.dtype).kind not in "fc":
        raise TypeError(f"{name} must be a complex (or real) spectrum; got dtype {template.dtype}")
    if finite and isinstance(template, np.ndarray) and not np.isfinite(template).all():
        raise ValueError(f"{name} holds NaN or infinite values; it must be the finite rfft2 of "
                         f"a {shape[0]}x{shape[1]} mask (pattern.get_template(...))")


def check_frame_stack(frames, name="frames"):
    """Shape ``(..., H, W)`` and dtype of a stack of frames; returns the shape."""
    if not hasattr(frames, "shape") or not hasattr(frames, "dtype"):
        raise TypeError(f"{name} must be an array with .shape and .dtype (NumPy, CuPy, "
                        f"numpy.memmap, an h5py or zarr dataset, ...); got "
                        f"{type(frames).__name__}")
    shape = _shape(frames)
    if len(shape) < 2:
        raise ValueError(f"{name} must have shape (..., H, W), e.g. (N, H, W), "
                         f"(scan_y, scan_x, H, W) or (H, W); got {shape}")
    frame_dtype(frames.dtype, name)
    if shape[-2] < 1 or shape[-1] < 1:
        raise ValueError(f"{name} must have non-empty frames; got shape {shape}")
    return shape


def check_out(arr, shape, name, kinds, required=False):
    """An output buffer of exactly ``shape`` with a dtype kind in ``kinds``; None passes
    (the caller allocates) unless ``required``."""
    if arr is None and not required:
        return None
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        raise TypeError(f"{name} must be an array of shape {tuple(shape)}; got "
                        f"{'None' if arr is None else type(arr).__name__}")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(arr.shape)}")
    if np.dtype(arr.dtype).kind not in kinds:
        allowed = {"i": "signed integer", "u": "unsigned integer", "f": "floating"}
        raise TypeError(
            f"{name} must have a {' or '.join(allowed[k] for k in kinds)} dtype; "
            f"got {arr.dtype}"
        )
    # CuPy arrays (before CuPy 14) have no ``flags.writeable``; they are always writeable
    if not getattr(getattr(arr, "flags", None), "writeable", True):
        raise ValueError(f"{name} is read-only; pass a writeable output buffer")
    return arr


#: dtypes of buffers that frames are cropped into: an integer buffer would truncate the
#: frame, float16 round it
CROP_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_crop_buffer(arr, name):
    """``arr`` must be an array (n, h, w) of float32 or float64 (either byte order)."""
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        raise TypeError(f"{name} must be a float32 or float64 array (n, h, w); got "
                        f"{'None' if arr is None else type(arr).__name__}")
    if np.dtype(arr.dtype).newbyteorder("=") not in CROP_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64 (frames are cropped into "
                        f"it: integers would truncate them, float16 round them); "
                        f"got {arr.dtype}")
    if not getattr(getattr(arr, "flags", None), "writeable", True):
        raise ValueError(f"{name} is read-only; pass a writeable buffer")
    return arr


def log_scale_fails(dtype, lo, hi):
    """Where the log scaling ``log((x - min) + 1)`` of finite values ``lo`` .. ``hi`` (per
    item: the minimum and maximum of a crop or frame), the shift computed in float64 and
    rounded to floating ``dtype`` as the kernels do, is not finite: the span ``max - min +
    1`` beyond the largest ``dtype``. A boolean array; non-finite items are False."""
    dtype = np.dtype(dtype)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(lo) & np.isfinite(hi)
        top = ((hi.astype(dtype).astype(np.float64) - lo.astype(dtype).astype(np.float64))
               + 1.0).astype(dtype)
    return finite & ~np.isfinite(top)


def log_scale_error(name, extent, dtype, lo, hi, where):
    """The ValueError for finite values ``lo`` .. ``hi`` within one ``extent`` (crop, frame,
    array) whose log scaling ``log((x - min) + 1)`` in floating ``dtype`` is not finite
    (a span ``max - min + 1`` beyond the largest ``dtype``: float32 frames from -2e38 to
    2e38, say), or None where it is finite."""
    dtype = np.dtype(dtype)
    if not log_scale_fails(dtype, lo, hi):
        return None
    got = f"got values from {float(lo):.8g} to {float(hi):.8g}" + (f" {where}" if where else "")
    hint = "; scale them down"
    if dtype.itemsize < 8 and not log_scale_fails(np.float64, lo, hi):
        hint += ", or pass them as float64"
    return ValueError(
        f"{name} must span at most {float(np.finfo(dtype).max):.8g} (max - min + 1, the "
        f"largest {dtype}) within each {extent} for the log scaling log(x - min + 1) to stay "
        f"finite; {got}{hint}")


def check_callable(func, name, signature):
    """Raise TypeError naming ``name`` unless ``func`` is callable."""
    if not callable(func):
        raise TypeError(f"{name} must be callable {signature}; got {func!r}")


def check_pattern(pattern):
    """Duck-typed match pattern: needs get_crop_size() and get_template(sig_shape)."""
    if isinstance(pattern, type):
        raise TypeError(f"pattern must be a match pattern instance, e.g. "
                        f"{pattern.__name__}(radius=4); got the class {pattern.__name__}")
    if not (hasattr(pattern, "get_crop_size") and hasattr(pattern, "get_template")):
        raise TypeError(
            "pattern must be a match pattern (gpucorr.patterns.Circular, RadialGradient, ...) "
            f"with get_crop_size() and get_template(); got {type(pattern).__name__}"
        )


def peaks_in(xp, peaks):
    """Validated int64 peaks (P, 2) in array module ``xp`` (that of the frames).

    Integer CuPy peaks for CuPy frames are checked by shape and dtype only (no
    host sync); others are validated on the host (:func:`check_peaks`) and
    moved once.
    """
    if (xp is not np and is_cupy(peaks)
            and np.dtype(peaks.dtype).kind in "iu"):
        if peaks.ndim != 2 or peaks.shape[1] != 2 or peaks.shape[0] == 0:
            check_peaks(np.empty(peaks.shape, np.int64))  # raises the usual error
        return xp.ascontiguousarray(peaks, dtype=np.int64)
    host = peaks.get() if is_cupy(peaks) else peaks
    return xp.asarray(check_peaks(host))


# --- scalars, sizes and arrays of the template builders (masks, patterns, synthetic, peaks)

def check_real(name, value, *, minimum=None, strict=False):
    """Return ``value`` after checking that it is a finite real number.

    ``minimum`` adds a lower bound, exclusive when ``strict`` is true.
    """
    if not is_real_number(value):
        raise TypeError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if minimum is not None:
        if strict and not value > minimum:
            raise ValueError(f"{name} must be > {minimum}; got {value!r}")
        if not strict and not value >= minimum:
            raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return value


def check_size(name, value):
    """Return ``int(value)`` after checking that it is a positive integer."""
    if not is_int(value):
        raise TypeError(
            f"{name} must be a positive int; got {value!r} of type {type(value).__name__}"
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def check_shape(sig_shape, name="sig_shape"):
    """Return ``sig_shape`` as a tuple of two positive Python ints."""
    try:
        items = tuple(sig_shape)
    except TypeError:
        raise TypeError(
            f"{name} must be a sequence of two positive ints; got {sig_shape!r}"
        ) from None
    if len(items) != 2:
        raise ValueError(
            f"{name} must have two entries (height, width); got {sig_shape!r}"
        )
    for item in items:
        if not is_int(item):
            raise TypeError(f"{name} must contain two positive ints; got {sig_shape!r}")
        if item <= 0:
            raise ValueError(f"{name} must contain two positive ints; got {sig_shape!r}")
    return tuple(int(item) for item in items)


def check_real_array(name, value, *, ndim=None):
    """Return ``value`` as an ndarray after checking dtype, ndim and finiteness.

    Boolean, integer and floating dtypes are accepted; complex and
    non-numeric ones raise :class:`TypeError`.  The array is not copied.
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be a real-valued array; got {value!r}") from exc
    if arr.dtype.kind not in "biuf":
        kind = "complex" if arr.dtype.kind == "c" else "non-numeric"
        raise TypeError(
            f"{name} must be a real-valued array (bool, int or float); "
            f"got {kind} dtype {arr.dtype}"
        )
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array; got {arr.ndim}-D array of shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values; got NaN or Inf")
    return arr
