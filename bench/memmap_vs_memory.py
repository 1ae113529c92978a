"""Refining a numpy.memmap from disk against the same frames already in memory.

The issue's target on a 2-core machine: a memmap of 20,000 frames (256x256
uint16, 49 peaks, fast mode) within 1.2x of the time for the same frames in
memory. The frames are the benchmark workload (:mod:`gpucorr.cli.workload`,
RadialGradient(radius=8)) as uint16, its 64 distinct frames repeated. Before
each memmap run the file's pages are dropped from the page cache
(``posix_fadvise(DONTNEED)``), so the frames really come from disk.

Usage: ``python bench/memmap_vs_memory.py [--frames 20000] [--rounds 2] [--dir DIR]``
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

import gpucorr
from gpucorr.cli import workload


def make_file(path, n_frames, seed=workload.SEED):
    """Write ``n_frames`` of the workload (uint16) to an .npy file; return the peaks."""
    w = workload.make_workload(min(n_frames, workload.DISTINCT), seed=seed, dtype=np.uint16)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16,
                                   shape=(n_frames,) + workload.FRAME_SHAPE)
    for start in range(0, n_frames, len(w.frames)):
        stop = min(start + len(w.frames), n_frames)
        mm[start:stop] = w.frames[: stop - start]
    mm.flush()
    del mm
    return w.peaks


def drop_cache(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default=None, help="folder for the data file")
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    pattern = workload.pattern()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "frames.npy")
        peaks = make_file(path, args.frames)
        size_gb = os.path.getsize(path) / 1e9
        in_memory = np.load(path)                      # read once into RAM
        gpucorr.refine(in_memory[:8], peaks, pattern)  # JIT warm-up
        t_mem, t_map = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            expected = gpucorr.refine(in_memory, peaks, pattern)
            t_mem.append(time.perf_counter() - t0)
            drop_cache(path)
            t0 = time.perf_counter()
            got = gpucorr.refine(np.load(path, mmap_mode="r"), peaks, pattern)
            t_map.append(time.perf_counter() - t0)
            np.testing.assert_array_equal(got.refineds, expected.refineds)
    result = dict(frames=args.frames, file_gb=round(size_gb, 2), rounds=args.rounds,
                  in_memory_s=min(t_mem), memmap_from_disk_s=min(t_map),
                  ratio=min(t_map) / min(t_mem), cpus=os.cpu_count(),
                  gpucorr=gpucorr.__version__)
    print(f"{args.frames} frames ({size_gb:.2f} GB uint16), fast mode, {len(peaks)} peaks: "
          f"in memory {result['in_memory_s']:.2f} s ({args.frames / result['in_memory_s']:.0f} "
          f"frames/s), memmap from disk {result['memmap_from_disk_s']:.2f} s "
          f"({args.frames / result['memmap_from_disk_s']:.0f} frames/s): "
          f"ratio {result['ratio']:.2f} (target <= 1.2)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
