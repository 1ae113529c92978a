"""GPU throughput: gpucorr on CuPy input against gpucorr-CPU and libertem-blobfinder.

GPU-resident float32 input, 256x256 frames, 49 peaks, RadialGradient(radius=8)
(32-px crops); fast, fast with upsample=20, and full mode. Times with CUDA
events after a warm-up, ending with a stream synchronise; prints frames/s and
the achieved read throughput of the frames against the device's measured
device-to-device copy bandwidth. Writes JSON with --out.
"""
import argparse
import json
import os
import time

import numpy as np

import cupy

import gpucorr
from gpucorr.patterns import RadialGradient
from gpucorr.synthetic import cbed_frame


def gpu_seconds(fn, rounds):
    fn()
    cupy.cuda.get_current_stream().synchronize()
    best = np.inf
    for _ in range(rounds):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def copy_bandwidth(nbytes=2**30):
    a = cupy.empty(nbytes // 4, dtype=np.float32)
    b = cupy.empty_like(a)
    t = gpu_seconds(lambda: b.__setitem__(Ellipsis, a), 5)
    return 2 * nbytes / t  # read + write


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16384)
    parser.add_argument("--cpu-frames", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    clean, _, true = cbed_frame(256, 256, zero=(128.3, 127.6), a=(36.6, 2.1), b=(-2.1, 36.6),
                                radius=8, margin=16)
    distinct = rng.poisson(clean[0] / clean.sum() * 2e6, size=(64, 256, 256)).astype(np.float32)
    host = np.tile(distinct, (args.frames // 64 + 1, 1, 1))[: args.frames]
    frames = cupy.asarray(host)
    peaks_host = np.rint(true).astype(np.int64)[:49]
    peaks = cupy.asarray(peaks_host)
    pattern = RadialGradient(radius=8)
    bandwidth = copy_bandwidth()
    device = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    rows = []
    try:
        from libertem_blobfinder.common import correlation as lbf
        from libertem_blobfinder.common import patterns as lbf_patterns
    except ImportError:
        lbf = None
    for name, mode, up in (("fast", "fast", False), ("fast-upsample20", "fast", 20),
                           ("full", "full", False)):
        t_gpu = gpu_seconds(lambda: gpucorr.refine(frames, peaks, pattern, mode=mode,
                                                   upsample=up), args.rounds)
        cpu_frames = host[: args.cpu_frames]
        gpucorr.refine(cpu_frames[:4], peaks_host, pattern, mode=mode, upsample=up)
        t0 = time.perf_counter()
        gpucorr.refine(cpu_frames, peaks_host, pattern, mode=mode, upsample=up)
        t_cpu = (time.perf_counter() - t0) / args.cpu_frames
        row = dict(case=name, gpu_frames_per_s=args.frames / t_gpu,
                   cpu_frames_per_s=1 / t_cpu,
                   gpu_read_fraction_of_copy_bw=args.frames * 256 * 256 * 4 / t_gpu / bandwidth)
        if lbf is not None:
            fn = lbf.process_frames_fast if mode == "fast" else lbf.process_frames_full
            ref_pattern = lbf_patterns.RadialGradient(radius=8)
            sub = cupy.asarray(cpu_frames[:32])
            t0 = time.perf_counter()
            fn(ref_pattern, cupy.asnumpy(sub), peaks_host, upsample=up)
            row["reference_numpy_frames_per_s"] = 32 / (time.perf_counter() - t0)
        rows.append(row)
        print(row)
    result = dict(device=device, cupy=cupy.__version__,
                  cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                  copy_bandwidth_gb_s=bandwidth / 1e9, frames=args.frames, rows=rows,
                  gpucorr=gpucorr.__version__, date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  commit=os.popen("git rev-parse --short HEAD").read().strip())
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
