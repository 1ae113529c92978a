"""Drop-in replacement for ``libertem_blobfinder.base.correlation`` (0.6.1).

Same function names, signatures and output buffers, computed by gpucorr's
pipeline (:mod:`gpucorr._pipeline`) and numba kernels. Where
libertem-blobfinder is wrong, gpucorr is right instead:

* ``upsample=True`` means an upsampling factor of 20 (it was ignored);
* DFT upsampling interpolates the real correlation map correctly from the
  half spectrum (libertem-blobfinder drops the negative x frequencies, which
  biases x);
* the template is *correlated* with the frame, not convolved, so an
  asymmetric template is matched as given, not mirrored;
* correlation maps are centred for odd sizes too.

For the built-in (symmetric) patterns without upsampling the results equal
libertem-blobfinder's.

The spectra passed between the low-level functions follow
libertem-blobfinder's convention: ``corrspecs`` from :func:`do_correlations`
belong to the *uncentred* maps, the returned maps rolled back by
``ceil(shape / 2)`` (without their mean), so :func:`refine_center_upsampling`
takes ``corrmap_center = ceil(shape / 2)`` for them and
:func:`evaluate_upsampling` takes them as they are.

Backends
--------
Every function here that takes arrays accepts NumPy or CuPy arrays (except
the numba helpers :func:`center_of_mass`, :func:`refine_center` and
:func:`peak_elevation`, which are NumPy-only as in libertem-blobfinder).
CuPy input runs on the GPU it lives on, with gpucorr's CUDA kernels, and
output buffers and results are CuPy arrays there; NumPy input runs on the
CPU. All array arguments -- templates, peaks and output buffers included --
must come from the same library: mixing NumPy and CuPy raises
``TypeError`` instead of copying behind the caller's back (move the peaks
with ``cupy.asarray(peaks)``, the template with
``cupy.asarray(pattern.get_template(shape))``). Templates from
:mod:`gpucorr.patterns` are NumPy arrays. CuPy is imported only when CuPy
arrays are passed.

On a GPU nothing is copied to the host except where a docstring says so:
float CuPy peaks are checked for whole numbers on the host, and a few
functions read a handful of values (noted there). Non-finite frames or crops
raise ``ValueError`` on the CPU; on a GPU, where that check would need a host
sync, they give NaN refined positions, heights and elevations instead (as
:func:`gpucorr.refine` does).
"""
import functools
import warnings

import array_api_compat
import numpy as np
import sparseconverter

from gpucorr import _pipeline, _validate
from gpucorr._backend import array_namespace, get_backend, is_sparse
from gpucorr._numba import center_of_mass, peak_elevation, refine_center
from gpucorr.api import _check_log_overflow, refine

__all__ = [
    "process_frame_fast", "process_frame_full", "process_frames_fast", "process_frames_full",
    "allocate_crop_bufs", "get_buf_count", "do_correlations", "evaluate_correlations",
    "evaluate_upsampling", "refine_center_upsampling", "refine_center", "center_of_mass",
    "peak_elevation", "unravel_index", "log_scale", "log_scale_cropbufs_inplace",
    "crop_disks_from_frame", "crop_disks_from_frame_slicing", "zeros", "fft",
]

#: ``numpy.fft``, as libertem-blobfinder exposes it
fft = np.fft
#: ``numpy.zeros``, as libertem-blobfinder exposes it
zeros = np.zeros


def _real_result_dtype(*dtypes):
    """Real dtype numpy promotion gives for ``dtypes`` (float32 at least)."""
    dt = np.result_type(np.float32, *[np.dtype(d) for d in dtypes])
    return np.dtype(np.float64) if dt in (np.float64, np.complex128) else np.dtype(np.float32)


def _on_data_device(func):
    """Run ``func`` on the GPU of its first CuPy argument (as :func:`gpucorr.refine` does).

    Scratch arrays, FFT plans and kernels then live on the device of the data,
    whatever CuPy's current device is. NumPy arguments run ``func`` as is.
    """
    @functools.wraps(func)
    def on_device(*args, **kwargs):
        for arg in (*args, *kwargs.values()):
            for a in (arg if isinstance(arg, tuple) else (arg,)):
                if array_api_compat.is_cupy_array(a):
                    with a.device:
                        return func(*args, **kwargs)
        return func(*args, **kwargs)
    return on_device


def _peaks(xp, peaks, truncate=False):
    """Validated int64 peaks (P, 2) in ``xp``.

    Integer CuPy peaks are checked by shape and dtype only (no host sync);
    float CuPy peaks are checked on the host (one sync). ``truncate`` truncates
    float peaks toward zero (libertem-blobfinder's ``astype(np.int32)``).
    """
    if isinstance(peaks, (list, tuple)):
        peaks = np.asarray(peaks)
    if truncate and np.dtype(getattr(peaks, "dtype", np.int64)).kind == "f":
        host = peaks.get() if array_api_compat.is_cupy_array(peaks) else peaks
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
    if _pipeline.native(frame.dtype) == np.float16:
        frame = frame.astype(np.float32)
    elif not frame.dtype.isnative:
        frame = frame.astype(_pipeline.native(frame.dtype))
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
        _pipeline._mark_bad(xp, _validate.far_peaks(xp, peaks), src)
    if dst[0] is not None:
        # the caller's frame: _store <- the function <- _on_data_device <- caller
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


@_on_data_device
def do_correlations(template, crop_parts, with_specs: bool = False):
    """Correlate a stack of crops with a template given as its ``rfft2``.

    Parameters
    ----------
    template : complex array (h, w // 2 + 1), (1, h, w // 2 + 1) or (n, h, w // 2 + 1)
        ``numpy.fft.rfft2`` of the mask (``pattern.get_template((h, w))``), for all
        crops, or one per crop (broadcast against the crops, as libertem-blobfinder
        does).
    crop_parts : float array (n, h, w)
        Crops, e.g. log-scaled by :func:`log_scale_cropbufs_inplace`.
    with_specs : bool
        Also return the spectra of the maps (for :func:`evaluate_upsampling`).

    Returns
    -------
    corrs : array (n, h, w)
        Correlation maps; a disk centred at pixel ``j`` of a crop peaks at ``j``.
        Real dtype by numpy promotion of the inputs (float64 for a complex128
        template).
    corrspecs : complex array (n, h, w // 2 + 1), only with ``with_specs``
        ``rfft2`` of ``corrs`` minus their means and rolled back by ``ceil((h, w) / 2)``
        (the uncentred maps, as libertem-blobfinder's spectra):
        :func:`refine_center_upsampling` takes ``corrmap_center = ceil((h, w) / 2)``
        for them.

    Notes
    -----
    Backends: NumPy or CuPy; ``template`` and ``crop_parts`` from the same
    library (``cupy.asarray(pattern.get_template(...))`` for CuPy crops).
    CuPy input gives CuPy results on its GPU, without a host sync.

    Examples
    --------
    >>> from gpucorr.patterns import Circular
    >>> from gpucorr.masks import circular
    >>> disk = circular(centerX=9, centerY=5, imageSizeX=16, imageSizeY=16, radius=2,
    ...                 antialiased=True)
    >>> crops = disk[np.newaxis].astype(np.float32)
    >>> corrs = do_correlations(Circular(radius=2).get_template((16, 16)), crops)
    >>> np.unravel_index(corrs[0].argmax(), (16, 16))
    (np.int64(5), np.int64(9))
    """
    xp = array_namespace(template, crop_parts)
    crop_parts = xp.asarray(crop_parts)
    if crop_parts.ndim != 3:
        raise ValueError(f"crop_parts must have shape (n, h, w); got {crop_parts.shape}")
    _validate.real_dtype(crop_parts.dtype, "crop_parts")
    shape = crop_parts.shape[-2:]
    template = xp.asarray(template)
    if template.ndim == 3:
        if template.shape[0] not in (1, crop_parts.shape[0]):
            raise ValueError(f"template must be one spectrum (h, w // 2 + 1) or one per crop "
                             f"({crop_parts.shape[0]}, h, w // 2 + 1); got {template.shape}")
        for i in range(template.shape[0]):
            _validate.check_template(template[i], shape, f"template[{i}]")
        if template.shape[0] == 1:
            template = template[0]
    else:
        _validate.check_template(template, shape)
    rdtype = _real_result_dtype(crop_parts.dtype, template.dtype)
    filt = _pipeline.correlation_filter(xp, template, shape, rdtype)
    corrs, specs, offsets = _pipeline.correlate(get_backend(xp), crop_parts.astype(rdtype), filt,
                                                keep_specs=with_specs)
    corrs += offsets[:, None, None].astype(rdtype)
    if with_specs:
        return corrs, specs * _uncentre_phase(xp, shape, specs.dtype)
    return corrs


def _uncentre_phase(xp, shape, dtype):
    """Spectrum factor that rolls a map back by ``ceil(shape / 2)``: the spectrum of the
    uncentred map (libertem-blobfinder's convention) from that of the centred one; built
    once per shape and dtype, copied to a device once."""
    return _pipeline._on_device(xp, _uncentre_phase_host(tuple(shape), np.dtype(dtype).str))


@functools.lru_cache(maxsize=64)
def _uncentre_phase_host(shape, dtype):
    h, w = shape

    def axis(n, half):
        k = np.arange(n // 2 + 1 if half else n, dtype=np.float64)
        if n % 2 == 0:
            return 1.0 - 2.0 * (k % 2)  # exact: exp(i pi k) = (-1)^k
        return np.exp(2j * np.pi * k * (-(-n // 2)) / n)

    phase = (axis(h, False)[:, None] * axis(w, True)[None, :]).astype(dtype)
    phase.flags.writeable = False
    return phase


def _centred_maps(xp, corrspecs, shape):
    """The centred maps of spectra in libertem-blobfinder's convention (see
    :func:`do_correlations`)."""
    raw = xp.fft.irfft2(corrspecs, s=shape)
    return xp.roll(raw, tuple(-(-n // 2) for n in shape), axis=(-2, -1))


def unravel_index(index, shape):
    """Like ``numpy.unravel_index`` for one flat index, returning Python ints.

    >>> unravel_index(7, (3, 4))
    (1, 3)
    """
    return tuple(int(i) for i in np.unravel_index(int(index), tuple(shape)))


@_on_data_device
def evaluate_correlations(corrs, peaks, crop_size, out_centers, out_refineds, out_heights,
                          out_elevations):
    """Argmax, 5x5 refinement, height and elevation of each correlation map.

    Parameters
    ----------
    corrs : float array (P, h, w)
        Correlation maps, one per peak (from :func:`do_correlations`).
    peaks : integer array (P, 2)
        The peaks the maps were cropped around.
    crop_size : int
        Results are shifted by ``peaks - crop_size`` into frame coordinates.
    out_centers, out_refineds : arrays (P, 2)
        Filled with the integer maxima and the refined positions.
    out_heights, out_elevations : arrays (P,)
        Filled with the maxima and the cone slopes.

    Notes
    -----
    Backends: NumPy (numba kernel) or CuPy (CUDA kernel); all arrays from the
    same library. Integer CuPy peaks need no host sync; float ones are
    checked for whole numbers on the host.
    """
    xp = array_namespace(corrs, peaks, *_buffers(out_centers, out_refineds, out_heights,
                                                 out_elevations))
    backend = get_backend(xp)
    corrs = xp.asarray(corrs)
    peaks = _peaks(xp, peaks)
    if corrs.ndim != 3 or corrs.shape[0] != len(peaks):
        raise ValueError(
            f"corrs must have shape (P, h, w) with P = len(peaks) = {len(peaks)}; "
            f"got {corrs.shape}")
    _validate.real_dtype(corrs.dtype, "corrs")
    crop_size = _validate.check_crop_size(crop_size)
    outs = (out_centers, out_refineds, out_heights, out_elevations)
    _out_buffers(len(peaks), *outs)
    scratch = _scratch(backend, len(peaks))
    # the kernels read float32 or float64 maps (integer maps convert exactly)
    corrs = corrs.astype(_real_result_dtype(corrs.dtype), copy=False)
    backend.evaluate(corrs, peaks, crop_size, xp.zeros(len(peaks)), *scratch)
    _store(outs, scratch, peaks)


def _upsample_factor(upsample_factor):
    factor = _validate.check_upsample(upsample_factor)
    if factor < 2:
        raise ValueError(f"upsample_factor must be an int >= 2; got {upsample_factor!r}")
    return factor


@_on_data_device
def refine_center_upsampling(corrmap_center, upsample_pos, corrspecs, frequencies,
                             upsample_factor):
    """Refine one peak position to ``1 / upsample_factor`` px by DFT upsampling.

    The map whose spectrum is ``corrspecs`` is interpolated on a grid of
    ``ceil(1.5 * upsample_factor)`` points per axis around
    ``upsample_pos - corrmap_center``; the grid maximum, refined below the grid
    to the maximum of the interpolated map, plus ``corrmap_center`` is
    returned.

    Parameters
    ----------
    corrmap_center : array (2,)
        Offset between map positions and spectrum positions: ``ceil(shape / 2)``
        for spectra from :func:`do_correlations` (as in libertem-blobfinder), ``(0, 0)``
        for the spectrum of a map as it is.
    upsample_pos : array (2,)
        Integer (y, x) of the map maximum.
    corrspecs : complex array (h, w // 2 + 1)
        ``rfft2`` of the map.
    frequencies : (array, array)
        ``(numpy.fft.fftfreq(h, upsample_factor), numpy.fft.rfftfreq(w, upsample_factor))``;
        they fix ``w`` (even or odd) for the half spectrum.
    upsample_factor : int

    Returns
    -------
    float32 array (2,)
        In the array library of the arguments.

    Notes
    -----
    Backends: NumPy or CuPy; every array argument (``frequencies`` included,
    e.g. ``cupy.fft.fftfreq``) from the same library. With CuPy the result
    stays on the GPU, but ``frequencies[1][1]`` is read on the host (one sync)
    to tell even from odd ``w``.
    """
    factor = _upsample_factor(upsample_factor)
    xp = array_namespace(corrmap_center, upsample_pos, corrspecs, frequencies[0],
                         frequencies[1])
    corrspecs = xp.asarray(corrspecs)
    if corrspecs.ndim != 2:
        raise ValueError(f"corrspecs must have shape (h, w // 2 + 1); got {corrspecs.shape}")
    h = corrspecs.shape[0]
    fx = xp.asarray(frequencies[1])
    w = int(round(1 / (float(fx[1]) * factor))) if len(fx) > 1 else 1
    if w // 2 + 1 != corrspecs.shape[1] or len(frequencies[0]) != h:
        raise ValueError(
            f"frequencies do not fit corrspecs of shape {corrspecs.shape}: expected "
            "(fftfreq(h, upsample_factor), rfftfreq(w, upsample_factor))")
    center = xp.asarray(corrmap_center, dtype=np.float64)
    pos = xp.rint(xp.asarray(upsample_pos, dtype=np.float64) - center)
    corrmap = xp.fft.irfft2(corrspecs, s=(h, w))
    refined = _pipeline.upsample_positions(get_backend(xp), corrmap[None], pos[None, None],
                                           factor)
    return (refined[0, 0] + center).astype(np.float32)


@_on_data_device
def evaluate_upsampling(corrspecs, corrs, peaks, crop_size, sig_shape, upsample_factor,
                        out_centers, out_refineds):
    """Replace refined positions by DFT-upsampled ones.

    Parameters
    ----------
    corrspecs : complex array (P, h, w // 2 + 1) or (H, W // 2 + 1)
        Spectra from :func:`do_correlations` (fast mode, one per peak) or the
        spectrum of a whole-frame map (full mode), of the uncentred maps (rolled
        back by ``ceil(shape / 2)``) as in libertem-blobfinder.
    corrs : array (P, h, w)
        The maps (or crops of the full map); their shape gives ``(h, w)``.
    peaks : integer array (P, 2)
    crop_size : int
    sig_shape : (int, int)
        Frame shape (the map shape in full mode).
    upsample_factor : int
    out_centers : array (P, 2)
        Integer maxima in frame coordinates (from :func:`evaluate_correlations`).
    out_refineds : float array (P, 2)
        Overwritten with the upsampled positions.

    Notes
    -----
    Backends: NumPy or CuPy, all arrays from the same library (``corrs`` is
    only read for its shape). CuPy input needs no host sync (integer peaks).
    """
    factor = _upsample_factor(upsample_factor)
    xp = array_namespace(corrspecs, corrs, peaks, *_buffers(out_centers, out_refineds))
    backend = get_backend(xp)
    peaks = _peaks(xp, peaks)
    crop_size = _validate.check_crop_size(crop_size)
    corrspecs = xp.asarray(corrspecs)
    _validate.check_out(out_centers, (len(peaks), 2), "out_centers", "iuf", required=True)
    _validate.check_out(out_refineds, (len(peaks), 2), "out_refineds", "f", required=True)
    centers = xp.asarray(out_centers).astype(np.int64)
    if corrspecs.ndim == 3:
        shape = tuple(np.shape(corrs)[-2:])
        _validate.check_template(corrspecs[0], shape, "corrspecs[i]")
        if len(corrspecs) != len(peaks):
            raise ValueError(f"corrspecs holds {len(corrspecs)} spectra for {len(peaks)} peaks")
        origin = peaks - crop_size
        maps = xp.ascontiguousarray(_centred_maps(xp, corrspecs, shape))
        pos = _pipeline.upsample_positions(backend, maps, (centers - origin)[:, None], factor)
        out_refineds[...] = pos[:, 0] + origin
    else:
        shape = tuple(sig_shape)
        _validate.check_template(corrspecs, shape, "corrspecs")
        corrmap = xp.ascontiguousarray(_centred_maps(xp, corrspecs, shape))
        pos = _pipeline.upsample_positions(backend, corrmap[None], centers[None], factor)
        out_refineds[...] = pos[0]


@_on_data_device
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
    data = xp.asarray(data)
    _validate.real_dtype(data.dtype, "data")
    # the dtype numpy.log gives for ``data`` (float16 for uint8, as before)
    result_dtype = np.result_type(np.log(np.ones(1, data.dtype)))
    if np.dtype(data.dtype).kind in "iu":
        # integer arithmetic would wrap (uint8 0..255: 255 - 0 + 1 == 0); float64 holds
        # the shifted values exactly up to 2**53
        data = data.astype(np.float64)
    _pipeline._check_finite(xp, ~xp.isfinite(data), "data")
    low = xp.min(data)
    if xp is np and data.size:
        _check_log_span(data.dtype, low[None], xp.max(data)[None], "data", "array",
                        lambda i: "in data")
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
    _validate.real_dtype(data.dtype, "data")
    # NumPy's log dtype, but float32 for float16 (pydata sparse computes with numba,
    # which has no float16)
    result_dtype = np.result_type(np.log(np.ones(1, data.dtype)), np.float32)
    if np.dtype(data.dtype).kind in "iu":
        data = data.astype(np.float64)
    values = np.append(np.asarray(data.data), data.fill_value)
    _pipeline._check_finite(np, ~np.isfinite(values), "data")
    low, high = values.min(), values.max()
    _check_log_span(data.dtype, low[None], high[None], "data", "array", lambda i: "in data")
    return np.log(data - low + 1).astype(result_dtype)


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


@_on_data_device
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
    _pipeline._check_finite(xp, ~xp.isfinite(crop_bufs), "crop_bufs")
    low = xp.min(crop_bufs, axis=(-1, -2))
    if xp is np and crop_bufs.size:
        _check_log_span(crop_bufs.dtype, low, np.max(crop_bufs, axis=(-1, -2)), "crop_bufs",
                        "crop", lambda i: f"in crop_bufs[{i}]")
    # (x - min) + 1 in float64, rounded once to the crops' dtype, as the kernels do: the
    # minimum becomes exactly 1 however large it is (min - 1 would round to min beyond
    # 2**24 in float32, and the minimum to log(0))
    shifted = (crop_bufs - low.astype(np.float64)[:, np.newaxis, np.newaxis]) + 1.0
    crop_bufs[...] = shifted
    xp.log(crop_bufs, out=crop_bufs)


def _check_crop_args(xp, peaks, crop_size, out_crop_bufs):
    _validate.check_crop_buffer(out_crop_bufs, "out_crop_bufs")
    peaks = _peaks(xp, peaks)
    crop_size = _validate.check_crop_size(crop_size)
    expected = (len(peaks), 2 * crop_size, 2 * crop_size)
    if tuple(out_crop_bufs.shape[1:]) != expected[1:] or len(out_crop_bufs) < len(peaks):
        raise ValueError(f"out_crop_bufs must have shape {expected} (or more crops); "
                         f"got {tuple(out_crop_bufs.shape)}")
    return peaks, crop_size


@_on_data_device
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


@_on_data_device
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


def _blocks(n_peaks, block):
    for start in range(0, n_peaks, block):
        yield start, min(start + block, n_peaks)


@_on_data_device
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
    filt = _pipeline.correlation_filter(xp, template, (size, size), rdtype)
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
            _pipeline.finish_fast(backend, crops, block, crop_size, filt, factor, scratch)
            _pipeline._mark_bad(xp, ~xp.isfinite(crops).all(axis=(1, 2)), scratch)
        else:
            _pipeline.run_fast(backend, frame[None], block, crop_size, filt, factor, scratch)
            _check_log_overflow(xp, frame[None], block, crop_size, "fast", rdtype, scratch,
                                name="frame")
        _store([o[start:stop] for o in outs], scratch, block)


@_on_data_device
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
    filt = _pipeline.correlation_filter(xp, template, frame.shape, rdtype)
    scratch = _scratch(backend, n)
    if crop_function is crop_disks_from_frame:
        _pipeline.run_full(backend, frame[None], peaks, crop_size, filt, factor, scratch)
    else:
        bad = xp.zeros(1, dtype=np.bool_)
        maps, _, offsets = _pipeline.full_maps(backend, frame[None], filt, bad=bad)
        crops = xp.zeros((n, 2 * crop_size, 2 * crop_size), dtype=rdtype)
        crop_function(peaks=peaks, frame=maps[0] + offsets[0].astype(rdtype),
                      crop_size=crop_size, out_crop_bufs=crops)
        crops -= offsets[0].astype(rdtype)
        _pipeline.finish_full(backend, crops, maps, offsets, peaks, crop_size, factor, scratch)
        _pipeline._mark_bad(xp, xp.repeat(bad, n), scratch)
    _check_log_overflow(xp, frame[None], peaks, crop_size, "full", rdtype, scratch,
                        name="frame")
    _store(outs, scratch, peaks)
    return tuple(outs)


def _process_frames(mode, centers_dtype, pattern, frames, peaks, upsample):
    """:func:`gpucorr.refine` with libertem-blobfinder's peak truncation and result types."""
    _validate.check_pattern(pattern)
    xp = array_namespace(frames, peaks)
    # libertem-blobfinder truncates peaks with astype(np.int32)
    peaks = _peaks(xp, peaks, truncate=True).astype(np.int32).astype(np.int64)
    res = refine(frames, peaks, pattern, mode=mode, upsample=upsample)
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

