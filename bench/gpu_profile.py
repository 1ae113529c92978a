"""One refine call per mode on GPU-resident frames, inside NVTX ranges, for Nsight Compute.

The frames are the benchmark workload of ``gpucorr bench`` and bench/gpu_bench.py
(:mod:`gpucorr.cli.workload`: 256x256 float32, 49 peaks, RadialGradient(radius=8)).

``bench/gpu_check.sh profile`` runs it under ``ncu`` with ``--nvtx-include`` so
that only the kernels of the measured calls are profiled (after a warm-up
call), and writes each kernel's memory and compute throughput (speed of
light): which pass limits the pipeline, and how far each is from the bus.
"""
import argparse

import numpy as np

import cupy
from cupy.cuda import nvtx

import gpucorr
from gpucorr.backends import _cuda
from gpucorr.cli import workload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4096)
    parser.add_argument("--modes", default="fast,fast-unfused,fast-upsample20,full",
                        help="comma-separated cases to measure")
    args = parser.parse_args(argv)
    w = workload.make_workload(args.frames)
    frames = cupy.asarray(w.frames)
    peaks = cupy.asarray(w.peaks.astype(np.int64))
    pattern = workload.pattern()
    for name, mode, up, fused in (("fast", "fast", False, True),
                                  ("fast-unfused", "fast", False, False),
                                  ("fast-upsample20", "fast", 20, True),
                                  ("full", "full", False, True)):
        if name not in args.modes.split(","):
            continue
        _cuda.FUSED_FAST = fused    # fast.cu, or crop.cu -> cuFFT -> evaluate.cu
        gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=up)  # warm-up
        cupy.cuda.get_current_stream().synchronize()
        nvtx.RangePush(f"measure-{name}")
        gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=up)
        cupy.cuda.get_current_stream().synchronize()
        nvtx.RangePop()
    print("profiled:", args.modes)


if __name__ == "__main__":
    main()
