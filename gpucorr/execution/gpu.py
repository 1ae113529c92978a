"""The GPU executor for frames already on the GPU (CuPy): chunks on the caller's stream.

:func:`run_resident` refines CuPy frames chunk after chunk on the caller's
current stream, with no host synchronisation; :func:`run_chunks` is the
chunk loop both GPU executors share, which halves the chunk on running out of
device memory. Host frames go through :mod:`gpucorr.execution.streaming`.
"""
__all__ = ["run_resident", "run_chunks", "gpu_budget", "GPU_MEMORY_FRACTION"]

#: share of the free device memory that refine may use by default on a GPU
GPU_MEMORY_FRACTION = 0.5


def gpu_budget(job):
    """Scratch bytes for ``job`` on the current GPU: its ``memory_limit``, else a share of
    the free device memory."""
    if job.memory_limit is not None:
        return int(job.memory_limit)
    return int(job.xp.cuda.runtime.memGetInfo()[0] * GPU_MEMORY_FRACTION)


def run_resident(job, progress):
    """CuPy frames: chunks one after the other on the current stream, no host sync."""
    out = job.results(job.xp)
    job.gpu_chunk = job.chunk_frames(gpu_budget(job), 1, max(job.n_frames, 1))

    def process(start, stop):
        job.compute(job.frames.chunk(start, stop), out, start, stop)

    run_chunks(job, process, progress, 0, job.n_frames)
    job.finish(out)
    return out


def run_chunks(job, process, progress, start, stop):
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
