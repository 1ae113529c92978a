"""refine's preprocessing choices: ``scaling`` ("log" or "none") and the correlation ``power``."""
import numpy as np
import pytest

import gpucorr
from gpucorr import patterns

from helpers import assert_results_match, random_lattice_frames

PATTERN = patterns.RadialGradient(radius=4)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    frames, true = random_lattice_frames(rng, 5, shape=(96, 80), radius=4, background=0.0)
    return frames, np.rint(true).astype(np.int64), true


def _same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("pattern, scaling", [
    (patterns.Circular(radius=4), "log"),
    (patterns.BackgroundSubtraction(radius=4), "log"),
    (patterns.RadialGradientBackgroundSubtraction(radius=4), "log"),
    (patterns.RadialGradient(radius=4), "none"),     # measured: the log costs it accuracy
    (patterns.DiskEdge(radius=4), "none"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_each_pattern_has_its_default_scaling_and_plain_correlation(data, mode, pattern,
                                                                   scaling):
    frames, peaks, _ = data
    default = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=7)
    _same(gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=7, scaling=scaling,
                         power=1), default)
    other = "none" if scaling == "log" else "log"
    assert not np.array_equal(default.refineds, gpucorr.refine(
        frames, peaks, pattern, mode=mode, upsample=7, scaling=other).refineds)


def test_the_compatible_functions_log_scale_every_pattern(data):
    frames, peaks, _ = data
    for pattern in (patterns.RadialGradient(radius=4), patterns.DiskEdge(radius=4)):
        compat = gpucorr.process_frames_fast(pattern, frames, peaks, upsample=7)
        _same(compat[1:], tuple(gpucorr.refine(frames, peaks, pattern, upsample=7,
                                               scaling="log"))[1:])


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_no_scaling_is_log_scaling_of_the_exponentiated_frames(data, mode):
    """``log(x - min + 1)`` of ``expm1(f)`` is ``f`` where the minimum is 0 (a zero
    background in every crop and frame), so ``scaling="none"`` on ``f`` must give what
    the log scaling gives on ``expm1(f)``, to the rounding of log1p(expm1(.))."""
    frames, peaks, _ = data
    f = frames.astype(np.float64) / frames.max() * 5
    f[:, :1, :] = 0  # the minimum of every frame is 0
    f[:, :, :1] = 0
    if mode == "fast":  # and of every crop: a zero pixel in each
        for y, x in peaks:
            f[:, max(y - 5, 0), max(x - 5, 0)] = 0
    plain = gpucorr.refine(f, peaks, PATTERN, mode=mode, upsample=7, scaling="none")
    logged = gpucorr.refine(np.expm1(f), peaks, PATTERN, mode=mode, upsample=7, scaling="log")
    assert_results_match(plain, logged, refined_atol=1e-6, rtol=1e-9)
    assert not np.array_equal(plain.refineds, gpucorr.refine(f, peaks, PATTERN, mode=mode,
                                                             upsample=7, scaling="log").refineds)


def test_power_below_one_sharpens_the_peak(data):
    """Hybrid correlation (power < 1) keeps the disks' positions on clean, equal disks
    and narrows the correlation peak: the elevation relative to the height grows."""
    frame, _, true = gpucorr.cbed_frame(96, 96, radius=4, all_equal=True,
                                        zero=np.array([48.3, 47.6]))
    peaks = np.rint(true).astype(np.int64)
    plain = gpucorr.refine(frame, peaks, PATTERN, upsample=20, scaling="none")
    hybrid = gpucorr.refine(frame, peaks, PATTERN, upsample=20, scaling="none", power=0.6)
    assert np.abs(hybrid.refineds[0] - true).max() < 0.1
    np.testing.assert_array_equal(hybrid.centers, plain.centers)
    assert not np.array_equal(hybrid.refineds, plain.refineds)


@pytest.mark.parametrize("scaling, power", [("none", 1.0), ("log", 0.5), ("none", 0.3)])
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_new_choices_are_batch_invariant(data, mode, scaling, power):
    frames, peaks, _ = data
    kwargs = dict(mode=mode, upsample=7, scaling=scaling, power=power)
    stack = gpucorr.refine(frames, peaks, PATTERN, workers=2, memory_limit=1, **kwargs)
    for i in (0, 3):
        alone = gpucorr.refine(frames[i], peaks, PATTERN, workers=1, **kwargs)
        _same([a[i] for a in stack], alone)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(scaling="sqrt"), ValueError, r"scaling must be one of \['log', 'none'\]; got 'sqrt'"),
    (dict(scaling=True), ValueError, "scaling must be one of"),
    (dict(power=1.5), ValueError, r"power must be in \[0, 1\]; got 1.5"),
    (dict(power=-0.1), ValueError, r"power must be in \[0, 1\]"),
    (dict(power="1"), TypeError, "power must be a real number"),
    (dict(power=True), TypeError, "power must be a real number"),
])
def test_bad_choices_are_refused(data, kwargs, error, match):
    frames, peaks, _ = data
    with pytest.raises(error, match=match):
        gpucorr.refine(frames, peaks, PATTERN, **kwargs)


def test_a_pattern_may_choose_its_default_scaling(data):
    frames, peaks, _ = data

    class Plain(patterns.RadialGradient):
        default_scaling = "none"

    got = gpucorr.refine(frames, peaks, Plain(radius=4))
    _same(got, gpucorr.refine(frames, peaks, PATTERN, scaling="none"))


@pytest.mark.gpu
@pytest.mark.parametrize("scaling, power", [("none", 1.0), ("log", 0.5), ("none", 0.5)])
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_gpu_gives_the_cpus_answers(data, mode, scaling, power):
    import cupy
    frames, peaks, _ = data
    kwargs = dict(mode=mode, upsample=7, scaling=scaling, power=power)
    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), PATTERN, **kwargs)
    expected = gpucorr.refine(frames, peaks, PATTERN, **kwargs)
    assert_results_match([cupy.asnumpy(a) for a in got], expected)


def test_dask_passes_the_choices_on(data):
    da = pytest.importorskip("dask.array")
    import gpucorr.dask
    frames, peaks, _ = data
    got = gpucorr.dask.refine(da.from_array(frames, chunks=(2, -1, -1)), peaks, PATTERN,
                              scaling="none", power=0.5).compute(scheduler="sync")
    _same(got, gpucorr.refine(frames, peaks, PATTERN, scaling="none", power=0.5))
    with pytest.raises(ValueError, match="scaling must be one of"):
        gpucorr.dask.refine(da.from_array(frames, chunks=(2, -1, -1)), peaks, PATTERN,
                            scaling="sqrt")


def test_an_overflowing_correlation_is_named_without_warnings():
    """Frames so large that the correlation overflows: a ValueError that says so (not the
    log scaling, which was not asked for; not the template), and no RuntimeWarning."""
    import warnings
    frames, _, centers = gpucorr.cbed_frame(128, 128, radius=4)
    peaks = np.rint(centers).astype(int)
    big32 = np.where(frames[0] > 0, 3e38, 0).astype(np.float32)
    big64 = np.where(frames[0] > 0, 1e308, -1e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"the correlation of the frames with the template "
                                             r"overflows float32 in frame 0 .*frames from 0 to "
                                             r"3e\+38; .* or pass the frames as float64"):
            gpucorr.refine(big32, peaks, PATTERN, scaling="none")
        with pytest.raises(ValueError, match=r"overflows float64 .*frames from -1e\+308 to "
                                             r"1e\+308; scale the frames or the template"):
            gpucorr.refine(big64, peaks, PATTERN, scaling="none")


def test_a_pattern_class_is_refused():
    frames, _, centers = gpucorr.cbed_frame(64, 64, radius=4)
    with pytest.raises(TypeError, match=r"pattern must be a match pattern instance, e\.g\. "
                                        r"Circular\(radius=4\); got the class Circular"):
        gpucorr.refine(frames, np.rint(centers).astype(int), gpucorr.patterns.Circular)
