"""Filling a staging buffer from an HDF5 file: read straight into it, or through a temporary.

What streaming to a GPU does on the host for each chunk of an h5py dataset
(``gpucorr.api._read_into``): h5py's ``read_direct`` into the (pinned) buffer
against the former path, which read each run of frames into a new array,
joined the runs and copied the result into the buffer. Same file, same
buffer, interleaved, best of ``--rounds``; needs no GPU (an ordinary buffer
stands in for the pinned one). The file (256x256 uint16 frames, shaped
``(scan_y, 128, 256, 256)``) is written once and read from the page cache.
"""
import argparse
import json
import os
import platform
import tempfile
import time

import h5py
import numpy as np

from gpucorr import api


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8192, help="a multiple of 128")
    parser.add_argument("--piece", type=int, default=1024, help="frames per buffer fill")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    path = os.path.join(tempfile.mkdtemp(), "frames.h5")
    block = np.random.default_rng(0).integers(0, 4000, (128, 256, 256)).astype(np.uint16)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", (args.frames // 128, 128, 256, 256), np.uint16)
        for row in range(args.frames // 128):
            data[row] = block
    buffer = np.zeros((args.piece, 256, 256), np.uint16)
    best = {"read_direct": np.inf, "temporary": np.inf}
    with h5py.File(path, "r") as f:
        stack, _ = api._as_stack(f["data"])

        def fill(direct):
            t0 = time.perf_counter()
            for start in range(0, args.frames, args.piece):
                stop = min(start + args.piece, args.frames)
                if direct:
                    api._read_into(stack, start, stop, buffer)
                else:
                    buffer[:stop - start] = api._dense_chunk(stack, start, stop)
            return time.perf_counter() - t0

        fill(True), fill(False)
        for _ in range(args.rounds):
            for key, direct in (("read_direct", True), ("temporary", False)):
                best[key] = min(best[key], fill(direct))
    os.remove(path)
    nbytes = args.frames * 256 * 256 * 2
    result = dict(frames=args.frames, piece_frames=args.piece, bytes=nbytes,
                  gb_per_s={k: nbytes / v / 1e9 for k, v in best.items()},
                  speedup=best["temporary"] / best["read_direct"],
                  h5py=h5py.__version__, python=platform.python_version(),
                  cpus=os.cpu_count(), date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  commit=os.environ.get("GPUCORR_COMMIT")
                  or os.popen("git rev-parse --short HEAD 2>/dev/null").read().strip())
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
