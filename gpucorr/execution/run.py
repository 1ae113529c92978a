"""The two ends of a batched call: its common argument checks, and running a job on the
executor the device asks for."""
import numbers
import os

import numpy as np

from gpucorr import _validate
from gpucorr.backends import array_namespace
from gpucorr.backends.devices import as_native, resolve
from gpucorr.backends.host import like
from gpucorr.execution.cpu import run_on_cpu
from gpucorr.execution.gpu import run_resident
from gpucorr.execution.sources import as_source, stack_list
from gpucorr.execution.streaming import run_streaming
from gpucorr.pipeline import Scaling

__all__ = ["Call", "prepare", "execute", "check_scaling", "SCALINGS"]

#: the values of ``scaling`` and whether each log-scales
SCALINGS = {"log": True, "none": False}


class Call:
    """The checked arguments every batched call shares, and the source of its frames."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def restore(self, result):
        """Result arrays (N, ...) with the frames' leading axes back: (..., ...)."""
        return [a.reshape(self.lead + a.shape[1:]) for a in result]


def prepare(frames, extra, pattern, *, upsample, scaling, power, device, memory_limit,
            workers, progress):
    """Check what :func:`gpucorr.refine` and :func:`gpucorr.find_disks` share: frames (a
    list is stacked; foreign arrays are taken zero-copy), ``extra`` (the peaks; None for
    none) in the frames' array library, the pattern and its crop in the frames,
    ``upsample``, ``scaling`` and ``power``, ``progress``, ``workers``, ``memory_limit``
    and the device; and choose the frames' :class:`~gpucorr.execution.sources.Source`."""
    frames = as_native(stack_list(frames), "frames")
    extra = None if extra is None else as_native(extra, "peaks")
    in_xp = array_namespace(frames, extra)
    _validate.check_pattern(pattern)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable(done, total) or None; got {progress!r}")
    workers = _validate.check_workers(workers)
    if workers is None:
        workers = os.cpu_count() or 1
    memory_limit = _validate.check_memory_limit(memory_limit)
    target = resolve(device, frames)
    factor = _validate.check_upsample(upsample)
    method = check_scaling(scaling, power, pattern)
    source, lead = as_source(frames, to_host=target.kind == "cpu")
    crop_size = _validate.check_crop_size(pattern.get_crop_size(), source.shape[-2:])
    return Call(frames=frames, extra=extra, in_xp=in_xp, workers=workers,
                memory_limit=memory_limit, target=target, factor=factor, scaling=method,
                source=source, lead=lead, crop_size=crop_size)


def check_scaling(scaling, power, pattern):
    """The :class:`~gpucorr.pipeline.Scaling` of ``scaling`` and ``power`` (checked)."""
    if scaling is None:
        scaling = getattr(pattern, "default_scaling", "log")
    if not isinstance(scaling, str) or scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {sorted(SCALINGS)}; got {scaling!r}")
    if isinstance(power, bool) or not isinstance(power, numbers.Real):
        raise TypeError(f"power must be a real number in [0, 1]; got {power!r}")
    if not 0 <= power <= 1:
        raise ValueError(f"power must be in [0, 1]; got {power!r}")
    return Scaling(log=SCALINGS[scaling], power=float(power))


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
