"""A small run of every GPU kernel, for ``compute-sanitizer --tool memcheck``.

Fast and full mode, with and without upsampling, uint16 / float32 / float64
frames, odd and even sizes, peaks at, beyond and wholly outside the edges, CuPy
input and host input streamed to the GPU; fast mode both as the fused kernel
(fast.cu, every crop edge it is instantiated for) and as the multi-launch
pipeline. Values are the parity suite's job
(tests/test_gpu.py); here the results need only be finite and, for disks
inside the frame, at the CPU's integer centres. (A crop wholly outside the
frame is constant, and which of its equal map values wins is float rounding.)
"""
import sys

import numpy as np

import cupy

import gpucorr
from gpucorr import _cuda, patterns


def main(quick=False):
    """``quick``: the uint16 frames only (for compute-sanitizer's slower racecheck)."""
    rng = np.random.default_rng(0)
    failures = []
    cases = (((64, 64), np.uint16), ((63, 70), np.float32), ((48, 50), np.float64))
    for shape, dtype in cases[:1] if quick else cases:
        clean, _, true = gpucorr.cbed_frame(*shape, zero=(shape[0] / 2 + 0.3, shape[1] / 2 - 0.4),
                                            a=(14.2, 1.1), b=(-1.1, 14.2), radius=3)
        frames = rng.poisson(clean[0] * 200 + 5, size=(3,) + shape).astype(dtype)
        inside = np.rint(true).astype(np.int64)
        peaks = np.concatenate([inside, [[0, 0], [shape[0] + 3, -2]]])
        for pattern, fused in ((patterns.Circular(radius=3), False),
                               (patterns.RadialGradient(radius=2.5, search=5), False),
                               (patterns.Circular(radius=3, search=8), True),
                               (patterns.Circular(radius=3, search=8), False)):
            _cuda.FUSED_FAST = fused
            for mode in ("fast", "full"):
                for upsample in (False, 10):
                    want = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=upsample)
                    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern,
                                         mode=mode, upsample=upsample)
                    # host frames streamed through the pinned staging buffers
                    streamed = gpucorr.refine(frames, peaks, pattern, mode=mode,
                                              upsample=upsample, device="cuda")
                    for path, res in (("resident", [cupy.asnumpy(a) for a in got]),
                                      ("streamed", list(streamed))):
                        where = (f"{path} {np.dtype(dtype).name} {shape} "
                                 f"{type(pattern).__name__} fused={fused} {mode} "
                                 f"upsample={upsample}")
                        if not all(np.isfinite(a).all() for a in res[1:3]):
                            failures.append(f"{where}: non-finite results")
                        wrong = np.argwhere(res[0][:, :len(inside)]
                                            != want.centers[:, :len(inside)])
                        if len(wrong):
                            f, p = wrong[0][:2]
                            failures.append(f"{where}: {len(wrong)} centre coordinates differ,"
                                            f" first frame {f} peak {p}: {res[0][f, p]} on the"
                                            f" GPU, {want.centers[f, p]} on the CPU")
        # the fused kernel at crop edges of every kind it has (powers of two, odd parts
        # alone and mixed, 4 .. 64 px) that fit the frame (float64 frames compute in
        # float64: the multi-launch pipeline)
        saved = _cuda.FAST_MAX_SIZE
        _cuda.FUSED_FAST, _cuda.FAST_MAX_SIZE = True, max(_cuda.FAST_SIZES)
        for edge in [e for e in (4, 6, 14, 24, 30, 32, 64) if e <= min(shape)]:
            pattern = patterns.Circular(radius=min(3, edge / 4), search=edge // 2)
            for upsample in (False, 10):
                got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern,
                                     upsample=upsample)
                assert all(bool(cupy.isfinite(a).all()) for a in (got.refineds, got.heights))
        _cuda.FAST_MAX_SIZE = saved
    cupy.cuda.runtime.deviceSynchronize()
    for failure in failures:
        print(failure)
    if failures:
        sys.exit(f"gpu smoke run: {len(failures)} results differ from the CPU's")
    print("gpu smoke run: ok")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
