"""kernels/fast.cu, fast mode fused into one launch, run on the CPU by the CUDA emulator.

The reference is the CPU pipeline (:func:`gpucorr.pipeline.run_fast` with the
numba kernels and pocketfft), which defines fast mode; the launcher
:func:`gpucorr.backends._cuda.fast_correlate` runs unchanged under the stand-in for
``cupy`` (tests/fake_cupy.py, whose kernels run in tests/cuda_emulator.py).

Tolerances: the kernel's radix-2 FFTs round differently from pocketfft's, so
maps agree to a few float32 ulps of their largest value, not bit for bit.
Integer centres must be equal (the test frames have no near-ties), and the
rest is held to DESIGN.md's "matching results": refined positions within
1e-3 px (here 1e-4), heights and elevations within 1e-4 relative.
"""
import numpy as np
import pytest

import cuda_emulator
from fake_cupy import run_on_device
from gpucorr import patterns
from gpucorr import backends as _backend
from gpucorr.backends import _cuda
from gpucorr.backends import _numba
from gpucorr import pipeline as _pipeline

FRAME_DTYPES = list(_cuda.FAST_FRAME_DTYPES)


@pytest.fixture(scope="module", autouse=True)
def emulator():
    reason = cuda_emulator.unavailable_reason()
    if reason is not None:
        pytest.skip(f"CUDA emulator unavailable: {reason}")
    yield cuda_emulator


def blob_frames(n_frames, fy, fx, peaks, radius, dtype, rng):
    """Frames with a Gaussian blob near each peak (off by up to 1.5 px) on a noisy floor."""
    yy, xx = np.mgrid[:fy, :fx]
    frames = np.empty((n_frames, fy, fx))
    for i in range(n_frames):
        frame = 0.05 * rng.random((fy, fx))
        for py, px in peaks:
            cy, cx = np.array([py, px]) + rng.uniform(-1.5, 1.5, 2)
            frame += rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                                    / (2 * radius ** 2))
        frames[i] = frame
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (frames * 1000).astype(dtype)
    top = min(np.iinfo(dtype).max, 60000)
    return np.round(frames / frames.max() * top).astype(dtype)


def case(n, dtype, rng, n_frames=3):
    """(frames, peaks, crop_size, filt) with peaks inside, on and beyond the edges."""
    crop_size = n // 2
    fy, fx = 3 * n + 1, 2 * n + 3
    inside = [[n, n], [2 * n, n // 2 + 1], [n + 2, 2 * n - 1]]
    frames = blob_frames(n_frames, fy, fx, inside, max(0.6, n / 10), dtype, rng)
    peaks = np.array(inside + [[0, 0], [fy - 1, fx - 1], [-n, fx + n], [fy // 2, -2]],
                     dtype=np.int64)
    if n > 4:
        pattern = patterns.RadialGradient(radius=max(1.0, n / 6))
    else:   # in 4x4 the symmetric disk template gives maps with exactly tied maxima
        pattern = patterns.UserTemplate(np.array([[1.0, 2.0], [0.5, 3.0]]), search=2)
    template = pattern.get_template(sig_shape=(n, n))
    filt = _pipeline.correlation_filter(np, template, (n, n), np.float32)
    return frames, peaks, crop_size, filt


def results(n_crops):
    return (np.full((n_crops, 2), -7, np.int32), np.full((n_crops, 2), np.nan, np.float32),
            np.full(n_crops, np.nan, np.float32), np.full(n_crops, np.nan, np.float32))


def run_fused(frames, peaks, crop_size, filt, with_maps=False, log=True):
    n_crops = frames.shape[0] * peaks.shape[0]
    n = 2 * crop_size
    out = results(n_crops)
    bad = np.ones(n_crops, np.bool_)
    maps = np.full((n_crops, n, n), np.nan, np.float32) if with_maps else None
    run_on_device(lambda *a: _cuda.fast_correlate(*a, log=log), frames, peaks, crop_size, filt,
                  maps, *out, bad)
    return out, bad, maps


def run_reference(frames, peaks, crop_size, filt, log=True):
    """The CPU pipeline: (results, maps of the same crops, which crops are well posed).

    A crop is well posed where its map's maximum leads the runner-up by more
    than 1e-5 of the largest map value (some 50 times the maps' difference
    between the two FFTs): elsewhere (flat crops wholly outside
    the frame, symmetric corners of tiny crops) which of two nearly equal
    values wins is float rounding, and the integer centres may differ.
    """
    backend = _backend.get_backend(np)
    n_crops = frames.shape[0] * peaks.shape[0]
    out = results(n_crops)
    _pipeline.run_fast(backend, frames, peaks, crop_size, filt, 1, out, ws=None,
                       scaling=_pipeline.Scaling(log=log))
    crops = _pipeline.crop_frames(backend, frames, peaks, crop_size, np.float32, log=log)
    maps, _, _ = _pipeline.correlate(backend, crops, filt)
    top2 = np.sort(maps.reshape(n_crops, -1), axis=1)[:, -2:]
    well_posed = top2[:, 1] - top2[:, 0] > 1e-5 * np.abs(maps).max()
    return out, maps, well_posed


def assert_results_match(got, want, good):
    np.testing.assert_array_equal(got[0][good], want[0][good])
    np.testing.assert_allclose(got[1][good], want[1][good], rtol=0, atol=1e-4)
    scale = np.abs(want[2][good]).max()
    np.testing.assert_allclose(got[2][good], want[2][good], rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(got[3][good], want[3][good], rtol=1e-4, atol=1e-6 * scale)


def assert_inner_well_posed(well_posed, n_frames):
    """Most crops of the first three peaks of each frame (blobs inside) are compared."""
    inner = well_posed.reshape(n_frames, -1)[:, :3]
    assert inner.mean() >= 0.7, inner


# every crop edge with float32 frames; uint16 for a power of two, a mixed radix (3 * 8)
# and an odd part alone (7 * 2)
@pytest.mark.parametrize("n, dtype", [(n, np.float32) for n in _cuda.FAST_SIZES]
                         + [(n, np.uint16) for n in (14, 24, 32)],
                         ids=lambda v: str(v) if isinstance(v, int) else np.dtype(v).name)
def test_fast_matches_cpu_pipeline(n, dtype, rng):
    frames, peaks, crop_size, filt = case(n, dtype, rng)
    got, bad, maps = run_fused(frames, peaks, crop_size, filt, True)
    want, want_maps, well_posed = run_reference(frames, peaks, crop_size, filt)
    assert not bad.any()
    assert_inner_well_posed(well_posed, len(frames))
    assert_results_match(got, want, well_posed)
    # the maps handed to the upsampling: zero-mean, as the pipeline's
    scale = np.abs(want_maps).max()
    np.testing.assert_allclose(maps, want_maps, rtol=0, atol=4e-6 * scale)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), 0, atol=1e-6 * scale)
    expression = f"fast_correlate<{_cuda.C_TYPES[np.dtype(dtype)]}, {n}>"
    assert cuda_emulator.launches[-1].expression == expression


@pytest.mark.parametrize("n, dtype", [(8, np.float32), (16, np.float32), (30, np.float32),
                                      (32, np.uint16), (64, np.uint16)],
                         ids=lambda v: str(v) if isinstance(v, int) else np.dtype(v).name)
def test_fast_without_log_matches_cpu_pipeline(n, dtype, rng):
    # refine(..., scaling="none") in the fused kernel: the crops as they are
    frames, peaks, crop_size, filt = case(n, dtype, rng)
    got, bad, maps = run_fused(frames, peaks, crop_size, filt, True, log=False)
    want, want_maps, well_posed = run_reference(frames, peaks, crop_size, filt, log=False)
    assert not bad.any()
    assert_inner_well_posed(well_posed, len(frames))
    assert_results_match(got, want, well_posed)
    scale = np.abs(want_maps).max()
    np.testing.assert_allclose(maps, want_maps, rtol=0, atol=4e-6 * scale)
    # and not what the log-scaled crops give
    logged, _, _ = run_reference(frames, peaks, crop_size, filt)
    assert not np.allclose(got[2], logged[2])


@pytest.mark.parametrize("dtype", FRAME_DTYPES, ids=[d.name for d in FRAME_DTYPES])
def test_fast_every_frame_dtype(dtype, rng):
    frames, peaks, crop_size, filt = case(8, dtype, rng, n_frames=2)
    got, bad, _ = run_fused(frames, peaks, crop_size, filt)
    want, _, well_posed = run_reference(frames, peaks, crop_size, filt)
    assert not bad.any()
    assert_inner_well_posed(well_posed, len(frames))
    assert_results_match(got, want, well_posed)


@pytest.mark.parametrize("threads", [8, 16, 48, 128])
def test_fast_crops_per_block(threads, rng, monkeypatch):
    # 16-px crops take 8 threads each: one to sixteen crops a block; 4 frames x 7 peaks =
    # 28 crops leave the last block part empty for 6 and 16 crops a block
    monkeypatch.setattr(_cuda, "FAST_THREADS", threads)
    frames, peaks, crop_size, filt = case(16, np.uint16, rng, n_frames=4)
    per_block, block, shared = _cuda.fast_layout(16)
    assert per_block == max(1, threads // 8) and block == per_block * 8
    got, bad, _ = run_fused(frames, peaks, crop_size, filt)
    record = cuda_emulator.launches[-1]
    assert record.block == block and record.grid == -(-28 // per_block)
    assert record.shared_mem == shared
    want, _, well_posed = run_reference(frames, peaks, crop_size, filt)
    assert_results_match(got, want, well_posed)


def test_fast_layout_fits_the_default_shared_memory():
    for n in _cuda.FAST_SIZES:
        per_block, block, shared = _cuda.fast_layout(n)
        assert per_block >= 1 and block == per_block * (n // 2)
        assert shared <= _cuda.FAST_SHARED_BYTES


def test_fast_nonfinite_crops_are_flagged(rng):
    frames, peaks, crop_size, filt = case(16, np.float32, rng, n_frames=3)
    frames[0, 16, 16] = np.nan              # crop (0, 0) only
    frames[2, -1, -1] = np.inf              # crop (2, 4) only
    got, bad, _ = run_fused(frames, peaks, crop_size, filt)
    ref_bad = np.zeros_like(bad)
    crops = np.empty((3, len(peaks), 16, 16), np.float32)
    _numba.crop_log(frames, peaks, crop_size, False, np.zeros(3, np.float32), crops, ref_bad)
    np.testing.assert_array_equal(np.flatnonzero(bad), [0, 2 * len(peaks) + 4])
    np.testing.assert_array_equal(bad, ref_bad)
    # the other crops are unaffected
    clean = frames.copy()
    clean[0, 16, 16] = clean[2, -1, -1] = 0
    want, _, well_posed = run_reference(clean, peaks, crop_size, filt)
    assert_results_match(got, want, ~bad & well_posed)


def test_fast_launcher_converts_inputs(rng):
    # a strided device view and int32 peaks: made contiguous and int64 by the launcher
    import fake_cupy
    frames, peaks, crop_size, filt = case(8, np.uint16, rng, n_frames=4)
    out, bad = results(2 * len(peaks)), np.ones(2 * len(peaks), np.bool_)
    with fake_cupy.installed() as cupy:
        view = cupy.asarray(frames)[::2, :, :]
        assert not view.flags.c_contiguous
        run_on_device(lambda *args: _cuda.fast_correlate(view, *args),
                      np.asfortranarray(peaks.astype(np.int32)), crop_size, filt, None, *out, bad)
    want, _, well_posed = run_reference(np.ascontiguousarray(frames[::2]), peaks, crop_size,
                                        filt)
    assert not bad.any()
    assert_results_match(out, want, well_posed)


def test_fast_launcher_rejects_bad_arguments(rng):
    frames, peaks, crop_size, filt = case(8, np.uint16, rng, n_frames=1)
    n_crops = len(peaks)
    out = results(n_crops)
    bad = np.zeros(n_crops, np.bool_)
    with pytest.raises(ValueError, match=r"crop edges 4, 6, 8, .*, 32, 64; got "
                                         r"2 \* crop_size = 34"):
        run_on_device(_cuda.fast_correlate, frames, peaks, 17, filt, None, *out, bad)
    with pytest.raises(TypeError, match="fast.cu reads frames of dtype uint8, .*; got "
                                        "float64"):
        run_on_device(_cuda.fast_correlate, frames.astype(np.float64), peaks, crop_size, filt,
                      None, *out, bad)
    with pytest.raises(ValueError, match="maps must hold 7 maps of 8x8"):
        run_on_device(_cuda.fast_correlate, frames, peaks, crop_size, filt,
                      np.zeros((7, 4, 4), np.float32), *out, bad)
    with pytest.raises(TypeError, match="out_heights must be a C-contiguous"):
        run_on_device(_cuda.fast_correlate, frames, peaks, crop_size, filt, None, out[0], out[1],
                      out[2].astype(np.float64), out[3], bad)
    cuda_emulator.launches.clear()
    run_on_device(_cuda.fast_correlate, frames[:0], peaks, crop_size, filt, None, *results(0),
                  np.zeros(0, np.bool_))
    assert cuda_emulator.launches == []


def test_fast_applies(monkeypatch):
    assert _cuda.fast_correlate_applies(16, np.float32)
    assert not _cuda.fast_correlate_applies(16, np.float64)     # float64: cuFFT pipeline
    assert _cuda.fast_correlate_applies(12, np.float32)         # 24 = 3 * 8
    assert _cuda.fast_correlate_applies(7, np.float32)          # 14 = 7 * 2
    assert _cuda.fast_correlate_applies(32, np.float32)         # 64: the largest edge
    assert not _cuda.fast_correlate_applies(33, np.float32)     # 66: not instantiated
    monkeypatch.setattr(_cuda, "FAST_MAX_SIZE", 32)
    assert not _cuda.fast_correlate_applies(32, np.float32)     # 64: above FAST_MAX_SIZE
    assert _backend.get_backend(np).fast_correlate is None
    assert not _backend.get_backend(np).fast_correlate_applies(16, np.float32)


def test_twiddles():
    for n in _cuda.FAST_SIZES:
        tw = _cuda._twiddles(n).reshape(-1, 2)
        want = np.exp(-2j * np.pi * np.arange(n) / n)
        np.testing.assert_array_equal(tw[:, 0], want.real.astype(np.float32))
        np.testing.assert_array_equal(tw[:, 1], want.imag.astype(np.float32))


@pytest.mark.parametrize("seed", range(8))
def test_fast_random_configurations(seed):
    """Random crop edge, frame dtype and shape, pattern and peaks (inside, on and far
    beyond the edges): the fused kernel gives the CPU pipeline's results."""
    rng = np.random.default_rng(seed)
    # (4 x 4 maps of these symmetric templates tie: test_fast_matches_cpu_pipeline has 4)
    n = int(rng.choice([s for s in _cuda.FAST_SIZES if 4 < s <= 32]))
    dtype = np.dtype(rng.choice([np.uint8, np.uint16, np.int32, np.float32]))
    fy, fx = (int(v) for v in rng.integers(n, 3 * n + 7, size=2))
    inside = np.column_stack([rng.integers(0, fy, 4), rng.integers(0, fx, 4)])
    frames = blob_frames(int(rng.integers(1, 4)), fy, fx, inside, max(0.7, n / 9), dtype, rng)
    outside = rng.integers(-3 * n, 3 * n + max(fy, fx), size=(3, 2))
    peaks = np.concatenate([inside, outside]).astype(np.int64)
    kind = rng.integers(3)
    if kind == 0:
        pattern = patterns.RadialGradient(radius=max(1.0, n / 6), search=n // 2)
    elif kind == 1:
        pattern = patterns.Circular(radius=max(1.0, n / 5), search=n // 2)
    else:
        pattern = patterns.UserTemplate(rng.random((3, 4)) + 0.1, search=n // 2)
    filt = _pipeline.correlation_filter(np, pattern.get_template(sig_shape=(n, n)), (n, n),
                                        np.float32)
    got, bad, _ = run_fused(frames, peaks, n // 2, filt)
    want, _, well_posed = run_reference(frames, peaks, n // 2, filt)
    assert not bad.any()
    assert well_posed.any()
    assert_results_match(got, want, well_posed)
