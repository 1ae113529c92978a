"""The batched API: :func:`refine` a whole stack of frames in one call."""
import ctypes
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import array_api_compat
import numpy as np
import sparseconverter

from gpucorr import _device, _hostcopy, _pipeline, _validate
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
    if _pipeline.native(chunk.dtype) == np.float16:
        chunk = chunk.astype(np.float32)
    elif not chunk.dtype.isnative:
        chunk = chunk.astype(_pipeline.native(chunk.dtype))
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

    def runs(self, start, stop):
        """``(i, selection)`` for frames ``start:stop``: ``arr[selection]`` holds the
        frames from ``i`` on, a run along the last scan axis."""
        i = start
        while i < stop:
            pos = np.unravel_index(i, self.lead)
            run = min(stop - i, self.lead[-1] - pos[-1])
            yield i, tuple(int(p) for p in pos[:-1]) + (slice(int(pos[-1]), int(pos[-1]) + run),)
            i += run

    def __getitem__(self, index):
        start, stop, step = index.indices(self.shape[0])
        assert step == 1
        parts = [_dense(self.arr[selection]) for _, selection in self.runs(start, stop)]
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


def _stack_list(frames):
    """A list or tuple of equally shaped frames as one stack, in the frames' array library
    (CuPy frames stay on their GPU; mixing libraries is a TypeError; frames of different
    shapes a ValueError)."""
    shapes = []
    for i, frame in enumerate(frames):
        try:
            shapes.append(tuple(getattr(frame, "shape", None) or np.shape(frame)))
        except ValueError:  # NumPy: a ragged nested sequence
            raise ValueError(f"frames[{i}] must be a frame (H, W); got a ragged nested "
                             f"sequence") from None
        if shapes[i] != shapes[0]:
            raise ValueError(f"frames must be a list of equally shaped frames; got shape "
                             f"{shapes[0]} (frames[0]) and {shapes[i]} (frames[{i}])")
    if any(array_api_compat.is_cupy_array(f) for f in frames):
        xp = array_namespace(*frames)
        return xp.stack(frames)
    return np.asarray(frames)


def _as_stack(frames):
    """``frames`` as a sliceable 3-D stack (N, H, W), and the leading shape to restore."""
    if is_sparse(frames) and len(frames.shape) == 2:
        # scipy.sparse matrices are 2-D only: one frame
        frames = sparseconverter.for_backend(frames, sparseconverter.NUMPY)
    shape = _validate.check_frame_stack(frames)
    lead = tuple(shape[:-2])
    if len(shape) <= 3:
        return frames, lead
    if isinstance(frames, np.ndarray) and frames.flags.c_contiguous:
        # a view (memmaps stay lazy): chunks are slices, read without joining runs
        return frames.reshape((-1,) + tuple(shape[-2:])), lead
    return _FlatFrames(frames), lead


def refine(frames, peaks, pattern, *, mode="fast", upsample=False, device=None,
           memory_limit=None, workers=None, progress=None):
    """Find and refine the peaks of every frame of a stack by template correlation.

    Parameters
    ----------
    frames : array (..., H, W)
        Frames of any real dtype of at most 64 bits (uint8, uint16, int32,
        float32, float64, ...; not ``numpy.longdouble``), with any number of
        leading (scan) axes, e.g. (N, H, W), (scan_y, scan_x, H, W) or a
        single frame (H, W), and any strides: a NumPy array or view, a
        ``numpy.memmap``, an h5py dataset or a zarr array (all read in
        chunks, never copied whole; a single frame is read whole), a scipy.sparse /
        pydata sparse array, a CuPy array, or any DLPack array (PyTorch, JAX,
        ...) on the CPU or a GPU, taken zero-copy. A list or tuple of
        equally shaped frames (NumPy or CuPy) is stacked first.
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
        grid, then below the grid to the maximum of the interpolated map
        (``True`` means 20).
    device : {"cpu", "cuda", "cuda:N", "auto"}, optional
        Where to compute. Default: the device of the innermost
        :func:`gpucorr.use_device` block, else where the frames are (CuPy on
        their GPU, everything else on the CPU). ``"auto"``: a usable GPU,
        else the CPU. Host frames computed on a GPU are streamed there in
        chunks (through pinned staging buffers, copies overlapped with
        compute); results always come back in the array library of
        ``frames`` (NumPy for host frames).
    memory_limit : int, optional
        Scratch bytes to use at most (an int >= 1): default 256 MiB on the
        CPU, half the free memory of the GPU; frames are processed in chunks
        sized to fit.
    workers : int, optional
        Threads (an int >= 1) working on chunks in parallel on the CPU, or
        filling the staging buffers of a GPU (default: one per CPU core).
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
    Backends: the CPU runs numba kernels, the GPU CUDA kernels through CuPy
    on the caller's current CuPy stream. Float64 frames are computed in
    float64, all others in float32. On a GPU, frames holding NaN or infinite
    values give NaN rows (the CPU raises ``ValueError``): raising would need a
    device-to-host synchronisation. So do crops (fast mode) or frames (full
    mode) whose values span more than the compute dtype holds (float32 frames
    from -2e38 to 2e38, say), where the log scaling ``log(x - min + 1)``
    would overflow; the CPU raises ``ValueError`` naming the frame and its values.

    Memory: on the CPU each worker thread keeps its scratch buffers (at most
    ``memory_limit / workers``) for the next chunk and the next call, so a
    steady stream of calls allocates nothing large;
    ``gpucorr._pipeline.release_workspaces()`` frees them. Streaming host
    frames to a GPU keeps two pinned staging buffers in CuPy's pinned memory
    pool; frames that are themselves page-locked (``cupyx.empty_pinned``) and
    C-contiguous are copied to the device straight from there.

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
    if isinstance(frames, (list, tuple)):
        frames = _stack_list(frames)
    frames = _device.as_native(frames, "frames")
    peaks = _device.as_native(peaks, "peaks")
    in_xp = array_namespace(frames, peaks)
    _validate.check_pattern(pattern)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable(done, total) or None; got {progress!r}")
    workers = _validate.check_workers(workers)
    if workers is None:
        workers = os.cpu_count() or 1
    memory_limit = _validate.check_memory_limit(memory_limit)
    target = _device.resolve(device, frames)
    home = frames.device if in_xp is not np else None
    factor = _validate.check_upsample(upsample)
    frames, lead = _as_stack(frames)
    fy, fx = tuple(frames.shape[-2:])
    crop_size = _validate.check_crop_size(pattern.get_crop_size(), (fy, fx))
    if len(lead) == 0:
        if is_sparse(frames):
            frames = frames.reshape((1, fy, fx))
        elif isinstance(frames, np.ndarray) or array_api_compat.is_cupy_array(frames):
            frames = frames[np.newaxis]
        else:
            # one frame of an h5py dataset, zarr array, ...: read it (they cannot take
            # a new axis)
            frames = _dense(frames[...])[np.newaxis]
    if target.kind == "cpu" and in_xp is not np:
        frames = _OnHost(frames)
    if target.kind == "cuda":
        import cupy
        with cupy.cuda.Device(target.index):
            job = _Job(cupy, frames, peaks, pattern, mode, factor, crop_size, memory_limit)
            if in_xp is np:
                result = job.stream(min(workers, job.n_frames or 1), progress)
            else:
                result = job.resident(progress)
    else:
        job = _Job(np, frames, peaks, pattern, mode, factor, crop_size, memory_limit)
        result = job.on_cpu(workers, progress)
        if home is not None:
            # computed on the CPU as asked; results go back to the frames' GPU
            with home:
                result = [in_xp.asarray(a) for a in result]
    return RefineResult(*(a.reshape(lead + a.shape[1:]) for a in result))


def _check_log_overflow(xp, frames, peaks, crop_size, mode, rdtype, out, first=0,
                        name="frames"):
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
        _pipeline._mark_bad(xp, ~xp.isfinite(out[2]), out)
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
    error = _validate.log_scale_error(name, extent, rdtype, lo, hi, where)
    if error is None:  # not the log scaling: the correlation itself overflowed
        error = ValueError(
            f"the correlation of {name} is not finite {where} although {name} (values from "
            f"{lo:.8g} to {hi:.8g}) and the template are; is the template (pattern) scaled "
            f"to finite, moderate values?")
    raise error


class _OnHost:
    """CuPy frames (N, H, W) read to the host chunk by chunk, for ``device="cpu"``."""

    def __init__(self, stack):
        self.stack = stack
        self.shape = tuple(stack.shape)
        self.dtype = stack.dtype

    def __getitem__(self, index):
        chunk = self.stack[index]
        return chunk.get() if hasattr(chunk, "get") else np.asarray(chunk)


class _Job:
    """One refine call on one backend: validated inputs, filter, result arrays, chunking."""

    def __init__(self, xp, frames, peaks, pattern, mode, factor, crop_size, memory_limit):
        self.xp = xp
        self.backend = get_backend(xp)
        self.frames = frames
        self.n_frames = int(frames.shape[0])
        fy, fx = tuple(frames.shape[-2:])
        self.peaks = _validate.peaks_in(xp, peaks)
        self.crop_size = crop_size
        self.factor = factor
        self.mode = mode
        self.memory_limit = memory_limit
        self.rdtype = _pipeline.compute_dtype(frames.dtype)
        shape = (2 * crop_size, 2 * crop_size) if mode == "fast" else (fy, fx)
        template = pattern.get_template(sig_shape=shape)
        _validate.check_template(template, shape, name="pattern.get_template()")
        # a NumPy spectrum (every gpucorr pattern's): the filter is built on the host, as
        # the CPU builds it, and goes to the device in one copy, not a dozen small kernels
        on = np if isinstance(template, np.ndarray) else xp
        self.filt = xp.asarray(
            _pipeline.correlation_filter(on, on.asarray(template), shape, self.rdtype))
        self.run = _pipeline.run_fast if mode == "fast" else _pipeline.run_full
        self.per_frame = _pipeline.frame_bytes(mode, (fy, fx), len(self.peaks), crop_size,
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
        self.run(self.backend, chunk, self.peaks, self.crop_size, self.filt, self.factor, flat)
        _check_log_overflow(self.xp, chunk, self.peaks, self.crop_size, self.mode, self.rdtype,
                            flat, first=start)

    def chunk_frames(self, budget, workers, max_chunk, extra_per_frame=0):
        """Frames per chunk: within ``budget`` bytes for ``workers`` chunks at a time."""
        per_frame = self.per_frame + extra_per_frame
        return int(max(1, min(max_chunk, int(budget) // (workers * per_frame),
                              -(-self.n_frames // workers))))

    # ------------------------------------------------------------------ CPU
    def on_cpu(self, workers, progress):
        """Chunks of at most ``MAX_CHUNK_FRAMES`` on a pool of ``workers`` threads."""
        out = self.results(np)
        n = self.n_frames
        workers = max(1, min(workers, n))
        budget = DEFAULT_MEMORY_LIMIT if self.memory_limit is None else self.memory_limit
        chunk = self.chunk_frames(budget, workers, MAX_CHUNK_FRAMES)

        def process(start):
            stop = min(start + chunk, n)
            self.compute(_dense_chunk(self.frames, start, stop), out, start, stop)

        def done(start):
            if progress is not None:
                progress(min(start + chunk, n), n)

        starts = range(0, n, chunk)
        if workers == 1 or len(starts) == 1:
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
        return out

    # ------------------------------------------------------------------ GPU
    def gpu_budget(self):
        if self.memory_limit is not None:
            return int(self.memory_limit)
        return int(self.xp.cuda.runtime.memGetInfo()[0] * GPU_MEMORY_FRACTION)

    def resident(self, progress):
        """CuPy frames: chunks one after the other on the current stream, no host sync."""
        out = self.results(self.xp)
        chunk = self.chunk_frames(self.gpu_budget(), 1, max(self.n_frames, 1))

        def process(start, stop):
            self.compute(_dense_chunk(self.frames, start, stop), out, start, stop)

        self.gpu_chunk = chunk
        _run_gpu(self, process, progress, 0, self.n_frames)
        _pipeline._mark_bad(self.xp, _validate.far_peaks(self.xp, self.peaks), out)
        return out

    def stream(self, workers, progress):
        """Host frames: copied to the GPU chunk by chunk, the copies overlapped with compute.

        Two slots, each a pinned host buffer and a device buffer of one chunk:
        while the GPU refines the chunk of one slot on the caller's stream, the
        host reads the next chunk into the other slot's pinned buffer
        (``workers`` threads) and a second stream copies it to the device, as
        frames of their own dtype (uint16 stays uint16; the crop kernel
        converts). The copy goes piece by piece (``STAGING_PIECE_BYTES``), each
        piece as soon as it is read, so reading and copying overlap within a
        chunk too. Results come back through pinned buffers the same way.

        NumPy frames that are themselves in page-locked memory (allocated with
        ``cupyx.empty_pinned``, or registered with ``cudaHostRegister``), C-contiguous
        and of the staging dtype, skip the staging buffers: each chunk is copied
        to the device straight from the caller's memory.
        """
        import cupyx
        cupy = self.xp
        n = self.n_frames
        out = self.results(np)
        if n == 0:
            return out
        dtype = _dense_chunk(self.frames, 0, 1).dtype
        frame_nbytes = int(np.prod(self.frames.shape[1:])) * dtype.itemsize
        budget = self.gpu_budget()
        # two device slots of frames and results beside the scratch of one chunk
        chunk = self.chunk_frames(budget, 1, max(1, STAGING_BYTES // frame_nbytes),
                                  extra_per_frame=2 * frame_nbytes)
        pinned = _pinned_stack(cupy, self.frames, dtype)
        while True:  # out of memory for the slots: halve them
            try:
                slots = [_Slot(cupy, cupyx, self, chunk, dtype, staging=pinned is None)
                         for _ in range(2)]
                break
            except cupy.cuda.memory.OutOfMemoryError:
                if chunk == 1:
                    raise
                cupy.get_default_memory_pool().free_all_blocks()
                chunk = max(1, chunk // 2)
        self.gpu_chunk = chunk
        compute = cupy.cuda.get_current_stream()
        copy = cupy.cuda.Stream(non_blocking=True)
        # The slots' device memory may come from blocks that work still queued on the
        # caller's stream (an earlier call's scratch) uses: CuPy's pool orders reuse
        # on the stream that allocates, and the copy stream must come after it too.
        copy.wait_event(compute.record())
        pool = (ThreadPoolExecutor(max_workers=workers)
                if workers > 1 and pinned is None else None)
        pending = deque()  # (slot, start, stop) whose results are on their way back
        try:
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                slot = slots[(start // chunk) % 2]
                if pending and pending[0][0] is slot:
                    self._collect(pending.popleft(), out, progress)
                if pinned is None:
                    slot.load(self.frames, start, stop, pool, workers, copy)
                else:
                    slot.upload(pinned, start, stop, copy)
                compute.wait_event(slot.uploaded)
                slot.refine(self, stop - start)
                slot.download(compute, stop - start)
                pending.append((slot, start, stop))
            while pending:
                self._collect(pending.popleft(), out, progress)
        finally:
            if pool is not None:
                pool.shutdown()
            copy.synchronize()
            compute.synchronize()
        return out

    def _collect(self, item, out, progress):
        slot, start, stop = item
        slot.downloaded.synchronize()
        for dst, src in zip(out, slot.host_out):
            dst[start:stop] = src[:stop - start]
        if progress is not None:
            progress(stop, self.n_frames)


#: bytes of frames per pinned staging buffer (there are two) when streaming to a GPU
STAGING_BYTES = 256 * 2**20
#: bytes of frames per host-to-device copy from a staging buffer: each is issued as soon as
#: its frames are read, so reading the rest of the chunk overlaps with copying. (Smaller
#: pieces cost more in thread hand-offs than they gain: docs/benchmarks.md.)
STAGING_PIECE_BYTES = 64 * 2**20


class _Slot:
    """One staging slot of :meth:`_Job.stream`: pinned and device buffers, and their events."""

    def __init__(self, cupy, cupyx, job, chunk, dtype, staging=True):
        shape = (chunk,) + tuple(job.frames.shape[1:])
        self.cupy = cupy
        self.host = cupyx.empty_pinned(shape, dtype=dtype) if staging else None
        self.device = cupy.empty(shape, dtype=dtype)
        self.dev_out = job.results(cupy, chunk)
        self.host_out = tuple(cupyx.empty_pinned(a.shape, dtype=a.dtype) for a in self.dev_out)
        self.uploaded = cupy.cuda.Event(disable_timing=True)
        self.downloaded = cupy.cuda.Event(disable_timing=True)

    def load(self, frames, start, stop, pool, workers, stream):
        """Read frames ``start:stop`` into the pinned buffer and copy them to the device.

        NumPy input is read by ``workers`` threads. The copies go on ``stream``
        in pieces of about ``STAGING_PIECE_BYTES``, each issued once its frames
        are read, while the threads read the next pieces.
        """
        n = stop - start
        piece = max(1, STAGING_PIECE_BYTES // self.host[0].nbytes)
        if pool is None or not isinstance(frames, np.ndarray):
            for a in range(0, n, piece):
                b = min(a + piece, n)
                _read_into(frames, start + a, start + b, self.host[a:])
                self._copy(stream, a, b)
        else:
            step = -(-piece // workers)  # frames per thread task: a piece is `workers` tasks
            tasks = [(a, pool.submit(_read_into, frames, start + a, min(start + a + step, stop),
                                     self.host[a:])) for a in range(0, n, step)]
            copied = 0
            for a, task in tasks:  # in order: copy each piece once all of it is read
                task.result()
                b = min(a + step, n)
                if b - copied >= piece or b == n:
                    self._copy(stream, copied, b)
                    copied = b
        self.uploaded.record(stream)

    def upload(self, frames, start, stop, stream):
        """Frames ``start:stop`` of the caller's pinned, C-contiguous ``frames`` to the device."""
        _copy_to_device(self.device, frames, start, stop, 0, stream)
        self.uploaded.record(stream)

    def _copy(self, stream, a, b):
        """Frames ``a:b`` of the pinned buffer to the device buffer, on ``stream``."""
        _copy_to_device(self.device, self.host, a, b, a, stream)

    def refine(self, job, n):
        """Refine the first ``n`` frames of the device buffer on the current stream."""
        def process(start, stop):
            job.compute(self.device[start:stop], self.dev_out, start, stop)

        _run_gpu(job, process, None, 0, n)

    def download(self, stream, n):
        for src, dst in zip(self.dev_out, self.host_out):
            nbytes = n * src[0].nbytes
            src.data.copy_to_host_async(ctypes.c_void_p(dst.ctypes.data), nbytes, stream=stream)
        self.downloaded.record(stream)


def _copy_to_device(device, host, start, stop, at, stream):
    """Frames ``start:stop`` of C-contiguous pinned ``host`` to ``device[at:]``, on ``stream``."""
    nbytes = host[0].nbytes
    device[at:at + stop - start].data.copy_from_host_async(
        ctypes.c_void_p(host.ctypes.data + start * nbytes), (stop - start) * nbytes,
        stream=stream)


def _pinned_stack(cupy, frames, dtype):
    """``frames`` as a C-contiguous NumPy stack (N, H, W) where they lie in page-locked
    host memory and have the staging ``dtype``, so the device can copy them straight
    from there; else None.

    Both the first and the last byte must be page-locked, which catches an
    array that runs past the end of a pinned allocation.
    """
    arr = frames.arr if isinstance(frames, _FlatFrames) else frames
    if (not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.size == 0
            or not arr.flags.c_contiguous):
        return None
    runtime = cupy.cuda.runtime
    memory_type = (getattr(runtime, "pointerGetMemoryType", None)  # CuPy >= 14
                   or (lambda p: runtime.pointerGetAttributes(p).type))
    try:
        pinned = all(memory_type(p) == runtime.memoryTypeHost
                     for p in (arr.ctypes.data, arr.ctypes.data + arr.nbytes - 1))
    except runtime.CUDARuntimeError:  # older drivers refuse pageable pointers
        return None
    return arr.reshape(frames.shape) if pinned else None


def _read_into(frames, start, stop, out):
    """Frames ``start:stop`` into ``out[:stop - start]`` (native dtype, as in _dense_chunk)."""
    if isinstance(frames, np.ndarray):
        _hostcopy.copy_into(out[:stop - start], frames[start:stop])
    elif isinstance(frames, _FlatFrames) and isinstance(frames.arr, np.ndarray):
        for i, selection in frames.runs(start, stop):  # each run straight into ``out``
            run = frames.arr[selection]
            _hostcopy.copy_into(out[i - start:i - start + len(run)], run)
    elif not _read_hdf5_into(frames, start, stop, out):
        _hostcopy.copy_into(out[:stop - start], np.asarray(_dense_chunk(frames, start, stop)))


def _read_hdf5_into(frames, start, stop, out):
    """An h5py dataset's frames ``start:stop`` read straight into ``out`` (no temporary,
    one copy less); False where that does not apply (another library, another dtype)."""
    flat = isinstance(frames, _FlatFrames)
    dataset = frames.arr if flat else frames
    if (not type(dataset).__module__.startswith("h5py") or not hasattr(dataset, "read_direct")
            or dataset.dtype != out.dtype or not out.flags.c_contiguous):
        return False
    runs = frames.runs(start, stop) if flat else [(start, (slice(start, stop),))]
    for i, selection in runs:
        n = selection[-1].stop - selection[-1].start
        dataset.read_direct(out, selection, np.s_[i - start:i - start + n])
    return True


def _run_gpu(job, process, progress, start, stop):
    """``process(a, b)`` over ``start:stop`` in chunks of ``job.gpu_chunk`` frames.

    An out-of-memory error halves ``job.gpu_chunk`` (for the rest of the call)
    and retries.
    """
    xp = job.xp
    total = stop
    while start < stop:
        end = min(start + job.gpu_chunk, stop)
        try:
            process(start, end)
        except xp.cuda.memory.OutOfMemoryError:
            if job.gpu_chunk == 1:
                raise
            xp.get_default_memory_pool().free_all_blocks()
            job.gpu_chunk = max(1, job.gpu_chunk // 2)
            continue
        if progress is not None:
            progress(end, total)
        start = end


def _wait(pending):
    start, future = pending.popleft()
    future.result()
    return start
