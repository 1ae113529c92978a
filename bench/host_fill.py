"""Filling staging buffers from host frames: non-temporal stores against NumPy's copy.

What streaming to a GPU does on the host for each chunk of NumPy (or memmap)
frames before the host-to-device copy: ``workers`` threads each read a share
of the frames into the staging buffer (``gpucorr.api._read_into``, as
``_Slot.load`` calls it). Side by side, interleaved, best of ``--rounds``:
``gpucorr._hostcopy``'s non-temporal stores and ``numpy.copyto`` (glibc's
``memcpy``). Needs no GPU: an ordinary, pre-faulted buffer stands in for the
pinned one (pinning does not change how the CPU writes it).
"""
import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpucorr import _hostcopy, api


def fill_seconds(frames, buffer, workers, pool, streaming):
    """Seconds to pass every frame through ``buffer``, ``workers`` threads per buffer fill."""
    _hostcopy.USE_STREAMING_STORES = streaming
    per = len(buffer)
    step = -(-per // workers)
    t0 = time.perf_counter()
    for start in range(0, len(frames), per):
        n = min(per, len(frames) - start)
        tasks = [pool.submit(api._read_into, frames, start + a, start + min(a + step, n),
                             buffer[a:]) for a in range(0, n, step)]
        for task in tasks:
            task.result()
    return time.perf_counter() - t0


def cpu_model():
    """The CPU's model name (Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="GiB of 256x256 uint16 frames")
    parser.add_argument("--buffer-mib", type=int, default=64, help="MiB per buffer fill "
                        "(a staging piece: api.STAGING_PIECE_BYTES)")
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memmap", action="store_true",
                        help="frames from a numpy.memmap of a temporary file (page cache)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    frame = 256 * 256 * 2
    shape = (int(args.gib * 2**30) // frame, 256, 256)
    if args.memmap:
        path = os.path.join(tempfile.mkdtemp(), "frames.npy")
        frames = np.lib.format.open_memmap(path, "w+", np.uint16, shape)
    else:
        frames = np.empty(shape, np.uint16)
    frames[...] = np.random.default_rng(0).integers(0, 4000, (1, 256, 256), dtype=np.uint16)
    buffer = np.zeros((args.buffer_mib * 2**20 // frame, 256, 256), np.uint16)
    workers = args.workers or sorted({1, 2, os.cpu_count() or 1})
    rows = []
    for w in workers:
        with ThreadPoolExecutor(max_workers=w) as pool:
            best = {True: np.inf, False: np.inf}
            for streaming in best:  # compile, warm up
                fill_seconds(frames, buffer, w, pool, streaming)
            for _ in range(args.rounds):
                for streaming in best:
                    best[streaming] = min(best[streaming],
                                          fill_seconds(frames, buffer, w, pool, streaming))
            last = (len(frames) - 1) // len(buffer) * len(buffer)  # the last fill's frames
            np.testing.assert_array_equal(buffer[:len(frames) - last], frames[last:])
        rows.append(dict(workers=w, streaming_gb_s=frames.nbytes / best[True] / 1e9,
                         numpy_gb_s=frames.nbytes / best[False] / 1e9,
                         speedup=best[False] / best[True]))
        print(json.dumps(rows[-1]))
    _hostcopy.USE_STREAMING_STORES = True
    if args.memmap:
        frames.flush()
        del frames
        os.remove(path)
    result = dict(source="memmap" if args.memmap else "numpy", bytes=shape[0] * frame,
                  buffer_bytes=buffer.nbytes, rows=rows,
                  streaming_supported=_hostcopy.streaming_supported(),
                  cpu=cpu_model(), cpus=os.cpu_count(),
                  numpy=np.__version__, python=platform.python_version(),
                  date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  commit=os.environ.get("GPUCORR_COMMIT")
                  or os.popen("git rev-parse --short HEAD 2>/dev/null").read().strip())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
