"""One refine call per mode on GPU-resident frames, inside NVTX ranges, for Nsight Compute.

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
from gpucorr import _cuda
from gpucorr.patterns import RadialGradient
from gpucorr.synthetic import cbed_frame


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4096)
    parser.add_argument("--modes", default="fast,fast-unfused,fast-upsample20,full",
                        help="comma-separated cases to measure")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    clean, _, true = cbed_frame(256, 256, zero=(128.3, 127.6), a=(36.6, 2.1), b=(-2.1, 36.6),
                                radius=8, margin=16)
    distinct = rng.poisson(clean[0] / clean.sum() * 2e6, size=(64, 256, 256)).astype(np.float32)
    frames = cupy.asarray(np.resize(distinct, (args.frames, 256, 256)))
    peaks = cupy.asarray(np.rint(true).astype(np.int64)[:49])
    pattern = RadialGradient(radius=8)
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
