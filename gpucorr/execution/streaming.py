"""The GPU executor for host frames: streamed through pinned staging buffers.

Two slots, each a pinned host buffer and a device buffer of one chunk: while
the GPU refines the chunk of one slot on the caller's stream, the host reads
the next chunk into the other slot's pinned buffer (``workers`` threads, each
:meth:`Source.read_into <gpucorr.execution.sources.Source.read_into>`) and a
second stream copies it to the device, as frames of their own dtype (uint16
stays uint16; the crop kernel converts). The copy goes piece by piece
(``STAGING_PIECE_BYTES``), each piece as soon as it is read, so reading and
copying overlap within a chunk too. Results come back through pinned buffers
the same way.

NumPy frames that are themselves in page-locked memory (allocated with
``cupyx.empty_pinned``, or registered with ``cudaHostRegister``), C-contiguous
and of the staging dtype, skip the staging buffers: each chunk is copied to
the device straight from the caller's memory.
"""
import ctypes
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpucorr.execution.gpu import gpu_budget, run_chunks
from gpucorr.execution.sources import ArraySource

__all__ = ["run_streaming", "Slot", "STAGING_BYTES", "STAGING_PIECE_BYTES"]

#: bytes of frames per pinned staging buffer (there are two) when streaming to a GPU
STAGING_BYTES = 256 * 2**20
#: bytes of frames per host-to-device copy from a staging buffer: each is issued as soon as
#: its frames are read, so reading the rest of the chunk overlaps with copying. (Smaller
#: pieces cost more in thread hand-offs than they gain: docs/benchmarks.md.)
STAGING_PIECE_BYTES = 64 * 2**20


def run_streaming(job, workers, progress):
    """Refine host frames ``job.frames`` on the current GPU; NumPy results."""
    cupy = job.xp
    n = job.n_frames
    out = job.results(np)
    if n == 0:
        return out
    dtype = job.frames.chunk(0, 1).dtype
    frame_nbytes = int(np.prod(job.frames.shape[1:])) * dtype.itemsize
    # two device slots of frames and results beside the scratch of one chunk
    chunk = job.chunk_frames(gpu_budget(job), 1, max(1, STAGING_BYTES // frame_nbytes),
                             extra_per_frame=2 * frame_nbytes)
    pinned = pinned_stack(cupy, job.frames, dtype)
    slots = _allocate_slots(job, chunk, dtype, staging=pinned is None)
    job.gpu_chunk = chunk = len(slots[0].device)
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
                _collect(pending.popleft(), out, progress, n)
            if pinned is None:
                slot.load(job.frames, start, stop, pool, workers, copy)
            else:
                slot.upload(pinned, start, stop, copy)
            compute.wait_event(slot.uploaded)
            slot.refine(job, stop - start)
            slot.download(compute, stop - start)
            pending.append((slot, start, stop))
        while pending:
            _collect(pending.popleft(), out, progress, n)
    finally:
        if pool is not None:
            pool.shutdown()
        copy.synchronize()
        compute.synchronize()
    return out


def _allocate_slots(job, chunk, dtype, staging):
    """Two :class:`Slot` of ``chunk`` frames, halved while the device is out of memory."""
    import cupyx
    cupy = job.xp
    while True:
        try:
            return [Slot(cupy, cupyx, job, chunk, dtype, staging=staging) for _ in range(2)]
        except cupy.cuda.memory.OutOfMemoryError:
            if chunk == 1:
                raise
            cupy.get_default_memory_pool().free_all_blocks()
            chunk = max(1, chunk // 2)


def _collect(item, out, progress, total):
    """Wait for a slot's results and copy them into ``out``."""
    slot, start, stop = item
    slot.downloaded.synchronize()
    for dst, src in zip(out, slot.host_out):
        dst[start:stop] = src[:stop - start]
    if progress is not None:
        progress(stop, total)


class Slot:
    """One staging slot of :func:`run_streaming`: pinned and device buffers, and their events."""

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
        if pool is None or not isinstance(frames, ArraySource):
            for a in range(0, n, piece):
                b = min(a + piece, n)
                frames.read_into(start + a, start + b, self.host[a:])
                self._copy(stream, a, b)
        else:
            step = -(-piece // workers)  # frames per thread task: a piece is `workers` tasks
            tasks = [(a, pool.submit(frames.read_into, start + a, min(start + a + step, stop),
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
        copy_to_device(self.device, frames, start, stop, 0, stream)
        self.uploaded.record(stream)

    def _copy(self, stream, a, b):
        """Frames ``a:b`` of the pinned buffer to the device buffer, on ``stream``."""
        copy_to_device(self.device, self.host, a, b, a, stream)

    def refine(self, job, n):
        """Refine the first ``n`` frames of the device buffer on the current stream."""
        def process(start, stop):
            job.compute(self.device[start:stop], self.dev_out, start, stop)

        run_chunks(job, process, None, 0, n)

    def download(self, stream, n):
        for src, dst in zip(self.dev_out, self.host_out):
            nbytes = n * src[0].nbytes
            src.data.copy_to_host_async(ctypes.c_void_p(dst.ctypes.data), nbytes, stream=stream)
        self.downloaded.record(stream)


def copy_to_device(device, host, start, stop, at, stream):
    """Frames ``start:stop`` of C-contiguous pinned ``host`` to ``device[at:]``, on ``stream``."""
    nbytes = host[0].nbytes
    device[at:at + stop - start].data.copy_from_host_async(
        ctypes.c_void_p(host.ctypes.data + start * nbytes), (stop - start) * nbytes,
        stream=stream)


def pinned_stack(cupy, frames, dtype):
    """``frames`` as a C-contiguous NumPy stack (N, H, W) where they lie in page-locked
    host memory and have the staging ``dtype``, so the device can copy them straight
    from there; else None.

    Both the first and the last byte must be page-locked, which catches an
    array that runs past the end of a pinned allocation.
    """
    if not isinstance(frames, ArraySource):
        return None
    arr = frames.stack
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
