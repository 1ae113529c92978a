"""The stages of a chunk, written once for every backend.

crop (+ log) -> FFT correlation -> evaluate -> optional DFT upsampling.
The per-backend primitives come from :func:`gpucorr.backends.get_backend`;
everything here is array-module generic (``xp``). :func:`run_fast` and
:func:`run_full` refine one chunk of frames into result arrays.
"""
import numpy as np

from gpucorr.pipeline.correlate import LOG_SCALING, correlate
from gpucorr.pipeline.upsample import upsample_positions
from gpucorr.pipeline.workspace import fresh, real_dtype, thread_workspace

__all__ = ["crop_frames", "finish_fast", "run_fast", "full_maps", "finish_full", "run_full",
           "frame_bytes", "check_finite", "mark_bad"]


def check_finite(xp, bad, what):
    """Raise for non-finite input on the CPU; on a GPU raising would need a host sync."""
    if xp is np and bool(xp.any(bad)):
        raise ValueError(f"{what} contain NaN or infinite values; gpucorr needs finite input")


def mark_bad(xp, bad, out):
    """On a GPU, rows from non-finite input get NaN refineds, heights and elevations."""
    if xp is np:
        return
    out[1][...] = xp.where(bad[:, None], np.float32(np.nan), out[1])
    out[2][...] = xp.where(bad, np.float32(np.nan), out[2])
    out[3][...] = xp.where(bad, np.float32(np.nan), out[3])


def crop_frames(backend, frames, peaks, crop_size, rdtype, log=True, fill=None, bad=None,
                ws=None, check=None):
    """Crops (N * P, h, h) of every (frame, peak) pair, log-scaled unless ``log=False``.

    Pixels outside frame ``n`` take the value ``fill[n]`` (default 0). ``bad``
    (N * P,), if given, receives which crops hold non-finite values; ``check``
    (default: ``log``) raises for them on the CPU, as for frames. ``ws``: the
    :class:`Workspace` the crops come from (default: a fresh array).
    """
    xp = backend.xp
    n = frames.shape[0] * peaks.shape[0]
    h = 2 * crop_size
    crops = fresh(xp, ws).empty("crops", (frames.shape[0], peaks.shape[0], h, h), rdtype)
    if bad is None:
        bad = xp.zeros(n, dtype=np.bool_)
    if fill is None:
        fill = xp.zeros(frames.shape[0], dtype=rdtype)
    backend.crop_log(frames, peaks, crop_size, log, fill.astype(rdtype), crops, bad)
    if log if check is None else check:
        check_finite(xp, bad, "frames")
    return crops.reshape(n, h, h)


def finish_fast(backend, crops, peaks, crop_size, filt, factor, out, ws=None, power=1.0):
    """Correlate (scaled) crops (N * P, h, h) and evaluate them into ``out``."""
    corrs, _, offsets = correlate(backend, crops, filt, ws=ws, power=power)
    backend.evaluate(corrs, peaks, crop_size, offsets, *out)
    if factor > 1:
        _upsample_crops(backend, corrs, peaks, crop_size, factor, out)


def _upsample_crops(backend, maps, peaks, crop_size, factor, out):
    """Upsampled refinement of fast mode: ``out[1]`` from the crops' maps and ``out[0]``."""
    xp = backend.xp
    origin = xp.tile(peaks - crop_size, (maps.shape[0] // peaks.shape[0], 1))
    rel = out[0] - origin
    pos = upsample_positions(backend, maps, rel[:, None, :], factor)
    out[1][...] = pos[:, 0] + origin


def run_fast(backend, frames, peaks, crop_size, filt, factor, out, ws=None,
             scaling=LOG_SCALING):
    """Fast mode on a chunk: crop + scale each peak, correlate the crops.

    Parameters
    ----------
    frames : array (N, H, W)
    peaks : int64 array (P, 2)
    filt : complex array (2 cs, cs + 1), from :func:`correlation_filter`; or (P, 2 cs,
        cs + 1), one per peak (crops are in (frame, peak) order)
    factor : int
        Upsampling factor; <= 1 for none.
    out : tuple of arrays (centers (N*P, 2), refineds (N*P, 2), heights (N*P,),
        elevations (N*P,)), written in place.
    ws : Workspace, optional
        Scratch buffers; default: the calling thread's (:func:`thread_workspace`).
    scaling : Scaling
        Intensity scaling and correlation power (default: log scaling, plain
        cross-correlation).
    """
    xp = backend.xp
    if ws is None:
        with thread_workspace(xp) as ws:
            return run_fast(backend, frames, peaks, crop_size, filt, factor, out, ws, scaling)
    n = frames.shape[0] * peaks.shape[0]
    rdtype = real_dtype(filt.dtype)
    if (scaling.power == 1 and filt.ndim == 2
            and backend.fast_correlate_applies(crop_size, rdtype)):
        # the GPU's fused kernel: crop, log (or not), correlate and evaluate in one launch
        bad = xp.empty(n, dtype=np.bool_)
        h = 2 * crop_size
        maps = ws.empty("maps", (n, h, h), rdtype) if factor > 1 else None
        backend.fast_correlate(frames, peaks, crop_size, filt, maps, *out, bad, log=scaling.log)
        if factor > 1:
            _upsample_crops(backend, maps, peaks, crop_size, factor, out)
        mark_bad(xp, bad, out)
        return
    bad = xp.zeros(n, dtype=np.bool_)
    crops = crop_frames(backend, frames, peaks, crop_size, real_dtype(filt.dtype),
                        log=scaling.log, bad=bad, ws=ws, check=True)
    finish_fast(backend, crops, peaks, crop_size, filt, factor, out, ws=ws, power=scaling.power)
    mark_bad(xp, bad, out)


def full_maps(backend, frames, filt, bad=None, ws=None, scaling=LOG_SCALING):
    """Scale and correlate whole frames (N, H, W); returns (maps, specs, offsets).

    ``bad`` (N,), if given, receives which frames hold non-finite values.
    ``ws``: as for :func:`correlate` (with a keeping workspace ``specs`` is None).
    ``scaling``: as for :func:`run_fast`.
    """
    xp = backend.xp
    ws = fresh(xp, ws)
    n, fy, fx = frames.shape
    logged = ws.empty("logged", frames.shape, real_dtype(filt.dtype))
    if bad is None:
        bad = xp.zeros(n, dtype=np.bool_)
    if scaling.log:
        backend.log_scale_frames(frames, logged, bad)
    else:  # each whole frame as one crop, converted to the compute dtype
        backend.crop_log(frames, xp.zeros((1, 2), dtype=np.int64), 0, False,
                         xp.zeros(n, dtype=logged.dtype), logged.reshape(n, 1, fy, fx), bad)
    check_finite(xp, bad, "frames")
    return correlate(backend, logged, filt, ws=ws, power=scaling.power)


def finish_full(backend, crops, maps, offsets, peaks, crop_size, factor, out):
    """Evaluate crops (N * P, h, h) of the full-frame maps (N, H, W).

    ``offsets`` (N,) are the maps' means (see :func:`correlate`). Upsampling
    works on the whole-frame maps.
    """
    n_peaks = peaks.shape[0]
    backend.evaluate(crops, peaks, crop_size, backend.xp.repeat(offsets, n_peaks), *out)
    if factor > 1:
        centers = out[0].reshape(maps.shape[0], -1, 2)
        pos = upsample_positions(backend, maps, centers, factor)
        out[1][...] = pos.reshape(-1, 2)


def run_full(backend, frames, peaks, crop_size, filt, factor, out, ws=None,
             scaling=LOG_SCALING):
    """Full mode on a chunk: scale and correlate whole frames, crop the maps.

    Same parameters as :func:`run_fast`, with ``filt`` of shape (H, W // 2 + 1).
    """
    xp = backend.xp
    if ws is None:
        with thread_workspace(xp) as ws:
            return run_full(backend, frames, peaks, crop_size, filt, factor, out, ws, scaling)
    bad = xp.zeros(frames.shape[0], dtype=np.bool_)
    maps, _, offsets = full_maps(backend, frames, filt, bad=bad, ws=ws, scaling=scaling)
    # outside the frame the map counts as 0, i.e. -mean in zero-mean terms
    crops = crop_frames(backend, maps, peaks, crop_size, maps.dtype, log=False, fill=-offsets,
                        ws=ws)
    finish_full(backend, crops, maps, offsets, peaks, crop_size, factor, out)
    mark_bad(xp, xp.repeat(bad, peaks.shape[0]), out)


def frame_bytes(mode, frame_shape, n_peaks, crop_size, rdtype, factor):
    """Scratch bytes one frame needs in :func:`run_fast` / :func:`run_full`."""
    r = np.dtype(rdtype).itemsize
    h = 2 * crop_size
    crop = h * h * r
    fast = n_peaks * (3 * crop + h * (h // 2 + 1) * 2 * r)
    if mode == "fast":
        total = fast
    else:
        fy, fx = frame_shape
        total = 3 * fy * fx * r + fy * (fx // 2 + 1) * 2 * r + n_peaks * crop
    if factor > 1:
        # the upsampled positions; the kernels' own scratch does not grow with the chunk
        # (the CPU's is one search region's, the GPU's at most
        # gpucorr.backends._cuda.UPSAMPLE_SCRATCH_BYTES)
        total += n_peaks * 2 * 4
    return total
