"""Filling staging buffers from host frames: non-temporal stores against NumPy's copy.

What streaming to a GPU does on the host for each chunk of NumPy (or memmap)
frames before the host-to-device copy: ``workers`` threads each read a share
of the frames into the staging buffer (``gpucorr.api._read_into``, as
``_Slot.load`` calls it). Side by side, interleaved, best of ``--rounds``:
``gpucorr._hostcopy``'s non-temporal stores and ``numpy.copyto`` (glibc's
``memcpy``). Needs no GPU: an ordinary, pre-faulted buffer stands in for the
pinned one (pinning does not change how the CPU writes it).

``--scan`` gives the frames as a 4-D scan ``(rows, 64, 256, 256)``, the shape
4D-STEM data has, and adds the fill those took before they became a view of
a stack: runs along the last scan axis joined into a new array, then copied.
"""
import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, also under runpy
import workload  # noqa: E402

from gpucorr import _hostcopy, api  # noqa: E402


def joined_runs(four, frames, start, stop, out):
    """The fill of 4-D NumPy frames ``four`` before ``_as_stack`` made them a view: runs
    along the last scan axis joined into a new array (``_FlatFrames``), then copied."""
    np.copyto(out[:stop - start], api._dense_chunk(api._FlatFrames(four), start, stop))


def fill_seconds(frames, buffer, workers, pool, streaming, read=api._read_into):
    """Seconds to pass every frame through ``buffer``, ``workers`` threads per buffer fill."""
    _hostcopy.USE_STREAMING_STORES = streaming
    per = len(buffer)
    step = -(-per // workers)
    t0 = time.perf_counter()
    for start in range(0, len(frames), per):
        n = min(per, len(frames) - start)
        tasks = [pool.submit(read, frames, start + a, start + min(a + step, n),
                             buffer[a:]) for a in range(0, n, step)]
        for task in tasks:
            task.result()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="GiB of 256x256 uint16 frames")
    parser.add_argument("--buffer-mib", type=int, default=64, help="MiB per buffer fill "
                        "(a staging piece: api.STAGING_PIECE_BYTES)")
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memmap", action="store_true",
                        help="frames from a numpy.memmap of a temporary file (page cache)")
    parser.add_argument("--scan", action="store_true",
                        help="4-D frames (rows, 64, 256, 256), as gpucorr.refine takes them, "
                        "also against the former fill of 4-D frames (runs joined, then copied)")
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
    if args.scan:
        if shape[0] % 64:
            parser.error("--scan needs a whole number of 64-frame rows (--gib a multiple of 1/4)")
        four = frames.reshape(-1, 64, 256, 256)
        frames, _ = api._as_stack(four)  # what refine streams from: a view
    buffer = np.zeros((args.buffer_mib * 2**20 // frame, 256, 256), np.uint16)
    workers = args.workers or sorted({1, 2, os.cpu_count() or 1})
    rows = []
    for w in workers:
        with ThreadPoolExecutor(max_workers=w) as pool:
            ways = {True: (True, api._read_into), False: (False, api._read_into)}
            if args.scan:
                ways["joined"] = (False, functools.partial(joined_runs, four))
            best = dict.fromkeys(ways, np.inf)
            for way, (streaming, read) in ways.items():  # compile, warm up
                fill_seconds(frames, buffer, w, pool, streaming, read)
            for _ in range(args.rounds):
                for way, (streaming, read) in ways.items():
                    best[way] = min(best[way],
                                    fill_seconds(frames, buffer, w, pool, streaming, read))
            last = (len(frames) - 1) // len(buffer) * len(buffer)  # the last fill's frames
            np.testing.assert_array_equal(buffer[:len(frames) - last], frames[last:])
        rows.append(dict(workers=w, streaming_gb_s=frames.nbytes / best[True] / 1e9,
                         numpy_gb_s=frames.nbytes / best[False] / 1e9,
                         speedup=best[False] / best[True]))
        if args.scan:
            rows[-1].update(joined_runs_gb_s=frames.nbytes / best["joined"] / 1e9,
                            speedup_over_joined_runs=best["joined"] / best[True])
        print(json.dumps(rows[-1]))
    _hostcopy.USE_STREAMING_STORES = True
    if args.memmap:
        frames.flush()
        del frames
        os.remove(path)
    result = dict(source="memmap" if args.memmap else "numpy", bytes=shape[0] * frame,
                  layout="(rows, 64, 256, 256)" if args.scan else "(N, 256, 256)",
                  buffer_bytes=buffer.nbytes, rows=rows,
                  streaming_supported=_hostcopy.streaming_supported(),
                  device=workload.device(), numpy=np.__version__,
                  python=platform.python_version(), date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  commit=os.environ.get("GPUCORR_COMMIT") or workload.commit())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
