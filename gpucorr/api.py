"""The batched API: :func:`refine` a whole stack of frames in one call."""
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import sparseconverter

from gpucorr import _pipeline, _validate
from gpucorr._backend import array_namespace, get_backend, is_sparse

__all__ = ["refine", "RefineResult", "DEFAULT_MEMORY_LIMIT"]

#: scratch memory :func:`refine` may use by default, all workers together (bytes)
DEFAULT_MEMORY_LIMIT = 256 * 2**20
#: frames per chunk at most: small chunks stay in the CPU caches
MAX_CHUNK_FRAMES = 64


@dataclass
class RefineResult:
    """Peak parameters of a stack of frames.

    Attributes
    ----------
    centers : int32 array (N, P, 2)
        Integer (y, x) position of each correlation maximum, in frame pixels.
    refineds : float32 array (N, P, 2)
        Refined (y, x) positions: 5x5 centre of mass, or DFT-upsampled.
    heights : float32 array (N, P)
        Correlation maximum (log-scaled frame).
    elevations : float32 array (N, P)
        Slope of the tightest cone under the maximum, a quality score.

    A 2-D input frame gives arrays without the leading N axis. The result
    unpacks like libertem-blobfinder's tuple:
    ``centers, refineds, heights, elevations = refine(...)``.
    """

    centers: np.ndarray
    refineds: np.ndarray
    heights: np.ndarray
    elevations: np.ndarray

    def __iter__(self):
        return iter((self.centers, self.refineds, self.heights, self.elevations))


def _dense_chunk(frames, start, stop):
    """Frames ``start:stop`` as a dense array numba can read (native byte order)."""
    chunk = frames[start:stop]
    if is_sparse(chunk):
        chunk = sparseconverter.for_backend(chunk, sparseconverter.NUMPY)
    chunk = np.asarray(chunk)
    if chunk.dtype == np.float16:
        chunk = chunk.astype(np.float32)
    elif not chunk.dtype.isnative:
        chunk = chunk.astype(chunk.dtype.newbyteorder("="))
    return chunk


def _as_stack(frames):
    """A 3-D, sliceable view of ``frames`` (N, H, W) and whether one 2-D frame was given."""
    if is_sparse(frames) and len(frames.shape) == 2:
        # scipy.sparse matrices are 2-D only: one frame
        frames = sparseconverter.for_backend(frames, sparseconverter.NUMPY)
    shape3, single = _validate.check_frame_stack(frames)
    if single:
        frames = frames[np.newaxis] if not is_sparse(frames) else frames.reshape(shape3)
    return frames, shape3, single


def refine(frames, peaks, pattern, *, mode="fast", upsample=False,
           memory_limit=None, workers=None):
    """Find and refine the peaks of every frame of a stack by template correlation.

    Parameters
    ----------
    frames : array (N, H, W) or (H, W)
        Frames of any real dtype (uint8, uint16, int32, float32, float64, ...),
        with any strides: a NumPy array or view, a ``numpy.memmap`` (read in
        chunks, never copied whole), or a scipy.sparse / pydata sparse array.
    peaks : integer array (P, 2)
        Approximate (y, x) peak positions, the same for every frame (e.g. from
        :func:`gpucorr.get_peaks`). Peaks may lie at or beyond the frame edge;
        pixels outside the frame count as 0.
    pattern : gpucorr.patterns.MatchPattern
        Template to correlate with, e.g. ``RadialGradient(radius=4)``. Its
        crop (``2 * pattern.get_crop_size()`` square) must fit in the frame.
    mode : {"fast", "full"}
        ``"fast"`` crops around each peak, then correlates the crops;
        ``"full"`` correlates the whole frame, then crops the map.
    upsample : bool or int
        ``False`` (default): refine by the 5x5 centre of mass. ``True`` or an
        int from 2 to 1000: refine by DFT upsampling on a ``1 / upsample`` px
        grid, then below the grid by a parabola through the grid maximum
        (``True`` means 20).
    memory_limit : int, optional
        Scratch bytes to use at most (default 256 MiB); frames are processed in
        chunks sized to fit.
    workers : int, optional
        Threads working on chunks in parallel (default: one per CPU core).

    Returns
    -------
    RefineResult
        ``centers`` (N, P, 2) int32, ``refineds`` (N, P, 2) float32,
        ``heights`` (N, P) float32, ``elevations`` (N, P) float32; without the
        N axis for a 2-D frame.

    Notes
    -----
    Backends: NumPy (and memmap, sparse) input runs on the CPU with numba
    kernels. Float64 frames are computed in float64, all others in float32.

    Examples
    --------
    >>> import numpy as np
    >>> import gpucorr
    >>> from gpucorr.patterns import RadialGradient
    >>> frames, indices, peaks = gpucorr.cbed_frame(radius=4)
    >>> res = gpucorr.refine(frames, np.rint(peaks).astype(int), RadialGradient(radius=4),
    ...                      upsample=True)
    >>> res.refineds.shape
    (1, 49, 2)
    >>> bool(np.abs(res.refineds[0] - peaks).max() < 0.1)
    True
    """
    if mode not in ("fast", "full"):
        raise ValueError(f"mode must be 'fast' or 'full'; got {mode!r}")
    xp = array_namespace(frames, peaks)
    backend = get_backend(xp)
    _validate.check_pattern(pattern)
    frames, (n_frames, fy, fx), single = _as_stack(frames)
    peaks = _validate.check_peaks(peaks)
    factor = _validate.check_upsample(upsample)
    crop_size = _validate.check_crop_size(pattern.get_crop_size(), (fy, fx))
    if memory_limit is None:
        memory_limit = DEFAULT_MEMORY_LIMIT
    if workers is None:
        workers = os.cpu_count() or 1
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if int(memory_limit) <= 0:
        raise ValueError(f"memory_limit must be > 0 bytes; got {memory_limit}")

    n_peaks = len(peaks)
    rdtype = _pipeline.compute_dtype(frames.dtype)
    shape = (2 * crop_size, 2 * crop_size) if mode == "fast" else (fy, fx)
    template = xp.asarray(pattern.get_template(sig_shape=shape))
    _validate.check_template(template, shape, name="pattern.get_template()")
    filt = _pipeline.correlation_filter(xp, template, shape, rdtype)
    run = _pipeline.run_fast if mode == "fast" else _pipeline.run_full

    centers = xp.empty((n_frames, n_peaks, 2), dtype=np.int32)
    refineds = xp.empty((n_frames, n_peaks, 2), dtype=np.float32)
    heights = xp.empty((n_frames, n_peaks), dtype=np.float32)
    elevations = xp.empty((n_frames, n_peaks), dtype=np.float32)

    per_frame = _pipeline.frame_bytes(mode, (fy, fx), n_peaks, crop_size, rdtype, factor)
    workers = max(1, min(int(workers), n_frames))
    # at most MAX_CHUNK_FRAMES, within the memory budget, and enough chunks for every worker
    chunk = int(max(1, min(MAX_CHUNK_FRAMES, memory_limit // (workers * per_frame),
                           -(-n_frames // workers))))

    def process(start):
        stop = min(start + chunk, n_frames)
        out = (centers[start:stop].reshape(-1, 2), refineds[start:stop].reshape(-1, 2),
               heights[start:stop].reshape(-1), elevations[start:stop].reshape(-1))
        run(backend, _dense_chunk(frames, start, stop), peaks, crop_size, filt, factor, out)

    starts = range(0, n_frames, chunk)
    if workers == 1 or len(starts) == 1:
        for start in starts:
            process(start)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = deque()
            for start in starts:
                if len(pending) >= 2 * workers:
                    pending.popleft().result()
                pending.append(pool.submit(process, start))
            while pending:
                pending.popleft().result()

    result = RefineResult(centers, refineds, heights, elevations)
    if single:
        result = RefineResult(*(a[0] for a in result))
    return result
