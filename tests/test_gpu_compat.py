"""The libertem-blobfinder-compatible per-frame API on CuPy arrays.

Every compatible function that takes arrays runs on CuPy input with the CUDA
backend and gives CuPy results on the input's GPU; each GPU test compares
with the NumPy result for the same input, to the tolerances of DESIGN.md
(same integer centres, refined positions within 1e-3 px, heights and
elevations within 1e-4 relative). Mixing NumPy and CuPy arguments is a
``TypeError``.

GPU tests carry the ``gpu`` marker: they skip (with the reason) where CuPy
cannot allocate on a GPU, and ``pytest --gpu`` refuses to run there. The
tests at the end run everywhere: the NumPy path never needs CuPy.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gpucorr
from gpucorr import patterns

from helpers import assert_results_match, jittered_peaks, random_lattice_frames

SHAPE = (96, 80)
PATTERN = patterns.RadialGradient(radius=4)
CS = PATTERN.get_crop_size()
#: bytes of 5 float32 crops: process_frame_fast works in several blocks of peaks
FIVE_CROPS = 5 * (2 * CS) ** 2 * 4


@pytest.fixture
def cupy():
    import cupy
    return cupy


@pytest.fixture
def data(rng):
    """One uint16 frame, its peaks (rounded, jittered, and at and beyond the edges)."""
    frames, true = random_lattice_frames(rng, 1, shape=SHAPE, radius=4, dtype=np.uint16)
    return frames[0], jittered_peaks(rng, true, SHAPE)


def outs(xp, n, centers_dtype=np.int32):
    return [xp.zeros((n, 2), centers_dtype), xp.zeros((n, 2), np.float32),
            xp.zeros(n, np.float32), xp.zeros(n, np.float32)]


def host(arrays):
    import cupy
    return [cupy.asnumpy(a) for a in arrays]


def assert_on_device(cupy, device, *arrays):
    """Each array is a CuPy array on ``device``."""
    for a in arrays:
        assert isinstance(a, cupy.ndarray), type(a)
        assert a.device.id == device.id


def log_crops(frame, peaks, dtype=np.float32):
    """Log-scaled crops around ``peaks`` (NumPy)."""
    crops = np.zeros((len(peaks), 2 * CS, 2 * CS), dtype)
    gpucorr.crop_disks_from_frame(peaks, frame, CS, crops)
    gpucorr.log_scale_cropbufs_inplace(crops)
    return crops


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["single", "double"])
@pytest.mark.parametrize("shape", [(16, 16), (15, 17)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_do_correlations(cupy, rng, shape, precision):
    template = patterns.Circular(radius=3).get_template(shape)
    crops = np.log1p(rng.poisson(30.0, size=(6,) + shape)).astype(np.float32)
    if precision == "single":
        template, rtol = template.astype(np.complex64), 2e-5
    else:
        rtol = 1e-12
    expected = gpucorr.do_correlations(template, crops, with_specs=True)
    crops_gpu = cupy.asarray(crops)
    got = gpucorr.do_correlations(cupy.asarray(template), crops_gpu, with_specs=True)
    assert len(got) == 2
    for g, e in zip(got, expected):
        assert_on_device(cupy, crops_gpu.device, g)
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(cupy.asnumpy(g), e, rtol=0, atol=rtol * np.abs(e).max())
    corrs = gpucorr.do_correlations(cupy.asarray(template), crops_gpu)
    assert_on_device(cupy, crops_gpu.device, corrs)
    np.testing.assert_allclose(cupy.asnumpy(corrs), expected[0], rtol=0,
                               atol=rtol * np.abs(expected[0]).max())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("centers_dtype", [np.int32, np.int64])
def test_evaluate_correlations(cupy, data, dtype, centers_dtype):
    frame, peaks = data
    n = len(peaks)
    template = PATTERN.get_template((2 * CS, 2 * CS))
    corrs = gpucorr.do_correlations(template, log_crops(frame, peaks)).astype(dtype)
    expected = outs(np, n, centers_dtype)
    gpucorr.evaluate_correlations(corrs, peaks, CS, *expected)
    got = outs(cupy, n, centers_dtype)
    corrs_gpu = cupy.asarray(corrs)
    assert gpucorr.evaluate_correlations(corrs_gpu, cupy.asarray(peaks), CS, *got) is None
    assert_on_device(cupy, corrs_gpu.device, *got)
    assert got[0].dtype == centers_dtype
    assert_results_match(host(got), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("factor", [2, 20])
def test_evaluate_upsampling_fast_mode(cupy, data, factor):
    frame, peaks = data
    corrs, specs = gpucorr.do_correlations(PATTERN.get_template((2 * CS, 2 * CS)),
                                           log_crops(frame, peaks), with_specs=True)
    centers, refineds, heights, elevations = outs(np, len(peaks))
    gpucorr.evaluate_correlations(corrs, peaks, CS, centers, refineds, heights, elevations)
    expected = refineds.copy()
    gpucorr.evaluate_upsampling(specs, corrs, peaks, CS, frame.shape, factor, centers, expected)
    centers_gpu = cupy.asarray(centers)
    got = cupy.array(refineds)
    gpucorr.evaluate_upsampling(cupy.asarray(specs), cupy.asarray(corrs), cupy.asarray(peaks),
                                CS, frame.shape, factor, centers_gpu, got)
    assert_on_device(cupy, centers_gpu.device, got)
    np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(cupy.asnumpy(centers_gpu), centers)  # read, not written


@pytest.mark.gpu
def test_evaluate_upsampling_full_mode(cupy, data):
    frame, peaks = data
    n = len(peaks)
    logged = gpucorr.log_scale(frame.astype(np.float64), out=None)
    maps, specs = gpucorr.do_correlations(PATTERN.get_template(frame.shape), logged[None],
                                          with_specs=True)
    crops = np.zeros((n, 2 * CS, 2 * CS))
    gpucorr.crop_disks_from_frame(peaks, maps[0], CS, crops)
    centers, refineds, heights, elevations = outs(np, n)
    gpucorr.evaluate_correlations(crops, peaks, CS, centers, refineds, heights, elevations)
    expected = refineds.copy()
    gpucorr.evaluate_upsampling(specs[0], crops, peaks, CS, frame.shape, 20, centers, expected)
    got = cupy.array(refineds)
    gpucorr.evaluate_upsampling(cupy.asarray(specs[0]), cupy.asarray(crops),
                                cupy.asarray(peaks), CS, frame.shape, 20, cupy.asarray(centers),
                                got)
    assert_on_device(cupy, got.device, got)
    np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=0, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(16, 16), (15, 17)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_refine_center_upsampling(cupy, rng, shape):
    factor = 10
    crops = np.log1p(rng.poisson(30.0, size=(3,) + shape)).astype(np.float32)
    corrs, specs = gpucorr.do_correlations(patterns.Circular(radius=3).get_template(shape),
                                           crops, with_specs=True)
    freqs = (np.fft.fftfreq(shape[0], factor), np.fft.rfftfreq(shape[1], factor))
    freqs_gpu = (cupy.fft.fftfreq(shape[0], factor), cupy.fft.rfftfreq(shape[1], factor))
    for corr, spec in zip(corrs, specs):
        pos = np.array(np.unravel_index(np.argmax(corr), shape))
        centre = np.ceil(np.asarray(shape) / 2)
        expected = gpucorr.refine_center_upsampling(centre, pos, spec, freqs, factor)
        spec_gpu = cupy.asarray(spec)
        got = gpucorr.refine_center_upsampling(cupy.asarray(centre), cupy.asarray(pos),
                                               spec_gpu, freqs_gpu, factor)
        assert_on_device(cupy, spec_gpu.device, got)
        assert got.dtype == np.float32 and got.shape == (2,)
        np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=0, atol=1e-3)


@pytest.mark.gpu
def test_log_scale(cupy, rng):
    data = (rng.random((20, 30)) * 100).astype(np.float32)
    expected = gpucorr.log_scale(data, out=np.empty_like(data))
    data_gpu = cupy.asarray(data)
    out = cupy.empty(data.shape, np.float32)
    got = gpucorr.log_scale(data_gpu, out=out)
    assert_on_device(cupy, data_gpu.device, got)
    np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=1e-6, atol=1e-6)
    fresh = gpucorr.log_scale(data_gpu, out=None)
    assert_on_device(cupy, data_gpu.device, fresh)
    np.testing.assert_allclose(cupy.asnumpy(fresh), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cupy.asnumpy(data_gpu), data)


@pytest.mark.gpu
def test_log_scale_cropbufs_inplace(cupy, rng):
    bufs = (rng.random((4, 8, 8)) * 50).astype(np.float32)
    expected = bufs.copy()
    gpucorr.log_scale_cropbufs_inplace(expected)
    got = cupy.array(bufs)
    assert gpucorr.log_scale_cropbufs_inplace(got) is None
    np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=1e-6, atol=1e-6)
    # a non-finite crop: no host sync to raise (the CPU raises); it is not finite afterwards
    bad = cupy.array(bufs)
    bad[1, 2, 3] = cupy.nan
    gpucorr.log_scale_cropbufs_inplace(bad)
    bad = cupy.asnumpy(bad)
    assert not np.isfinite(bad[1]).all()
    np.testing.assert_allclose(bad[[0, 2, 3]], expected[[0, 2, 3]], rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("crop", ["crop_disks_from_frame", "crop_disks_from_frame_slicing"])
def test_crop_disks(cupy, data, dtype, crop):
    frame, peaks = data
    frame = frame.astype(dtype)
    n = len(peaks)
    expected = np.zeros((n, 2 * CS, 2 * CS), np.float32)
    gpucorr.crop_disks_from_frame(peaks, frame, CS, expected)
    # more buffers than peaks: the rest stays untouched
    got = cupy.full((n + 2, 2 * CS, 2 * CS), cupy.nan, dtype=np.float32)
    assert getattr(gpucorr, crop)(cupy.asarray(peaks), cupy.asarray(frame), CS, got) is None
    np.testing.assert_array_equal(cupy.asnumpy(got[:n]), expected)
    assert bool(cupy.isnan(got[n:]).all())


@pytest.mark.gpu
@pytest.mark.parametrize("upsample", [False, 20])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("crop", ["crop_disks_from_frame", "crop_disks_from_frame_slicing"])
def test_process_frame_fast(cupy, data, crop, dtype, upsample):
    frame, peaks = data
    frame = frame.astype(dtype)
    n = len(peaks)
    template = PATTERN.get_template((2 * CS, 2 * CS))
    expected = outs(np, n)
    gpucorr.process_frame_fast(
        template, CS, frame, peaks, *expected,
        crop_bufs=gpucorr.allocate_crop_bufs(CS, n, np.float32, limit=FIVE_CROPS),
        upsample=upsample)
    got = outs(cupy, n)
    crop_bufs = gpucorr.allocate_crop_bufs(CS, n, np.float32, limit=FIVE_CROPS, xp=cupy)
    assert isinstance(crop_bufs, cupy.ndarray) and len(crop_bufs) == 5
    ret = gpucorr.process_frame_fast(
        cupy.asarray(template), CS, cupy.asarray(frame), cupy.asarray(peaks), *got,
        crop_bufs=crop_bufs, upsample=upsample, crop_function=getattr(gpucorr, crop))
    assert ret is None
    assert_on_device(cupy, crop_bufs.device, *got)
    assert_results_match(host(got), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("upsample", [False, 20])
def test_process_frame_full(cupy, data, upsample):
    frame, peaks = data
    n = len(peaks)
    template = PATTERN.get_template(frame.shape)
    expected = gpucorr.process_frame_full(template, CS, frame, peaks, upsample=upsample)
    frame_gpu = cupy.asarray(frame)
    args = (cupy.asarray(template), CS, frame_gpu, cupy.asarray(peaks))
    got = gpucorr.process_frame_full(*args, upsample=upsample)
    assert_on_device(cupy, frame_gpu.device, *got)
    assert [a.dtype for a in got] == [a.dtype for a in expected]
    assert_results_match(host(got), expected)
    # given buffers are filled in place and returned, also by slicing the map
    bufs = outs(cupy, n)
    ret = gpucorr.process_frame_full(
        *args, *bufs, frame_buf=cupy.zeros(frame.shape, np.float32), buf_count=4,
        upsample=upsample, crop_function=gpucorr.crop_disks_from_frame_slicing)
    assert all(r is b for r, b in zip(ret, bufs))
    assert_results_match(host(bufs), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_process_frames(cupy, rng, mode):
    frames, true = random_lattice_frames(rng, 3, shape=SHAPE, radius=4)
    process = getattr(gpucorr, f"process_frames_{mode}")
    # float (y, x) positions: truncated as libertem-blobfinder does, checked on the host
    expected = process(PATTERN, frames, true, upsample=True)
    frames_gpu = cupy.asarray(frames)
    got = process(PATTERN, frames_gpu, cupy.asarray(true), upsample=True)
    assert_on_device(cupy, frames_gpu.device, *got)
    assert [a.dtype for a in got] == [a.dtype for a in expected]
    assert_results_match(host(got), expected)


MIXED = [
    "do_correlations", "evaluate_correlations-peaks", "evaluate_correlations-out",
    "evaluate_upsampling", "refine_center_upsampling", "log_scale",
    "crop_disks_from_frame-peaks", "crop_disks_from_frame-out",
    "crop_disks_from_frame_slicing", "process_frame_fast-template",
    "process_frame_fast-crop_bufs", "process_frame_full-peaks", "process_frame_full-out",
    "process_frames_fast",
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", MIXED)
def test_mixed_numpy_and_cupy_is_a_type_error(cupy, data, case):
    frame, peaks = data
    n = len(peaks)
    c = cupy.asarray
    small = PATTERN.get_template((2 * CS, 2 * CS))
    full = PATTERN.get_template(frame.shape)
    crops = np.zeros((n, 2 * CS, 2 * CS))
    specs = np.zeros((n, 2 * CS, CS + 1), complex)
    bufs = gpucorr.allocate_crop_bufs(CS, n, np.float32)
    gpu_outs = outs(cupy, n)
    calls = {
        "do_correlations": lambda: gpucorr.do_correlations(small, c(crops)),
        "evaluate_correlations-peaks":
            lambda: gpucorr.evaluate_correlations(c(crops), peaks, CS, *gpu_outs),
        "evaluate_correlations-out":
            lambda: gpucorr.evaluate_correlations(c(crops), c(peaks), CS, *gpu_outs[:3],
                                                  np.zeros(n, np.float32)),
        "evaluate_upsampling":
            lambda: gpucorr.evaluate_upsampling(c(specs), c(crops), c(peaks), CS, frame.shape,
                                                20, gpu_outs[0], np.zeros((n, 2), np.float32)),
        "refine_center_upsampling":
            lambda: gpucorr.refine_center_upsampling(
                cupy.zeros(2), cupy.zeros(2), c(specs[0]),
                (np.fft.fftfreq(2 * CS, 20), np.fft.rfftfreq(2 * CS, 20)), 20),
        "log_scale": lambda: gpucorr.log_scale(c(frame), out=np.empty(frame.shape)),
        "crop_disks_from_frame-peaks":
            lambda: gpucorr.crop_disks_from_frame(peaks, c(frame), CS, c(bufs)),
        "crop_disks_from_frame-out":
            lambda: gpucorr.crop_disks_from_frame(c(peaks), c(frame), CS, bufs),
        "crop_disks_from_frame_slicing":
            lambda: gpucorr.crop_disks_from_frame_slicing(c(peaks), c(frame), CS, bufs),
        "process_frame_fast-template":
            lambda: gpucorr.process_frame_fast(small, CS, c(frame), c(peaks), *gpu_outs,
                                               crop_bufs=c(bufs)),
        "process_frame_fast-crop_bufs":
            lambda: gpucorr.process_frame_fast(c(small), CS, c(frame), c(peaks), *gpu_outs,
                                               crop_bufs=bufs),
        "process_frame_full-peaks":
            lambda: gpucorr.process_frame_full(c(full), CS, c(frame), peaks),
        "process_frame_full-out":
            lambda: gpucorr.process_frame_full(c(full), CS, c(frame), c(peaks), *gpu_outs[:2],
                                               np.zeros(n, np.float32)),
        "process_frames_fast":
            lambda: gpucorr.process_frames_fast(PATTERN, c(frame[None]), peaks),
    }
    assert sorted(calls) == sorted(MIXED)
    with pytest.raises(TypeError, match="arguments mix array libraries"):
        calls[case]()
    for a in gpu_outs:  # nothing was written
        assert not bool(a.any())


def test_numpy_path_runs_where_cupy_cannot_be_imported():
    """The whole per-frame API on NumPy arrays with ``import cupy`` failing."""
    code = textwrap.dedent("""
        import sys

        class NoCupy:  # as if CuPy were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("cupy", "cupyx"):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoCupy())
        import numpy as np
        import gpucorr
        from gpucorr.patterns import RadialGradient
        frames, _, true = gpucorr.cbed_frame(radius=4)
        frame, peaks = frames[0], np.rint(true).astype(np.int64)
        pattern = RadialGradient(radius=4)
        cs = pattern.get_crop_size()
        n = len(peaks)
        outs = [np.zeros((n, 2), np.int32), np.zeros((n, 2), np.float32),
                np.zeros(n, np.float32), np.zeros(n, np.float32)]
        template = pattern.get_template((2 * cs, 2 * cs))
        crops = np.zeros((n, 2 * cs, 2 * cs), np.float32)
        gpucorr.crop_disks_from_frame_slicing(peaks, frame, cs, crops)
        gpucorr.crop_disks_from_frame(peaks, frame, cs, crops)
        gpucorr.log_scale_cropbufs_inplace(crops)
        corrs, specs = gpucorr.do_correlations(template, crops, with_specs=True)
        gpucorr.evaluate_correlations(corrs, peaks, cs, *outs)
        gpucorr.evaluate_upsampling(specs, corrs, peaks, cs, frame.shape, 20, outs[0], outs[1])
        freqs = (np.fft.fftfreq(2 * cs, 20), np.fft.rfftfreq(2 * cs, 20))
        gpucorr.refine_center_upsampling(np.full(2, cs), outs[0][0] - peaks[0] + cs, specs[0],
                                         freqs, 20)
        gpucorr.log_scale(frame, out=None)
        gpucorr.process_frame_fast(template, cs, frame, peaks, *outs,
                                   crop_bufs=gpucorr.allocate_crop_bufs(cs, n, np.float32),
                                   upsample=True)
        gpucorr.process_frame_full(pattern.get_template(frame.shape), cs, frame, peaks,
                                   upsample=True)
        gpucorr.process_frames_fast(pattern, frames, true)
        assert np.abs(outs[1] - true).max() < 0.1
        assert "cupy" not in sys.modules
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_integer_correlation_maps_evaluate_like_float_ones(rng):
    """evaluate_correlations reads integer maps as exact floats."""
    corrs = rng.integers(0, 1000, size=(4, 12, 12))
    peaks = rng.integers(10, 50, size=(4, 2))
    as_int, as_float = outs(np, 4), outs(np, 4)
    gpucorr.evaluate_correlations(corrs.astype(np.int32), peaks, 6, *as_int)
    gpucorr.evaluate_correlations(corrs.astype(np.float64), peaks, 6, *as_float)
    for a, b in zip(as_int, as_float):
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_patterns_take_gpu_templates(cupy, rng):
    """A UserTemplate or radial map given on the GPU is copied to the host once; the
    pattern then behaves exactly as with the NumPy array, on either backend."""
    host = np.arange(35.0).reshape(5, 7) % 4
    on_gpu = patterns.UserTemplate(cupy.asarray(host), search=6)
    on_cpu = patterns.UserTemplate(host, search=6)
    assert isinstance(on_gpu.template, np.ndarray)
    np.testing.assert_array_equal(on_gpu.get_template((12, 12)), on_cpu.get_template((12, 12)))
    r, _ = gpucorr.masks.polar_map(16, 16, 32, 32, stretchY=2.0, angle=0.3)
    ellipse = patterns.RadialGradientBackgroundSubtraction(radius=5, radial_map=cupy.asarray(r))
    np.testing.assert_array_equal(
        ellipse.get_mask((20, 20)),
        patterns.RadialGradientBackgroundSubtraction(radius=5, radial_map=r).get_mask((20, 20)))
    frames, true = random_lattice_frames(rng, 3, shape=(64, 64), radius=4)
    peaks = np.rint(true).astype(np.int64)
    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), on_gpu)
    assert_results_match([cupy.asnumpy(a) for a in got], gpucorr.refine(frames, peaks, on_cpu))
    with pytest.raises(ValueError, match="template must be a 2-D array"):
        patterns.UserTemplate(cupy.zeros(3))


@pytest.mark.gpu
def test_index_peaks_takes_gpu_peaks(cupy):
    from gpucorr.indexing import index_peaks
    zero, a, b = np.array([64., 64.]), np.array([0., 16.]), np.array([16., 0.])
    ij = np.array([[0, 0], [1, 0], [0, 1], [-1, 2], [2, -1], [1, 1]])
    peaks = zero + ij @ np.stack([a, b]) + 0.3
    want = index_peaks(peaks)
    got = index_peaks(cupy.asarray(peaks))
    assert all(isinstance(g, cupy.ndarray) for g in got)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(cupy.asnumpy(g), w)


@pytest.mark.gpu
def test_centres_out_centers_cannot_hold(cupy):
    """A negative centre in uint16 out_centers is stored as on the CPU (wrapped, as
    libertem-blobfinder stores it; no warning: that would need a sync)."""
    rng = np.random.default_rng(0)
    frame = (rng.random((64, 64)) - 5).astype(np.float32)   # darker than its zero padding
    peaks = np.array([[0, 0], [30, 30]])
    template = PATTERN.get_template((2 * CS, 2 * CS))
    expected = outs(np, 2, np.uint16)
    with pytest.warns(RuntimeWarning, match="cannot hold some centres"):
        gpucorr.process_frame_fast(template, CS, frame, peaks, *expected,
                                   crop_bufs=gpucorr.allocate_crop_bufs(CS, 2, np.float32))
    got = outs(cupy, 2, np.uint16)
    gpucorr.process_frame_fast(cupy.asarray(template), CS, cupy.asarray(frame),
                               cupy.asarray(peaks), *got,
                               crop_bufs=gpucorr.allocate_crop_bufs(CS, 2, np.float32, xp=cupy))
    assert_results_match(host(got), expected)
