"""Ways of getting host frames onto the GPU, side by side, to see what limits streaming.

- pinned: one copy from a pinned buffer (the bus's ceiling);
- pageable: one copy from ordinary NumPy memory (the driver stages it);
- fill: ``workers`` threads copying NumPy frames into a pinned buffer, by thread count
  (what streaming through staging buffers must do on the host first), with
  ``numpy.copyto``;
- registered: page-locking the caller's own array with ``cudaHostRegister`` in
  pieces, a copy from each piece straight to the device, and unlocking, so no host
  copy at all: the time to register, to copy and the whole; then with the pieces
  registered and unregistered by several threads;
- whether the device can read pageable host memory itself (HMM / ATS attributes).

Prints JSON rows; ``--out`` writes them.
"""
import argparse
import ctypes
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import cupy
import cupyx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, also under runpy
from gpu_bench import host_seconds  # noqa: E402




def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    nbytes = int(args.gib * 2**30)
    host = np.ones(nbytes, np.uint8)
    dev = cupy.empty(min(nbytes, 2**31), np.uint8)
    rows = []

    def row(**kw):
        kw["gb_per_s"] = nbytes / kw["seconds"] / 1e9
        rows.append(kw)
        print(json.dumps(kw), flush=True)

    pinned = cupyx.empty_pinned(dev.nbytes, np.uint8)
    pinned[...] = 1

    def from_pinned():
        for a in range(0, nbytes, dev.nbytes):
            n = min(dev.nbytes, nbytes - a)
            dev.data.copy_from_host_async(ctypes.c_void_p(pinned.ctypes.data), n)
    row(path="pinned", seconds=host_seconds(from_pinned, 3))

    def from_pageable():
        for a in range(0, nbytes, dev.nbytes):
            n = min(dev.nbytes, nbytes - a)
            dev.data.copy_from_host(ctypes.c_void_p(host.ctypes.data + a), n)
    row(path="pageable", seconds=host_seconds(from_pageable, 1))

    stage = pinned[:128 * 2**20]
    for workers in (1, 4, 8, 16):
        with ThreadPoolExecutor(workers) as pool:
            step = len(stage) // workers

            def fill(copy):
                for a in range(0, nbytes, len(stage)):
                    n = min(len(stage), nbytes - a)
                    for f in [pool.submit(copy, stage[b:min(b + step, n)],
                                          host[a + b:a + min(b + step, n)])
                              for b in range(0, n, step)]:
                        f.result()
            # numpy.copyto (glibc memcpy), as the staging reads do
            row(path="fill", workers=workers, seconds=host_seconds(lambda: fill(np.copyto), 3))

    for piece_mib in (64, 256, 1024):
        piece = piece_mib * 2**20
        times = dict(register=0.0, unregister=0.0)

        def registered():
            cupy.cuda.runtime.deviceSynchronize()
            held = []
            for a in range(0, nbytes, piece):
                n = min(piece, nbytes - a)
                t0 = time.perf_counter()
                cupy.cuda.runtime.hostRegister(host.ctypes.data + a, n, 0)
                times["register"] += time.perf_counter() - t0
                held.append(host.ctypes.data + a)
                off = a % dev.nbytes
                n = min(n, dev.nbytes - off)
                (dev[off:off + n]).data.copy_from_host_async(
                    ctypes.c_void_p(host.ctypes.data + a), n)
            cupy.cuda.runtime.deviceSynchronize()
            t0 = time.perf_counter()
            for p in held:
                cupy.cuda.runtime.hostUnregister(p)
            times["unregister"] += time.perf_counter() - t0
        t = host_seconds(registered, 2)
        row(path="registered", piece_mib=piece_mib, seconds=t,
            register_s_per_call=times["register"] / 3, unregister_s_per_call=times["unregister"] / 3)
    for threads in (4, 8, 16):
        piece = 64 * 2**20
        pieces = [(a, min(piece, nbytes - a)) for a in range(0, nbytes, piece)]

        def register(p):
            cupy.cuda.runtime.hostRegister(host.ctypes.data + p[0], p[1], 0)

        def unregister(p):
            cupy.cuda.runtime.hostUnregister(host.ctypes.data + p[0])

        with ThreadPoolExecutor(threads) as pool:
            def registered_parallel():
                for (a, n), f in zip(pieces, [pool.submit(register, p) for p in pieces]):
                    f.result()
                    off = a % dev.nbytes
                    dev[off:off + n].data.copy_from_host_async(
                        ctypes.c_void_p(host.ctypes.data + a), n)
                cupy.cuda.runtime.deviceSynchronize()
                list(pool.map(unregister, pieces))
            t = host_seconds(registered_parallel, 2)
            t0 = time.perf_counter()
            list(pool.map(register, pieces))
            t_reg = time.perf_counter() - t0
            t0 = time.perf_counter()
            list(pool.map(unregister, pieces))
            t_unreg = time.perf_counter() - t0
        row(path="registered-by-threads", threads=threads, piece_mib=64, seconds=t,
            register_alone_s=t_reg, unregister_alone_s=t_unreg)
    attrs = {}
    for name, number in (("pageable_memory_access", 88),
                         ("pageable_memory_access_uses_host_page_tables", 100)):
        try:
            attrs[name] = cupy.cuda.runtime.deviceGetAttribute(number, 0)
        except Exception as exc:  # report what the driver says
            attrs[name] = f"{type(exc).__name__}: {exc}"
    rows.append(dict(path="device attributes", **attrs))
    print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
