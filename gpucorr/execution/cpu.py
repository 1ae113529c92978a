"""The CPU executor: chunks of frames refined by a pool of threads (numba kernels, no GIL).

Each thread reads its chunk from the source and refines it with the numba
kernel set, into its rows of the result arrays; chunks are small enough to
stay in the CPU caches and the threads' scratch within ``memory_limit``.
"""
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["run_on_cpu", "DEFAULT_MEMORY_LIMIT", "MAX_CHUNK_FRAMES"]

#: scratch memory :func:`gpucorr.refine` may use by default, all workers together (bytes)
DEFAULT_MEMORY_LIMIT = 256 * 2**20
#: frames per chunk at most on the CPU: small chunks stay in the CPU caches
MAX_CHUNK_FRAMES = 64


def run_on_cpu(job, workers, progress):
    """Refine ``job`` in chunks of at most ``MAX_CHUNK_FRAMES`` on ``workers`` threads.

    ``progress(done, total)`` is called from the calling thread after each chunk,
    in order. Returns the NumPy result arrays.
    """
    out = job.results(np)
    n = job.n_frames
    workers = max(1, min(workers, n))
    budget = DEFAULT_MEMORY_LIMIT if job.memory_limit is None else job.memory_limit
    chunk = job.chunk_frames(budget, workers, MAX_CHUNK_FRAMES)

    def process(start):
        stop = min(start + chunk, n)
        job.compute(job.frames.chunk(start, stop), out, start, stop)

    def done(start):
        if progress is not None:
            progress(min(start + chunk, n), n)

    starts = range(0, n, chunk)
    if workers == 1 or len(starts) == 1:
        for start in starts:
            process(start)
            done(start)
        return out
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        for start in starts:
            if len(pending) >= 2 * workers:
                done(_wait(pending))
            pending.append((start, pool.submit(process, start)))
        while pending:
            done(_wait(pending))
    return out


def _wait(pending):
    start, future = pending.popleft()
    future.result()
    return start
