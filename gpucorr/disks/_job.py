"""One find_disks call, ready for the executors of :mod:`gpucorr.execution`."""
import numpy as np

from gpucorr import _validate, pipeline
from gpucorr.backends import get_backend
from gpucorr.execution.job import chunk_frames
from gpucorr.pipeline.disks import disk_bytes, run_disks

__all__ = ["DiskJob"]


class DiskJob:
    """The frames, the filter of the whole frame, the result arrays and the chunk sizes of
    one :func:`gpucorr.find_disks` call on one backend (the interface of
    :class:`gpucorr.execution.Job`)."""

    def __init__(self, xp, frames, pattern, search, memory_limit):
        self.xp = xp
        self.backend = get_backend(xp)
        self.frames = frames
        self.n_frames = len(frames)
        self.search = search
        self.memory_limit = memory_limit
        shape = tuple(frames.shape[-2:])
        self.rdtype = pipeline.compute_dtype(frames.dtype)
        template = pattern.get_template(sig_shape=shape)
        _validate.check_template(template, shape, name="pattern.get_template()")
        on = np if isinstance(template, np.ndarray) else xp
        self.filt = xp.asarray(
            pipeline.correlation_filter(on, on.asarray(template), shape, self.rdtype))
        self.per_frame = disk_bytes(shape, search.max_disks, self.rdtype, search.factor,
                                    search.half)

    def results(self, xp, n_frames=None):
        """Empty (centers, positions, heights, elevations, counts) in ``xp``."""
        n = self.n_frames if n_frames is None else n_frames
        k = self.search.max_disks
        return (xp.empty((n, k, 2), dtype=np.int32), xp.empty((n, k, 2), dtype=np.float32),
                xp.empty((n, k), dtype=np.float32), xp.empty((n, k), dtype=np.float32),
                xp.empty(n, dtype=np.int32))

    def compute(self, chunk, out, start, stop):
        """Find the disks of frames ``chunk`` (on the backend) into ``out[start:stop]``."""
        run_disks(self.backend, chunk, self.filt, self.search,
                  tuple(a[start:stop] for a in out))

    def chunk_frames(self, budget, workers, max_chunk, extra_per_frame=0):
        return chunk_frames(self, budget, workers, max_chunk, extra_per_frame)

    def finish(self, out):
        """Nothing to mark after a GPU-resident run (the disks are the frames' own)."""
