"""One refine call, ready to run: validated inputs, the filter, result arrays, chunk sizes.

:class:`Job` holds what every executor needs; :func:`check_log_overflow` refuses
results whose log scaling overflowed, naming the frame.
"""
import numpy as np

from gpucorr import _validate, pipeline
from gpucorr.backends import get_backend
from gpucorr.pipeline import mark_bad

__all__ = ["Job", "check_log_overflow", "checked_template", "chunk_frames"]


def checked_template(pattern, shape, mode, n_peaks):
    """``pattern``'s template (spectrum) for crops or frames of ``shape``, checked: one 2-D
    template, or one per peak (PeakTemplates) in fast mode."""
    template = pattern.get_template(sig_shape=shape)
    if getattr(template, "ndim", 2) == 3:         # one template per peak (PeakTemplates)
        if mode != "fast":
            raise ValueError(f"a pattern with one template per peak "
                             f"({type(pattern).__name__}) needs mode='fast'; got "
                             f"mode={mode!r}")
        if template.shape[0] != n_peaks:
            raise ValueError(f"{type(pattern).__name__} holds {template.shape[0]} "
                             f"templates for {n_peaks} peaks; give one per peak")
        for one in template:
            _validate.check_template(one, shape, name="pattern.get_template()")
    else:
        _validate.check_template(template, shape, name="pattern.get_template()")
    return template


class Job:
    """One refine call on one backend: validated inputs, filter, result arrays, chunking.

    ``frames`` is a :class:`~gpucorr.execution.sources.Source`; an executor
    (:mod:`~gpucorr.execution.cpu`, :mod:`~gpucorr.execution.gpu`) reads its chunks
    and calls :meth:`compute` on each.
    """

    def __init__(self, xp, frames, peaks, pattern, mode, factor, crop_size, memory_limit,
                 scaling=pipeline.LOG_SCALING):
        self.xp = xp
        self.backend = get_backend(xp)
        self.frames = frames
        self.n_frames = len(frames)
        fy, fx = tuple(frames.shape[-2:])
        self.peaks = _validate.peaks_in(xp, peaks)
        self.crop_size = crop_size
        self.factor = factor
        self.mode = mode
        self.memory_limit = memory_limit
        self.rdtype = pipeline.compute_dtype(frames.dtype)
        shape = (2 * crop_size, 2 * crop_size) if mode == "fast" else (fy, fx)
        template = checked_template(pattern, shape, mode, len(self.peaks))
        # a NumPy spectrum (every gpucorr pattern's): the filter is built on the host, as
        # the CPU builds it, and goes to the device in one copy, not a dozen small kernels
        on = np if isinstance(template, np.ndarray) else xp
        self.filt = xp.asarray(
            pipeline.correlation_filter(on, on.asarray(template), shape, self.rdtype))
        self.run = pipeline.run_fast if mode == "fast" else pipeline.run_full
        self.scaling = scaling
        self.per_frame = pipeline.frame_bytes(mode, (fy, fx), len(self.peaks), crop_size,
                                               self.rdtype, factor)

    def results(self, xp, n_frames=None):
        """Empty result arrays (centers, refineds, heights, elevations) in ``xp``."""
        n = self.n_frames if n_frames is None else n_frames
        p = len(self.peaks)
        return (xp.empty((n, p, 2), dtype=np.int32), xp.empty((n, p, 2), dtype=np.float32),
                xp.empty((n, p), dtype=np.float32), xp.empty((n, p), dtype=np.float32))

    def compute(self, chunk, out, start, stop):
        """Refine frames ``chunk`` (already on the backend) into ``out[start:stop]``."""
        flat = (out[0][start:stop].reshape(-1, 2), out[1][start:stop].reshape(-1, 2),
                out[2][start:stop].reshape(-1), out[3][start:stop].reshape(-1))
        self.run(self.backend, chunk, self.peaks, self.crop_size, self.filt, self.factor, flat,
                 scaling=self.scaling)
        check_log_overflow(self.xp, chunk, self.peaks, self.crop_size, self.mode, self.rdtype,
                            flat, first=start, log=getattr(self.scaling, "log", True))

    def chunk_frames(self, budget, workers, max_chunk, extra_per_frame=0):
        """Frames per chunk: within ``budget`` bytes for ``workers`` chunks at a time."""
        return chunk_frames(self, budget, workers, max_chunk, extra_per_frame)

    def finish(self, out):
        """After a GPU-resident run: rows of peaks beyond +-2**30 (CuPy peaks, not checked
        on the host) become NaN."""
        mark_bad(self.xp, _validate.far_peaks(self.xp, self.peaks), out)


def chunk_frames(job, budget, workers, max_chunk, extra_per_frame=0):
    """Frames per chunk of ``job`` (``n_frames``, ``per_frame`` scratch bytes): within
    ``budget`` bytes for ``workers`` chunks at a time, at most ``max_chunk``."""
    per_frame = job.per_frame + extra_per_frame
    return int(max(1, min(max_chunk, int(budget) // (workers * per_frame),
                          -(-job.n_frames // workers))))


def check_log_overflow(xp, frames, peaks, crop_size, mode, rdtype, out, first=0,
                        name="frames", log=True):
    """After a run on frames (N, H, W) into ``out`` (flat, N * P rows): refuse results
    whose log scaling ``log(x - min + 1)`` was not finite in ``rdtype``.

    Non-finite frames are caught before (a ValueError on the CPU, NaN rows on a GPU),
    and templates are checked to be finite, so a non-finite height from finite input
    means the log scaling of that crop (fast mode: 0 counts for pixels outside the
    frame) or frame (full mode) failed: its values span more than ``rdtype`` holds
    (float32 frames of about +-1.7e38 and more; the kernels shift by ``(x - min) + 1``
    in float64, so nothing else breaks it). The criterion is per crop, so a frame's result does not depend on the chunk
    it is in, and the check costs one pass over the heights: on the CPU a ValueError
    that names the frame, its values and what is allowed; on a GPU (no host sync) NaN
    refineds, heights and elevations for those rows, as for non-finite input.
    """
    if xp is not np:
        mark_bad(xp, ~xp.isfinite(out[2]), out)
        return
    bad = ~np.isfinite(out[2])
    if not bad.any():
        return
    row = int(np.argmax(bad))
    n, p = divmod(row, len(peaks))
    frame = np.asarray(frames[n])
    if mode == "fast":
        fy, fx = frame.shape
        y0, x0 = (int(c) - crop_size for c in peaks[p])
        y1, x1 = y0 + 2 * crop_size, x0 + 2 * crop_size
        values = frame[max(y0, 0):max(min(y1, fy), 0), max(x0, 0):max(min(x1, fx), 0)]
        partial = values.size < (2 * crop_size) ** 2
        where = f"in the crop around peak {tuple(int(c) for c in peaks[p])}" + (
            " (0 outside the frame)" if partial else "")
        extent = "crop"
    else:
        values, partial, where, extent = frame, False, "", "frame"
    lo = float(values.min()) if values.size else 0.0
    hi = float(values.max()) if values.size else 0.0
    if partial:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if name == "frames":  # a stack (not the one frame of the compatible functions)
        where = f"in frame {first + n}{' ' + where if where else ''}"
    error = _validate.log_scale_error(name, extent, rdtype, lo, hi, where) if log else None
    if error is None:  # not the log scaling: the correlation itself overflowed
        scaled = "log-scaled " if log else ""
        error = ValueError(
            f"the correlation of the {scaled}{name} with the template overflows "
            f"{np.dtype(rdtype).name} {where}: {name} from {lo:.8g} to {hi:.8g}; scale the "
            f"{name} or the template (pattern) to moderate values"
            + (", or pass the frames as float64" if np.dtype(rdtype).itemsize < 8 else ""))
    raise error
