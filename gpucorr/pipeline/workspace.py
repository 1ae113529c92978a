"""Scratch memory and dtypes of the pipeline: :class:`Workspace`, one per thread.

The large scratch arrays of a chunk (crops, spectra, maps, logged
frames) come from a :class:`Workspace`. :func:`~gpucorr.pipeline.run_fast` and
:func:`~gpucorr.pipeline.run_full` use the calling thread's workspace, which on the CPU keeps
its buffers from one chunk (and one ``refine`` call) to the next, so that a
steady stream of chunks allocates nothing large: fresh large allocations are
fresh pages from the kernel wherever glibc's dynamic mmap threshold is off
(any ``MALLOC_*_`` tunable set, as Dask's nanny does), and page faults then
cost as much as the FFTs. The kept buffers are at most one chunk's scratch
(``memory_limit / workers`` of :func:`gpucorr.refine`) per thread; a thread's
buffers go when the thread ends, all of them with :func:`release_workspaces`.
On a GPU nothing is kept: CuPy's memory pool already reuses device memory.
The other functions take ``ws=None``: then every array is freshly allocated,
as returned arrays may be kept by the caller.
"""
import contextlib
import math
import threading
import weakref

import numpy as np

__all__ = ["native", "compute_dtype", "real_dtype", "complex_dtype", "Workspace",
           "thread_workspace", "release_workspaces", "fresh"]


def native(dtype):
    """``dtype`` in the machine's byte order (big-endian '>f8' -> float64)."""
    return np.dtype(dtype).newbyteorder("=")


def compute_dtype(dtype):
    """Real dtype the pipeline computes in: float64 for float64 input (of either byte
    order), else float32."""
    return np.dtype(np.float64) if native(dtype) == np.float64 else np.dtype(np.float32)


def real_dtype(cdtype):
    return np.dtype(np.float64) if native(cdtype) == np.complex128 else np.dtype(np.float32)


def complex_dtype(rdtype):
    return np.dtype(np.complex128) if native(rdtype) == np.float64 else np.dtype(np.complex64)


class Workspace:
    """Named scratch arrays for one chunk at a time, reused by the next chunk.

    ``empty(name, shape, dtype)`` returns an uninitialised array; with
    ``keep=True`` (NumPy only) it is a view of the buffer kept under ``name``,
    grown when too small, so arrays of the same name from earlier calls are
    overwritten: within one chunk every live array needs its own name, and
    nothing from a workspace may outlive the chunk (results go to ``out``).
    With ``keep=False`` (and always for CuPy) every call allocates afresh.

    Parameters
    ----------
    xp : module
        The array module (``numpy`` or ``cupy``).
    keep : bool
        Keep and reuse buffers (NumPy only; ignored for CuPy).
    """

    def __init__(self, xp, keep=True):
        self.xp = xp
        self.keep = bool(keep) and xp is np
        self.busy = False
        self._buffers = {}

    def empty(self, name, shape, dtype):
        """An uninitialised array ``shape``/``dtype``: the buffer ``name`` if kept."""
        if not self.keep:
            return self.xp.empty(shape, dtype=dtype)
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            self._buffers.pop(name, None)  # free the smaller buffer first
            # complex128 units: aligned for every dtype
            buf = np.empty(-(-max(nbytes, 1) // 16), dtype=np.complex128).view(np.uint8)
            self._buffers[name] = buf
        return buf[:nbytes].view(dtype).reshape(shape)

    def out(self, name, shape, dtype):
        """``empty(name, shape, dtype)`` to pass as ``out=`` where buffers are kept, else
        None (then the function allocates its result, exactly as without ``out=``)."""
        return self.empty(name, shape, dtype) if self.keep else None

    @property
    def nbytes(self):
        """Bytes of the kept buffers."""
        return sum(b.nbytes for b in list(self._buffers.values()))

    def release(self):
        """Drop the kept buffers (arrays still in use stay valid)."""
        self._buffers = {}


_thread = threading.local()
_workspaces = weakref.WeakSet()
_workspaces_lock = threading.Lock()


@contextlib.contextmanager
def thread_workspace(xp):
    """The calling thread's :class:`Workspace` for ``xp``, for the duration of one chunk.

    Each thread has its own, so threads never share buffers. A nested use in
    the same thread while the workspace is busy (e.g. ``refine`` called from a
    signal handler) gets a fresh, non-keeping one; so does CuPy.
    """
    if xp is not np:
        yield Workspace(xp, keep=False)
        return
    ws = getattr(_thread, "workspace", None)
    if ws is None:
        ws = _thread.workspace = Workspace(np)
        with _workspaces_lock:
            _workspaces.add(ws)
    if ws.busy:
        yield Workspace(np, keep=False)
        return
    ws.busy = True
    try:
        yield ws
    finally:
        ws.busy = False


def release_workspaces():
    """Drop the scratch buffers kept by every thread's workspace; returns the bytes freed."""
    with _workspaces_lock:
        kept = list(_workspaces)
    freed = 0
    for ws in kept:
        freed += ws.nbytes
        ws.release()
    return freed


def fresh(xp, ws):
    """``ws``, or a fresh non-keeping workspace where it is None."""
    return Workspace(xp, keep=False) if ws is None else ws
