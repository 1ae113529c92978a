"""A small run of every GPU kernel, for ``compute-sanitizer`` (memcheck, racecheck, ...).

Fast and full mode, with and without upsampling, uint16 / float32 / float64
frames, odd and even sizes, peaks at, beyond and wholly outside the edges, CuPy
input and host input streamed to the GPU; fast mode both as the fused kernel
(fast.cu, every crop edge it is instantiated for) and as the multi-launch
pipeline (crop.cu, cuFFT, evaluate.cu); the upsampling (upsample.cu, used by
both modes whenever ``upsample > 1``) with its blocks' scratch in shared memory
and in device memory. It checks that every kernel source of
``gpucorr.backends._cuda.kernel_expressions()`` was launched, and fails naming any that
was not.

Values are the parity suite's job (tests/test_gpu.py); here the results need
only be finite and, for disks inside the frame, at the CPU's integer centres
(upsampled positions within 1e-3 px of the CPU's). (A crop wholly outside the
frame is constant, and which of its equal map values wins is float rounding.)

``--quick``: the uint16 frames only (for compute-sanitizer's slower racecheck).
``--no-pool``: CuPy's memory pools off, so that every array is its own
allocation and memcheck sees an access past any array's end (within a pool
block it cannot); bench/gpu_check.sh uses it for memcheck only (racecheck and
the others keep the pools, as gpucorr runs: the pools' reuse across streams
once hid a missing wait that racecheck's slowed kernels exposed).
On the CPU stand-in (``python tests/fake_cupy.py bench/gpu_smoke.py``) it
checks the same code paths, emulated.
"""
import collections
import sys

import numpy as np

import cupy

import gpucorr
from gpucorr import patterns
from gpucorr import backends as _backend
from gpucorr.backends import _cuda
from gpucorr import pipeline as _pipeline


def _record_launches():
    """Count the kernels loaded for a launch, per (source, name expression)."""
    seen = collections.Counter()
    load = _cuda.load_kernel

    def counting(name, expression, all_expressions):
        seen[name, expression] += 1
        return load(name, expression, all_expressions)
    _cuda.load_kernel = counting
    return seen


def check_maxima(rng, failures):
    """maxima.cu: find_maxima with its candidate buffer in shared and in device memory
    (``FAST_SHARED_BYTES = 0``), and evaluate_at, against the CPU kernels."""
    from gpucorr.backends import _numba
    maps = rng.standard_normal((3, 40, 37))
    maps[:, 10:13, 9:12] += 4.0
    n, k = len(maps), 12
    for dtype in (np.float32, np.float64):
        m = maps.astype(dtype)
        want = (np.zeros((n, k, 2), np.int32), np.zeros((n, k), dtype), np.zeros(n, np.int32))
        _numba.find_maxima(m, k, 2.5, 0.0, 1, *want)
        saved = _cuda.FAST_SHARED_BYTES
        try:
            for place, limit in (("shared", saved), ("global", 0)):
                _cuda.FAST_SHARED_BYTES = limit
                got = (cupy.zeros((n, k, 2), np.int32), cupy.zeros((n, k), dtype),
                       cupy.zeros(n, np.int32))
                _cuda.find_maxima(cupy.asarray(m), k, 2.5, 0.0, 1, *got)
                got = [cupy.asnumpy(g) for g in got]
                if not (np.array_equal(got[0], want[0]) and np.array_equal(got[2], want[2])
                        and np.array_equal(got[1], want[1], equal_nan=True)):
                    failures.append(f"maxima.cu find_maxima {np.dtype(dtype).name}, buffer in "
                                    f"{place} memory: counts {got[2].tolist()} on the GPU, "
                                    f"{want[2].tolist()} on the CPU (or centres/values differ)")
        finally:
            _cuda.FAST_SHARED_BYTES = saved
        refs = [np.zeros((n, k, 2), np.float32), np.zeros((n, k), np.float32),
                np.zeros((n, k), np.float32)]
        _numba.evaluate_at(m, want[0], want[2], np.zeros(n), 2.5, *refs)
        outs = [cupy.zeros(r.shape, np.float32) for r in refs]
        _cuda.evaluate_at(cupy.asarray(m), cupy.asarray(want[0]), cupy.asarray(want[2]),
                          cupy.zeros(n), 2.5, *outs)
        for name, out, ref in zip(("refined", "height", "elevation"), outs, refs):
            out = cupy.asnumpy(out)
            if not np.allclose(out, ref, rtol=1e-5, atol=1e-5, equal_nan=True):
                failures.append(f"maxima.cu evaluate_at {np.dtype(dtype).name}: {name}s "
                                f"{out.ravel()[:3].tolist()} ... on the GPU, "
                                f"{ref.ravel()[:3].tolist()} ... on the CPU")


def check_upsample_scratch(rng, failures):
    """upsample.cu with its scratch in shared memory (the default for these maps) and in
    device memory (``FAST_SHARED_BYTES = 0``), against the CPU kernel."""
    maps = rng.standard_normal((3, 24, 21)).astype(np.float32)
    maps[:, 10:14, 9:13] += 4.0
    positions = np.array([[[11, 10], [12, 11]], [[11, 11], [-3, 30]], [[12, 10], [11, 12]]],
                         np.int64)
    want = _pipeline.upsample_positions(_backend.get_backend(np), maps, positions, 20)
    saved = _cuda.FAST_SHARED_BYTES
    try:
        for place, limit in (("shared", saved), ("global", 0)):
            _cuda.FAST_SHARED_BYTES = limit
            got = _pipeline.upsample_positions(_backend.get_backend(cupy), cupy.asarray(maps),
                                               cupy.asarray(positions), 20)
            got = cupy.asnumpy(got)
            if not np.isfinite(got).all() or np.abs(got - want).max() > 1e-3:
                failures.append(f"upsample.cu, scratch in {place} memory: positions "
                                f"{got.reshape(-1, 2)[:3].tolist()} ... on the GPU, "
                                f"{want.reshape(-1, 2)[:3].tolist()} ... on the CPU")
    finally:
        _cuda.FAST_SHARED_BYTES = saved


def main(quick=False):
    rng = np.random.default_rng(0)
    failures = []
    seen = _record_launches()
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
        _cuda.FUSED_FAST = True
        # the fused kernel at crop edges of every kind it has (powers of two, odd parts
        # alone and mixed, 4 .. 64 px) that fit the frame (float64 frames compute in
        # float64: the multi-launch pipeline)
        saved = _cuda.FAST_MAX_SIZE
        _cuda.FAST_MAX_SIZE = max(_cuda.FAST_SIZES)
        for edge in [e for e in (4, 6, 14, 24, 30, 32, 64) if e <= min(shape)]:
            pattern = patterns.Circular(radius=min(3, edge / 4), search=edge // 2)
            for upsample in (False, 10):
                got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern,
                                     upsample=upsample)
                if not all(bool(cupy.isfinite(a).all()) for a in (got.refineds, got.heights)):
                    failures.append(f"fused, crop edge {edge}, upsample={upsample}: "
                                    f"non-finite results")
        _cuda.FAST_MAX_SIZE = saved
    check_upsample_scratch(rng, failures)
    check_maxima(rng, failures)
    cupy.cuda.runtime.deviceSynchronize()
    sources = sorted({name for name, _ in seen})
    missing = sorted(set(_cuda.kernel_expressions()) - set(sources))
    print("kernels run: " + ", ".join(
        f"{name} ({len({e for n, e in seen if n == name})} instantiations, "
        f"{sum(c for (n, _), c in seen.items() if n == name)} launches)" for name in sources))
    if missing:
        failures.append(f"kernels never launched: {', '.join(missing)}")
    for failure in failures:
        print(failure)
    if failures:
        sys.exit(f"gpu smoke run: {len(failures)} failures")
    print("gpu smoke run: ok")


if __name__ == "__main__":
    unknown = set(sys.argv[1:]) - {"--quick", "--no-pool"}
    if unknown:
        sys.exit(f"gpu_smoke.py takes --quick and --no-pool; got {' '.join(sorted(unknown))}")
    if "--no-pool" in sys.argv[1:]:
        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)
    main(quick="--quick" in sys.argv[1:])
