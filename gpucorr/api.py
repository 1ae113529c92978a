"""The batched API: :func:`refine` a whole stack of frames in one call."""
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import array_api_compat
import numpy as np
import sparseconverter

from gpucorr import _pipeline, _validate
from gpucorr._backend import array_namespace, get_backend, is_sparse

__all__ = ["refine", "RefineResult", "DEFAULT_MEMORY_LIMIT"]

#: scratch memory :func:`refine` may use by default, all workers together (bytes)
DEFAULT_MEMORY_LIMIT = 256 * 2**20
#: frames per chunk at most on the CPU: small chunks stay in the CPU caches
MAX_CHUNK_FRAMES = 64
#: share of the free device memory that refine may use by default on a GPU
GPU_MEMORY_FRACTION = 0.5


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
    chunk = _dense(frames[start:stop])
    if chunk.dtype == np.float16:
        chunk = chunk.astype(np.float32)
    elif not chunk.dtype.isnative:
        chunk = chunk.astype(chunk.dtype.newbyteorder("="))
    return chunk


class _FlatFrames:
    """Read-only view of frames ``(..., H, W)`` as a stack ``(N, H, W)``, read by slices.

    Slicing reads runs of frames along the last scan axis from the underlying
    array (NumPy, memmap, h5py, zarr, pydata sparse), so nothing is copied whole.
    """

    def __init__(self, arr):
        self.arr = arr
        self.lead = tuple(arr.shape[:-2])
        self.shape = (int(np.prod(self.lead)),) + tuple(arr.shape[-2:])
        self.dtype = arr.dtype

    def __getitem__(self, index):
        start, stop, step = index.indices(self.shape[0])
        assert step == 1
        parts = []
        i = start
        while i < stop:
            pos = np.unravel_index(i, self.lead)
            run = min(stop - i, self.lead[-1] - pos[-1])
            parts.append(_dense(self.arr[tuple(int(p) for p in pos[:-1])
                                         + (slice(int(pos[-1]), int(pos[-1]) + run),)]))
            i += run
        if not parts:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        if len(parts) == 1:
            return parts[0]
        if array_api_compat.is_cupy_array(parts[0]):
            import cupy
            return cupy.concatenate(parts)
        return np.concatenate(parts)


def _dense(chunk):
    if array_api_compat.is_cupy_array(chunk):
        return chunk
    if is_sparse(chunk):
        chunk = sparseconverter.for_backend(chunk, sparseconverter.NUMPY)
    return np.asarray(chunk)


def _as_stack(frames):
    """``frames`` as a sliceable 3-D stack (N, H, W), and the leading shape to restore."""
    if is_sparse(frames) and len(frames.shape) == 2:
        # scipy.sparse matrices are 2-D only: one frame
        frames = sparseconverter.for_backend(frames, sparseconverter.NUMPY)
    shape = _validate.check_frame_stack(frames)
    lead = tuple(shape[:-2])
    if len(shape) <= 3:
        return frames, lead
    return _FlatFrames(frames), lead


def refine(frames, peaks, pattern, *, mode="fast", upsample=False,
           memory_limit=None, workers=None, progress=None):
    """Find and refine the peaks of every frame of a stack by template correlation.

    Parameters
    ----------
    frames : array (..., H, W)
        Frames of any real dtype (uint8, uint16, int32, float32, float64, ...),
        with any number of leading (scan) axes, e.g. (N, H, W),
        (scan_y, scan_x, H, W) or a single frame (H, W), and any strides: a
        NumPy array or view, a ``numpy.memmap``, an h5py dataset or a zarr
        array (all read in chunks, never copied whole), or a scipy.sparse /
        pydata sparse array.
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
    progress : callable, optional
        Called as ``progress(done, total)`` (frames) after each chunk, from the
        calling thread.

    Returns
    -------
    RefineResult
        ``centers`` (..., P, 2) int32, ``refineds`` (..., P, 2) float32,
        ``heights`` (..., P) float32, ``elevations`` (..., P) float32, with the
        leading axes of ``frames`` (none for a single 2-D frame).

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
    device = getattr(frames, "device", None) if backend.name == "cuda" else None
    frames, lead = _as_stack(frames)
    n_frames, fy, fx = (int(np.prod(lead)),) + tuple(frames.shape[-2:])
    if len(lead) == 0:
        frames = frames[np.newaxis] if not is_sparse(frames) else frames.reshape((1, fy, fx))
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable(done, total) or None; got {progress!r}")
    peaks = _peaks_for(xp, peaks)
    factor = _validate.check_upsample(upsample)
    crop_size = _validate.check_crop_size(pattern.get_crop_size(), (fy, fx))
    if workers is None:
        workers = os.cpu_count() or 1
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if memory_limit is not None and int(memory_limit) <= 0:
        raise ValueError(f"memory_limit must be > 0 bytes; got {memory_limit}")
    gpu = backend.name == "cuda"
    if gpu:
        # one thread on the caller's current stream; batches sized from free device memory
        workers = 1
        max_chunk = max(n_frames, 1)
        if memory_limit is None:
            with device:
                memory_limit = int(xp.cuda.runtime.memGetInfo()[0] * GPU_MEMORY_FRACTION)
    else:
        max_chunk = MAX_CHUNK_FRAMES
        if memory_limit is None:
            memory_limit = DEFAULT_MEMORY_LIMIT

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
    # at most max_chunk, within the memory budget, and enough chunks for every worker
    chunk = int(max(1, min(max_chunk, int(memory_limit) // (workers * per_frame),
                           -(-n_frames // workers))))

    def process(start, stop=None):
        stop = min(start + chunk, n_frames) if stop is None else stop
        out = (centers[start:stop].reshape(-1, 2), refineds[start:stop].reshape(-1, 2),
               heights[start:stop].reshape(-1), elevations[start:stop].reshape(-1))
        run(backend, _dense_chunk(frames, start, stop), peaks, crop_size, filt, factor, out)

    def done(start):
        if progress is not None:
            progress(min(start + chunk, n_frames), n_frames)

    starts = range(0, n_frames, chunk)
    if gpu:
        with device:
            _run_gpu(xp, process, progress, n_frames, chunk)
    elif workers == 1 or len(starts) == 1:
        for start in starts:
            process(start)
            done(start)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = deque()
            for start in starts:
                if len(pending) >= 2 * workers:
                    done(_wait(pending))
                pending.append((start, pool.submit(process, start)))
            while pending:
                done(_wait(pending))

    return RefineResult(*(a.reshape(lead + a.shape[1:])
                          for a in (centers, refineds, heights, elevations)))


def _run_gpu(xp, process, progress, n_frames, chunk):
    """Chunks one after the other; an out-of-memory error halves the chunk and retries."""
    start = 0
    while start < n_frames:
        stop = min(start + chunk, n_frames)
        try:
            process(start, stop)
        except xp.cuda.memory.OutOfMemoryError:
            if chunk == 1:
                raise
            xp.get_default_memory_pool().free_all_blocks()
            chunk = max(1, chunk // 2)
            continue
        if progress is not None:
            progress(stop, n_frames)
        start = stop


def _peaks_for(xp, peaks):
    """Validated int64 peaks (P, 2) in the array library of the frames.

    Integer CuPy peaks are checked by shape and dtype only, on the device (no
    host sync); others are validated on the host and moved once.
    """
    if array_api_compat.is_cupy_array(peaks) and np.dtype(peaks.dtype).kind in "iu":
        if peaks.ndim != 2 or peaks.shape[1] != 2 or peaks.shape[0] == 0:
            _validate.check_peaks(np.empty(peaks.shape, np.int64))  # raises the usual error
        return xp.ascontiguousarray(peaks, dtype=np.int64)
    host = peaks.get() if array_api_compat.is_cupy_array(peaks) else peaks
    return xp.asarray(_validate.check_peaks(host))


def _wait(pending):
    start, future = pending.popleft()
    future.result()
    return start
