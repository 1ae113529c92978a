"""The CUDA kernels of ``kernels/*.cu``, run on the CPU, against the CPU kernel set.

``tests/cuda_emulator.py`` compiles the real kernel sources as host C++ (one
``std::thread`` per CUDA thread, ``std::barrier`` for ``__syncthreads``, guard
pages around every array and the dynamic shared memory). The launchers of
:mod:`gpucorr.backends._cuda` run unchanged under the stand-in for ``cupy``
(tests/fake_cupy.py, through :func:`fake_cupy.run_on_device`: inputs copied to
its device, outputs back after a synchronisation), so argument order, dtypes,
grid, block and ``shared_mem`` are the launchers' own; results are compared with
:mod:`gpucorr.backends._numba`, which defines them.

What this cannot show: the device's math library (``logf`` is the host's),
FMA contraction by NVRTC, and timing. ``pytest --gpu`` (tests/test_gpu.py)
covers those on a GPU.

Tolerances (eps32 = 2**-23, eps64 = 2**-52):

* crops without log, bad flags, integer centres: exact. Both sides convert
  each pixel once, with correct rounding.
* log-scaled crops: ``rtol = 4 eps, atol = 2 eps`` of the compute dtype. Both
  kernels compute ``(x - min) + 1`` in float64 and round it once to the compute
  dtype (the same argument of the log), and each side's log is within 1 ulp.
* refined positions: ``rtol = atol = 2**-22`` (2 float32 ulps). The CUDA kernel
  subtracts the window minimum in the map dtype, the CPU kernel in float64;
  the centre of mass moves by far less than a pixel ulp, and the float32
  result may round the other way.
* heights: ``rtol = 2**-22``. Both add ``offsets`` in float64 and round once,
  so they are equal in practice; the bound allows one rounding step.
* elevations: ``rtol = 2**-19``. They depend on the refined position through
  the distances; 1 ulp of a position moves a slope by < 1e-6 relatively.
"""
import numpy as np
import pytest

import cuda_emulator
import fake_cupy
from fake_cupy import run_on_device
from gpucorr.backends import _cuda
from gpucorr.backends import _numba

EPS32 = 2.0 ** -23
EPS64 = 2.0 ** -52
FRAME_DTYPES = list(_cuda.C_TYPES)
RTYPES = [np.dtype(np.float32), np.dtype(np.float64)]


@pytest.fixture(scope="module", autouse=True)
def emulator():
    reason = cuda_emulator.unavailable_reason()
    if reason is not None:
        pytest.skip(f"CUDA emulator unavailable: {reason}")
    cuda_emulator.launches.clear()
    yield cuda_emulator


def _ids(values):
    return [np.dtype(v).name for v in values]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def run_crop(frames, peaks, crop_size, do_log, fill, shape_hw, rtype):
    """(emulated out, emulated bad, numba out, numba bad) for the same inputs."""
    n, p = frames.shape[0], peaks.shape[0]
    out = np.full((n, p) + tuple(shape_hw), 12345.0, dtype=rtype)   # stale values
    bad = np.ones(n * p, dtype=np.bool_)
    ref_out = np.zeros_like(out)
    ref_bad = np.zeros_like(bad)
    fill = np.asarray(fill, dtype=rtype)
    run_on_device(_cuda.crop_log, frames, peaks, crop_size, do_log, fill, out, bad)
    _numba.crop_log(frames, peaks, crop_size, do_log, fill, ref_out, ref_bad)
    return out, bad, ref_out, ref_bad


def assert_crops_match(frames, peaks, crop_size, fill, shape_hw, rtype):
    """Emulated crop_log == numba crop_log, without and with log scaling."""
    rtype = np.dtype(rtype)
    plain, bad, ref_plain, ref_bad = run_crop(frames, peaks, crop_size, False, fill, shape_hw,
                                              rtype)
    np.testing.assert_array_equal(bad, ref_bad)
    np.testing.assert_array_equal(plain, ref_plain)       # NaN == NaN here
    logged, bad_l, ref_logged, ref_bad_l = run_crop(frames, peaks, crop_size, True, fill,
                                                    shape_hw, rtype)
    np.testing.assert_array_equal(bad_l, ref_bad_l)
    np.testing.assert_array_equal(bad_l, ref_bad)
    good = ~bad_l.reshape(plain.shape[:2])
    eps = EPS32 if rtype == np.float32 else EPS64
    np.testing.assert_allclose(logged[good], ref_logged[good], rtol=4 * eps, atol=2 * eps)
    # non-finite crops are flagged and left unscaled by the CUDA kernel (the pipeline
    # replaces their results by NaN; the CPU kernel logs them unshifted)
    np.testing.assert_array_equal(logged[~good], plain[~good])
    return plain, bad


def frames_for(dtype, shape, rng, high=None):
    """Random frames of ``dtype`` covering its range (integers within +-``high``)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    lo = info.min if high is None else max(info.min, -high)
    hi = info.max if high is None else min(info.max, high)
    return rng.integers(lo, hi, size=shape, endpoint=True, dtype=dtype)


# peaks inside, on every edge and corner, beyond the edges and far outside
def edge_peaks(fy, fx):
    return np.array([[fy // 2, fx // 2], [0, 0], [fy - 1, fx - 1], [-2, fx + 1], [fy + 2, -3],
                     [-50, 70], [fy // 2, fx + 3]], dtype=np.int64)


# --------------------------------------------------------------------------------------
# crop_log
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("rtype", RTYPES, ids=_ids(RTYPES))
@pytest.mark.parametrize("dtype", FRAME_DTYPES, ids=_ids(FRAME_DTYPES))
def test_crop_every_instantiation(dtype, rtype, rng):
    # odd, non-square frames; h != w crops; values over the dtype's range, below 2**23
    # for the log (see test_crop_log_large_values for larger ones)
    frames = frames_for(dtype, (2, 7, 10), rng, high=2 ** 23)
    peaks = edge_peaks(7, 10)
    assert_crops_match(frames, peaks, 3, [0.0, -2.5], (5, 6), rtype)
    expression = f"crop_log<{_cuda.C_TYPES[np.dtype(dtype)]}, {_cuda.C_TYPES[rtype]}>"
    assert cuda_emulator.launches[-1].expression == expression


def test_crop_full_range_integers_without_log(rng):
    # conversion of the whole range of the wide integer types (rounding to float32)
    for dtype in (np.uint32, np.int32, np.uint64, np.int64):
        frames = frames_for(dtype, (2, 5, 6), rng)
        for rtype in RTYPES:
            out, bad, ref, ref_bad = run_crop(frames, edge_peaks(5, 6), 2, False, [0, 7], (4, 4),
                                              rtype)
            np.testing.assert_array_equal(out, ref)
            np.testing.assert_array_equal(bad, ref_bad)


@pytest.mark.parametrize("fy, fx, crop_size, h, w", [
    (1, 1, 0, 1, 1),        # single pixel
    (1, 1, 2, 4, 4),        # crop larger than the frame
    (9, 4, 1, 3, 2),        # tall frame, odd crop
    (5, 13, 4, 8, 8),       # the pipeline's 2 * crop_size square
    (20, 23, 9, 17, 19),    # 323 pixels > 256 threads: threads take several pixels
    (4, 6, 2, 1, 9),        # one row
])
def test_crop_geometry(fy, fx, crop_size, h, w, rng):
    frames = frames_for(np.float32, (2, fy, fx), rng)
    assert_crops_match(frames, edge_peaks(fy, fx), crop_size, [3.0, -1e3], (h, w), np.float32)
    assert_crops_match(frames.astype(np.float64), edge_peaks(fy, fx), crop_size, [0, 3],
                       (h, w), np.float64)


@pytest.mark.parametrize("rtype", RTYPES, ids=_ids(RTYPES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_crop_nonfinite(dtype, rtype, rng):
    frames = frames_for(dtype, (4, 8, 9), rng)
    frames[0, 4, 4] = np.nan          # in crop (0, 0)
    frames[1, 0, 0] = np.inf          # in crop (1, 1)
    frames[2, 7, 8] = -np.inf         # in crop (2, 2)
    peaks = np.array([[4, 4], [0, 0], [7, 8], [-9, -9]], dtype=np.int64)
    _, bad = assert_crops_match(frames, peaks, 2, [0.0, 1.0, 2.0, 3.0], (4, 4), rtype)
    np.testing.assert_array_equal(np.flatnonzero(bad), [0, 5, 10])
    # non-finite fill: only crops that leave the frame become bad
    _, bad = assert_crops_match(frames_for(dtype, (3, 8, 9), rng), peaks, 2,
                                [np.nan, np.inf, 5.0], (4, 4), rtype)
    np.testing.assert_array_equal(bad.reshape(3, 4)[:, 0], [False, False, False])
    np.testing.assert_array_equal(bad.reshape(3, 4)[:2, 1:], True)


def test_crop_launcher_converts_inputs(rng):
    # strided frames (a device view), int32 peaks and float64 fill: the launcher makes them
    # contiguous and of the kernel's types (the emulator rejects anything else)
    base = frames_for(np.uint16, (3, 9, 14), rng)
    frames = base[::2, :, ::-2]
    peaks = np.asfortranarray(edge_peaks(9, 7).astype(np.int32))
    out = np.zeros((2, peaks.shape[0], 4, 4), np.float32)
    bad = np.zeros(out.shape[0] * out.shape[1], np.bool_)
    ref, ref_bad = np.zeros_like(out), np.zeros_like(bad)
    with fake_cupy.installed() as cupy:
        view = cupy.asarray(base)[::2, :, ::-2]
        assert not view.flags.c_contiguous
        run_on_device(lambda *args: _cuda.crop_log(view, *args), peaks, 2, True,
                      np.array([1.0, 2.0]), out, bad)
    _numba.crop_log(frames, peaks.astype(np.int64), 2, True, np.array([1, 2], np.float32), ref,
                    ref_bad)
    np.testing.assert_allclose(out, ref, rtol=4 * EPS32, atol=2 * EPS32)
    np.testing.assert_array_equal(bad, ref_bad)


def test_crop_empty_batch_launches_nothing():
    cuda_emulator.launches.clear()
    run_on_device(_cuda.crop_log, np.zeros((0, 4, 4), np.uint8), np.zeros((3, 2), np.int64), 1,
                  True, np.zeros(0, np.float32), np.zeros((0, 3, 2, 2), np.float32),
                  np.zeros(0, np.bool_))
    run_on_device(_cuda.crop_log, np.zeros((2, 4, 4), np.uint8), np.zeros((0, 2), np.int64), 1,
                  True, np.zeros(2, np.float32), np.zeros((2, 0, 2, 2), np.float32),
                  np.zeros(0, np.bool_))
    assert cuda_emulator.launches == []


# Regression: the kernel once shifted by m = min - 1 rounded in the compute dtype; for
# float32 and |min| >= 2**24, m == min and log(x - m) was log(0) = -inf at the minimum. Both
# kernels now compute (x - min) + 1 in float64.


@pytest.mark.parametrize("dtype, base", [(np.float32, 3.3e7), (np.uint32, 3.3e7),
                                         (np.int32, -3.3e7)], ids=["float32", "uint32", "int32"])
def test_crop_log_large_values(dtype, base):
    frames = (base + 4 * np.arange(2 * 6 * 6).reshape(2, 6, 6)).astype(dtype)
    assert_crops_match(frames, np.array([[3, 3]], np.int64), 2, [0, 0], (4, 4), np.float32)


def test_log_scale_frames_large_values():
    frames = (3.3e7 + 4 * np.arange(2 * 6 * 6).reshape(2, 6, 6)).astype(np.float32)
    out, bad = np.zeros_like(frames), np.zeros(2, np.bool_)
    ref, ref_bad = np.zeros_like(frames), np.zeros(2, np.bool_)
    with np.errstate(divide="ignore"):
        run_on_device(_cuda.log_scale_frames, frames, out, bad)
    _numba.log_scale_frames(frames, ref, ref_bad)
    np.testing.assert_allclose(out, ref, rtol=4 * EPS32, atol=2 * EPS32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_log_scale_frames(dtype, rng):
    # whole frames as crops of crop_log
    frames = frames_for(dtype, (3, 5, 7), rng)
    frames[1, 2, 3] = np.nan
    out, bad = np.zeros_like(frames), np.zeros(3, np.bool_)
    ref, ref_bad = np.zeros_like(frames), np.zeros(3, np.bool_)
    run_on_device(_cuda.log_scale_frames, frames, out, bad)
    _numba.log_scale_frames(frames, ref, ref_bad)
    np.testing.assert_array_equal(bad, ref_bad)
    eps = EPS32 if np.dtype(dtype) == np.float32 else EPS64
    np.testing.assert_allclose(out[~bad], ref[~bad], rtol=4 * eps, atol=2 * eps)


def peaked_maps(dtype, shape, centres, rng):
    """Maps (B, h, w) with a smooth, tilted peak at each of ``centres`` plus a little noise."""
    n, h, w = shape
    y, x = np.mgrid[:h, :w].astype(np.float64)
    maps = np.empty(shape)
    for b, (cy, cx) in enumerate(centres):
        dy, dx = y - cy, x - cx
        maps[b] = np.exp(-(dy * dy + dx * dx - 0.8 * dy * dx) / 6.0) + rng.normal(0, 1e-3, (h, w))
    return maps.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("max_grid", [1, 3, 1024])
@pytest.mark.parametrize("shape", [(3, 12, 12), (3, 13, 12)], ids=["12x12", "13x12"])
@pytest.mark.parametrize("scratch", ["shared", "global"])
def test_upsample(dtype, max_grid, shape, scratch, rng, monkeypatch):
    """upsample.cu finds the maxima the numba kernel finds (both sum in float64 in the same
    order; the emulator does not contract FMAs), for even and odd map sizes, positions that
    wrap like Python's % (negative, beyond the map), several positions per map (full mode),
    grids smaller than the number of jobs (blocks stride over the jobs), with the
    blocks' scratch in shared memory or (where it would not fit) in device memory."""
    if scratch == "global":
        monkeypatch.setattr(_cuda, "FAST_SHARED_BYTES", 0)
    from gpucorr import pipeline as _pipeline
    centres = [(5.3, 5.6), (6.2, 4.3), (5.5, 5.5)]
    maps = peaked_maps(dtype, shape, centres, rng)
    positions = np.array([[[5, 6], [5 - shape[1], 6 + shape[2]]],
                          [[6, 4], [5, 4]],
                          [[5, 5], [6, 6]]], np.int64)
    factor = 6
    tables = [_pipeline.upsample._interpolation_kernel(shape[1], factor),
              _pipeline.upsample._interpolation_kernel(shape[2], factor),
              _pipeline.upsample._harmonics(shape[1]), _pipeline.upsample._harmonics(shape[2])]
    args = (factor, *tables, _pipeline.UPSAMPLE_CANDIDATES, _pipeline.NEWTON_ITERATIONS,
            _pipeline.NEWTON_TOLERANCE)
    out = np.full((3, 2, 2), np.nan, np.float32)
    ref = np.zeros((3, 2, 2), np.float32)
    monkeypatch.setattr(_cuda, "MAX_GRID", max_grid)
    run_on_device(_cuda.upsample, maps, positions, *args, out)
    _numba.upsample(maps, positions, *args, ref)
    np.testing.assert_allclose(out, ref, rtol=0, atol=4 * EPS32 * np.abs(ref).max())
    # the search found the peaks (not just the same wrong answer on both sides)
    np.testing.assert_allclose(ref[:, 0] % shape[1:], centres, atol=0.05)


@pytest.mark.parametrize("seed", range(3))
def test_upsample_several_maxima(seed, rng):
    """Maps whose search regions hold several local maxima, some on the region's edge:
    upsample.cu ranks the same candidates, climbs the same way (edge-held axes
    included) and picks the same maximum as the numba kernel."""
    from gpucorr import pipeline as _pipeline
    r = np.random.default_rng(seed)
    h, w = 16, 15
    y, x = np.mgrid[:h, :w].astype(np.float64)
    maps = np.empty((4, h, w), np.float32)
    for b in range(4):
        m = np.exp(-((y - 8) ** 2 + (x - 7.5) ** 2) / 40.0)
        for direction in (1, -1):
            m += r.uniform(0.3, 1.0) * np.cos(2 * np.pi * (x + direction * y) / r.uniform(2.2, 3.0)
                                              + r.uniform(0, 2 * np.pi))
        maps[b] = m
    positions = r.integers(5, 11, size=(4, 2, 2)).astype(np.int64)
    factor = 8
    tables = [_pipeline.upsample._interpolation_kernel(h, factor), _pipeline.upsample._interpolation_kernel(w, factor),
              _pipeline.upsample._harmonics(h), _pipeline.upsample._harmonics(w)]
    args = (factor, *tables, _pipeline.UPSAMPLE_CANDIDATES, _pipeline.NEWTON_ITERATIONS,
            _pipeline.NEWTON_TOLERANCE)
    out = np.full((4, 2, 2), np.nan, np.float32)
    ref = np.zeros((4, 2, 2), np.float32)
    run_on_device(_cuda.upsample, maps, positions, *args, out)
    _numba.upsample(maps, positions, *args, ref)
    np.testing.assert_allclose(out, ref, rtol=0, atol=4 * EPS32 * np.abs(ref).max())


def test_upsample_refuses_too_many_candidates():
    with pytest.raises(ValueError, match="1 to 16 candidates; got 17"):
        run_on_device(_cuda.upsample, np.zeros((1, 4, 4), np.float32),
                      np.zeros((1, 1, 2), np.int64), 2, np.zeros((3, 4)), np.zeros((3, 4)),
                      np.zeros((6, 4)), np.zeros((6, 4)), 17, 1, 0.0,
                      np.zeros((1, 1, 2), np.float32))


# --------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------

def run_evaluate(corrs, peaks, crop_size, offsets):
    m = corrs.shape[0]
    outs = [np.full((m, 2), -777, np.int32), np.full((m, 2), 777, np.float32),
            np.full(m, 777, np.float32), np.full(m, 777, np.float32)]
    refs = [np.zeros_like(o) for o in outs]
    run_on_device(_cuda.evaluate, corrs, peaks, crop_size, np.asarray(offsets), *outs)
    _numba.evaluate(corrs, peaks, crop_size, np.asarray(offsets, np.float64), *refs)
    return outs, refs


def assert_evaluate_matches(corrs, peaks, crop_size, offsets):
    outs, refs = run_evaluate(corrs, peaks, crop_size, offsets)
    centers, refineds, heights, elevations = outs
    np.testing.assert_array_equal(centers, refs[0])
    np.testing.assert_allclose(refineds, refs[1], rtol=2 ** -22, atol=2 ** -22)
    np.testing.assert_allclose(heights, refs[2], rtol=2 ** -22)
    np.testing.assert_allclose(elevations, refs[3], rtol=2 ** -19)
    return outs


@pytest.mark.parametrize("rtype", RTYPES, ids=_ids(RTYPES))
def test_evaluate_every_instantiation(rtype, rng):
    # 23 x 29 = 667 pixels: each of the 256 threads scans several
    peaks = np.array([[10, 40], [-3, 7], [100, 0]], np.int64)
    corrs = rng.random((6, 23, 29)).astype(rtype)
    offsets = rng.standard_normal(6) * 1e3
    outs = assert_evaluate_matches(corrs, peaks, 11, offsets)
    assert np.isfinite(outs[3]).all()
    assert cuda_emulator.launches[-1].expression == f"evaluate<{_cuda.C_TYPES[rtype]}>"


def edge_case_maps(h, w, rng):
    """Maps for the argmax/refinement corner cases, each (h, w) with h * w > 256."""
    assert h * w > 256 + 44
    maps = []

    def new(fill=None):
        m = rng.random((h, w)) if fill is None else np.full((h, w), fill)
        maps.append(m)
        return m.reshape(-1)

    new()                                   # random
    new(0.0)                                # flat zero: argmax 0, r = 0
    new(-3.25)                              # flat non-zero
    m = new(); m[[10, 10 + 256]] = 2.0      # tie inside one thread's stride: 10 wins
    m = new(); m[[300, 44, 200]] = 2.0      # tie across threads: 44 wins
    m = new(); m[[10 + 256, 44]] = 2.0      # tie, the first in a later thread: 44 wins
    m = new(); m[[0, 200]] = 2.0            # tie with the initial value corr[0]
    m = new(); m[0] = 2.0                   # maximum in a corner: r = 0
    m = new(); m[-1] = 2.0                  # last pixel
    m = new(); m[7] = 2.0                   # top edge
    m = new(); m[5 * w] = 2.0               # left edge
    m = new(); m[2 * w - 1] = 2.0           # right edge
    m = new(); m[(h - 1) * w + 3] = 2.0     # bottom edge
    m = new(); m[1 * w + 5] = 2.0           # one from the edge: r = 1
    m = new(); m[(h - 2) * w + w - 2] = 2.0
    m = new(); m[6 * w + 6] = 2.0; m[6 * w + 7] = 2.0   # plateau of two: first wins, r = 2
    m = new() - 5.0                         # all negative
    maps[-1] = m.reshape(h, w)
    m = new(); m[3 * w + 4] = -np.inf       # -inf somewhere: infinite slope there
    m = new(); m[0] = np.nan                # NaN at corr[0]: stays the maximum (no > NaN)
    m = new(); m[8 * w + 8] = 2.0; m[8 * w + 9] = np.nan   # NaN in the window
    m = new(); m[9 * w + 9] = 2.0; m[2 * w + 2] = np.nan   # NaN away from the maximum
    # refined position exactly (6, 6.5) (dyadic values); (6, 5) and (6, 8) lie at d = 1.5
    # exactly and give the smallest slope, (2 - 1.75) / 1.5
    m = new(-5.0); m[6 * w + 6: 6 * w + 8] = 2.0; m[[6 * w + 5, 6 * w + 8]] = 1.75
    return np.stack(maps)


@pytest.mark.parametrize("rtype", RTYPES, ids=_ids(RTYPES))
def test_evaluate_edge_cases(rtype, rng):
    corrs = edge_case_maps(17, 19, rng).astype(rtype)
    peaks = np.array([[5, 6], [-4, 30]], np.int64)
    offsets = rng.standard_normal(corrs.shape[0])
    outs = assert_evaluate_matches(corrs, peaks, 8, offsets)
    centers = outs[0] - (peaks[np.arange(corrs.shape[0]) % 2] - 8)
    w = 19
    assert tuple(centers[3]) == divmod(10, w)
    assert tuple(centers[4]) == divmod(44, w)
    assert tuple(centers[5]) == divmod(44, w)
    assert tuple(centers[6]) == (0, 0)
    assert tuple(centers[15]) == (6, 6)
    np.testing.assert_array_equal(outs[1][1], outs[0][1])     # flat: integer position
    np.testing.assert_array_equal(outs[1][-1] - (peaks[(len(corrs) - 1) % 2] - 8), [6, 6.5])
    np.testing.assert_array_equal(outs[3][-1], np.float32(0.25 / 1.5))


@pytest.mark.parametrize("h, w", [(1, 1), (1, 2), (2, 2), (3, 3), (1, 7), (6, 1), (4, 5)])
def test_evaluate_tiny_maps(h, w, rng):
    # no pixel at distance >= 1.5 (elevation inf) and r <= 0 everywhere or almost
    corrs = rng.random((4, h, w)).astype(np.float32)
    corrs[1] = 1.0
    outs = assert_evaluate_matches(corrs, np.array([[0, 0]], np.int64), 0, np.zeros(4))
    if h * w <= 4:
        assert np.isinf(outs[3]).all()


def test_evaluate_offsets_and_peak_shift(rng):
    # large offsets and peak shifts: the height and positions in frame coordinates
    corrs = rng.random((5, 9, 8)).astype(np.float32)
    peaks = np.array([[1000, 2000], [-500, 7], [3, 3], [0, 0], [70000, -70000]], np.int64)
    assert_evaluate_matches(corrs, peaks, 4, rng.standard_normal(5) * 1e5)


# --------------------------------------------------------------------------------------
# the emulator catches launcher mistakes
# --------------------------------------------------------------------------------------

def crop_args(rtype=np.float32, **changes):
    args = dict(frames=np.zeros((2, 7, 9), np.uint16), fy=np.int32(7), fx=np.int32(9),
                peaks=np.array([[3, 4], [0, 0]], np.int64), n_peaks=np.int32(2),
                crop_size=np.int32(2), h=np.int32(4), w=np.int32(4), do_log=np.int32(1),
                fill=np.zeros(2, rtype), out=np.zeros((2, 2, 4, 4), rtype),
                bad=np.zeros(4, np.bool_))
    args.update(changes)
    return tuple(args.values())


def launch_crop(args, shared_mem=None, expression="crop_log<unsigned short, float>"):
    if shared_mem is None:
        shared_mem = _cuda.BLOCK * (4 + 4)
    cuda_emulator.launch("crop.cu", expression, (4,), (_cuda.BLOCK,), args,
                         shared_mem=shared_mem)


def test_emulator_accepts_launcher_arguments():
    args = crop_args()
    launch_crop(args)
    assert not args[-1].any()


@pytest.mark.parametrize("change, match", [
    ({"fy": np.int64(7)}, r"argument 1 \(int fy\) must be a int32 scalar; got int64"),
    ({"do_log": True}, r"argument 8 \(int do_log\) must be a NumPy scalar"),
    ({"fy": 7}, r"must be a NumPy scalar of type int32"),
    ({"out": np.zeros((2, 2, 4, 4), np.float64)}, r"argument 10 \(float\* out\) must be a "
                                                   r"float32 array; got float64"),
    ({"bad": np.zeros(4, np.uint8)}, r"bool\* bad\) must be a bool array; got uint8"),
    ({"peaks": np.zeros((2, 2), np.int32)}, r"long long\* peaks\) must be a int64 array"),
    ({"out": np.zeros((2, 2, 4, 8), np.float32)[..., ::2]}, r"must be C-contiguous"),
])
def test_emulator_rejects_wrong_arguments(change, match):
    with pytest.raises(TypeError, match=match):
        launch_crop(crop_args(**change))


def test_emulator_rejects_wrong_argument_count():
    with pytest.raises(TypeError, match=r"takes 12 arguments .*; got 11"):
        launch_crop(crop_args()[:-1])


def test_emulator_catches_too_little_shared_memory():
    nbytes = _cuda.BLOCK * 8 - 4     # one int short of BLOCK floats and BLOCK ints
    with pytest.raises(cuda_emulator.EmulatorError,
                       match=fr"out-of-bounds access to dynamic shared memory, byte {nbytes} "
                             fr"of a {nbytes}-byte buffer"):
        launch_crop(crop_args(), shared_mem=nbytes)


def test_emulator_catches_out_of_bounds_global_access():
    # out holds 4 x 3 crops, the kernel writes 4 x 4
    with pytest.raises(cuda_emulator.EmulatorError,
                       match=r"out-of-bounds access to argument float\* out: byte \d+ of a "
                             r"192-byte array"):
        launch_crop(crop_args(out=np.zeros((2, 2, 4, 3), np.float32)))


KERNEL = r"""
__global__ void probe(float* out, int mode) {
    __shared__ float value[1];
    if (threadIdx.x == 0) value[0] = 1.5f + blockIdx.x;
    if (mode == 1 && threadIdx.x == 3) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = value[0];
    if (mode == 2 && threadIdx.x == 0) out[-1] = 0.0f;
    if (mode == 3 && threadIdx.x == 0) { while (true) { __syncthreads(); } }
}
"""


def test_emulator_block_semantics_and_errors():
    out = np.zeros(2 * 8, np.float32)
    cuda_emulator.launch_source(KERNEL, "probe", (2,), (8,), (out, np.int32(0)))
    np.testing.assert_array_equal(out, np.repeat([1.5, 2.5], 8))
    with pytest.raises(cuda_emulator.EmulatorError, match=r"divergent __syncthreads in block "
                                                          r"0: thread 0 waits at line 8, "
                                                          r"thread 3 at line 6"):
        cuda_emulator.launch_source(KERNEL, "probe", (2,), (8,), (out, np.int32(1)), timeout=20)
    with pytest.raises(cuda_emulator.EmulatorError, match=r"wrote 4 byte\(s\) just before "
                                                          r"the start of argument float\* out"):
        cuda_emulator.launch_source(KERNEL, "probe", (2,), (8,), (out, np.int32(2)))
    with pytest.raises(cuda_emulator.EmulatorError, match=r"did not finish within 1\.0 s"):
        cuda_emulator.launch_source(KERNEL, "probe", (1,), (8,), (out, np.int32(3)),
                                    timeout=1.0)
    # an empty grid runs one block, as CuPy's launcher (max(1, grid)) does
    out[:] = 0
    cuda_emulator.launch_source(KERNEL, "probe", (0,), (8,), (out, np.int32(0)))
    np.testing.assert_array_equal(out, np.repeat([1.5, 0.0], 8))
    with pytest.raises(ValueError, match=r"at most 2\*\*31 - 1 blocks"):
        cuda_emulator.launch_source(KERNEL, "probe", (2**31,), (8,), (out, np.int32(0)))


def test_kernel_signatures_parse():
    for name, expressions in _cuda.kernel_expressions().items():
        source = _cuda.kernel_source(name)
        for expression in expressions:
            params = cuda_emulator.kernel_signature(source, expression)
            assert all(p.dtype.kind in "biuf" for p in params)
    params = cuda_emulator.kernel_signature(_cuda.kernel_source("crop.cu"),
                                            "crop_log<unsigned short, double>")
    assert [repr(p) for p in params[:1] + params[-3:]] == [
        "const unsigned short* frames", "const double* fill", "double* out", "bool* bad"]


def test_crop_log_huge_minimum_float64():
    """Float64 crops from -3e38 to 3e38 (min - 1 == min in float64): (x - min) + 1 keeps
    the minimum at log(1) = 0 on both kernel sets."""
    frames = np.linspace(-3e38, 3e38, 2 * 6 * 6).reshape(2, 6, 6)
    out, bad = np.zeros_like(frames), np.zeros(2, np.bool_)
    ref, ref_bad = np.zeros_like(frames), np.zeros(2, np.bool_)
    run_on_device(_cuda.log_scale_frames, frames, out, bad)
    _numba.log_scale_frames(frames, ref, ref_bad)
    assert np.isfinite(ref).all() and ref.min() == 0
    np.testing.assert_allclose(out, ref, rtol=4 * EPS64, atol=2 * EPS64)
