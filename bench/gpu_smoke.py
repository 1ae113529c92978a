"""A small run of every GPU kernel, for ``compute-sanitizer --tool memcheck``.

Fast and full mode, with and without upsampling, uint16 / float32 / float64
frames, odd and even sizes, peaks beyond the edges, CuPy input and host input
streamed to the GPU; compares with the CPU.
"""
import numpy as np

import cupy

import gpucorr
from gpucorr import patterns


def main():
    rng = np.random.default_rng(0)
    for shape, dtype in (((64, 64), np.uint16), ((63, 70), np.float32), ((48, 50), np.float64)):
        frames = (rng.random((3,) + shape) * 1000).astype(dtype)
        peaks = np.array([[0, 0], [shape[0] // 2, shape[1] // 2], [shape[0] + 3, -2]])
        for pattern in (patterns.Circular(radius=3), patterns.RadialGradient(radius=2.5, search=5)):
            for mode in ("fast", "full"):
                for upsample in (False, 10):
                    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern,
                                         mode=mode, upsample=upsample)
                    want = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=upsample)
                    np.testing.assert_array_equal(cupy.asnumpy(got.centers), want.centers)
                    # host frames streamed through the pinned staging buffers
                    streamed = gpucorr.refine(frames, peaks, pattern, mode=mode,
                                              upsample=upsample, device="cuda")
                    np.testing.assert_array_equal(streamed.centers, want.centers)
    cupy.cuda.runtime.deviceSynchronize()
    print("gpu smoke run: ok")


if __name__ == "__main__":
    main()
