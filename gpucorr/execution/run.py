"""The two ends of a batched call: its common argument checks, and running a job on the
executor the device asks for."""
import os

import numpy as np

from gpucorr import _validate
from gpucorr.backends import array_namespace
from gpucorr.backends.devices import as_native, resolve
from gpucorr.backends.host import like
from gpucorr.execution.cpu import run_on_cpu
from gpucorr.execution.gpu import run_resident
from gpucorr.execution.sources import stack_list
from gpucorr.execution.streaming import run_streaming

__all__ = ["Call", "prepare", "execute"]


class Call:
    """The checked arguments every batched call shares."""

    def __init__(self, frames, extra, in_xp, workers, memory_limit, target):
        self.frames = frames
        self.extra = extra
        self.in_xp = in_xp
        self.workers = workers
        self.memory_limit = memory_limit
        self.target = target


def prepare(frames, extra, *, device, memory_limit, workers, progress, extra_name="peaks"):
    """Check what :func:`gpucorr.refine` and :func:`gpucorr.find_disks` share: frames (a
    list is stacked; foreign arrays are taken zero-copy), ``extra`` (the peaks; None for
    none) in the frames' array library, ``progress``, ``workers``, ``memory_limit`` and
    the device."""
    if isinstance(frames, (list, tuple)):
        frames = stack_list(frames)
    frames = as_native(frames, "frames")
    extra = None if extra is None else as_native(extra, extra_name)
    in_xp = array_namespace(frames, extra)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable(done, total) or None; got {progress!r}")
    workers = _validate.check_workers(workers)
    if workers is None:
        workers = os.cpu_count() or 1
    memory_limit = _validate.check_memory_limit(memory_limit)
    return Call(frames, extra, in_xp, workers, memory_limit, resolve(device, frames))


def execute(call, make_job, progress):
    """``make_job(xp)`` run where ``call.target`` says: a GPU (streamed host frames or
    GPU-resident ones, under that device) or the CPU; results in the frames' library."""
    if call.target.kind == "cuda":
        import cupy
        with cupy.cuda.Device(call.target.index):
            job = make_job(cupy)
            if call.in_xp is np:
                return run_streaming(job, min(call.workers, job.n_frames or 1), progress)
            return run_resident(job, progress)
    return like(run_on_cpu(make_job(np), call.workers, progress), call.frames)
