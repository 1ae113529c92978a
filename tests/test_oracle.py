"""gpucorr against libertem-blobfinder 0.6.1 (test-only oracle) on randomised frames."""
import numpy as np
import pytest

import gpucorr
from gpucorr import patterns

from helpers import (EPS32, assert_results_match, jittered_peaks, optional_modules,
                     random_lattice_frames)

# the oracle: the tests that compare with it take needs_reference, the others run without it
ref, ref_common, ref_patterns, needs_reference = optional_modules(
    "libertem_blobfinder.base.correlation", "libertem_blobfinder.common.correlation",
    "libertem_blobfinder.common.patterns")

PATTERNS = [
    ("Circular", dict(radius=4)),
    ("Circular", dict(radius=3, search=7)),
    ("RadialGradient", dict(radius=4)),
    ("RadialGradient", dict(radius=8)),
    ("BackgroundSubtraction", dict(radius=4)),
    ("RadialGradientBackgroundSubtraction", dict(radius=4)),
]


def pattern_pair(name, kwargs):
    return getattr(patterns, name)(**kwargs), getattr(ref_patterns, name)(**kwargs)


def pattern_id(p):
    return f"{p[0]}-" + "-".join(f"{k}{v}" for k, v in p[1].items())


@pytest.fixture(params=[(128, 128), (96, 130)], ids=lambda s: f"{s[0]}x{s[1]}")
def data(request, rng):
    shape = request.param
    frames, true = random_lattice_frames(rng, 3, shape=shape, radius=4)
    return frames, jittered_peaks(rng, true, shape)


# edge peaks whose full-mode maximum lies left of the frame: uint16 centres wrap in both
# libraries, and gpucorr says so (tests/test_errors.py checks the warning)
@needs_reference
@pytest.mark.filterwarnings("ignore:.*cannot hold some centres:RuntimeWarning")
@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("pattern", PATTERNS, ids=pattern_id)
def test_refine_matches_reference(data, pattern, mode):
    frames, peaks = data
    ours_pattern, ref_pattern = pattern_pair(*pattern)
    reference = (ref_common.process_frames_fast if mode == "fast"
                 else ref_common.process_frames_full)
    expected = reference(ref_pattern, frames, peaks)
    got = gpucorr.refine(frames, peaks, ours_pattern, mode=mode, scaling="log")  # the reference's
    assert_results_match(got, expected)
    # the compatible batch helpers give the same, with the reference's dtypes
    compat = getattr(gpucorr, f"process_frames_{mode}")(ours_pattern, frames, peaks)
    assert compat[0].dtype == expected[0].dtype
    assert_results_match(compat, expected)


@needs_reference
@pytest.mark.parametrize("pattern", PATTERNS, ids=pattern_id)
def test_process_frame_fast_matches_reference(data, pattern):
    frames, peaks = data
    ours_pattern, ref_pattern = pattern_pair(*pattern)
    cs = ref_pattern.get_crop_size()
    n = len(peaks)

    def run(module, pat, frame):
        outs = (np.zeros((n, 2), np.int32), np.zeros((n, 2), np.float32),
                np.zeros(n, np.float32), np.zeros(n, np.float32))
        module.process_frame_fast(
            template=pat.get_template((2 * cs, 2 * cs)), crop_size=cs, frame=frame,
            peaks=peaks, out_centers=outs[0], out_refineds=outs[1], out_heights=outs[2],
            out_elevations=outs[3],
            crop_bufs=module.allocate_crop_bufs(cs, n, frame.dtype, limit=5 * (2 * cs)**2 * 4))
        return outs

    for frame in frames:
        assert_results_match(run(gpucorr, ours_pattern, frame), run(ref, ref_pattern, frame))


# edge peaks whose full-mode maximum lies left of the frame: uint16 centres wrap in both
# libraries, and gpucorr says so (tests/test_errors.py checks the warning)
@needs_reference
@pytest.mark.filterwarnings("ignore:.*cannot hold some centres:RuntimeWarning")
@pytest.mark.parametrize("pattern", PATTERNS, ids=pattern_id)
def test_process_frame_full_matches_reference(data, pattern):
    frames, peaks = data
    ours_pattern, ref_pattern = pattern_pair(*pattern)
    cs = ref_pattern.get_crop_size()
    n = len(peaks)
    frame = frames[0]
    outs = (np.zeros((n, 2), np.uint16), np.zeros((n, 2), np.float32),
            np.zeros(n, np.float32), np.zeros(n, np.float32))
    ref.process_frame_full(
        template=ref_pattern.get_template(frame.shape), crop_size=cs, frame=frame, peaks=peaks,
        out_centers=outs[0], out_refineds=outs[1], out_heights=outs[2], out_elevations=outs[3],
        frame_buf=np.zeros(frame.shape, np.float32), buf_count=ref.get_buf_count(cs, n, "f4"))
    got = gpucorr.process_frame_full(
        template=ours_pattern.get_template(frame.shape), crop_size=cs, frame=frame, peaks=peaks)
    assert_results_match(got, outs)


@needs_reference
def test_crop_and_log_scale_match_reference(rng):
    frame = rng.random((40, 50)).astype(np.float32)
    peaks = np.array([[0, 0], [20, 25], [39, 49], [-5, 60], [10, 3]])
    expected = np.zeros((5, 12, 12), np.float32)
    got = np.zeros((5, 12, 12), np.float32)
    ref.crop_disks_from_frame(peaks, frame, 6, expected)
    gpucorr.crop_disks_from_frame(peaks, frame, 6, got)
    np.testing.assert_array_equal(got, expected)
    got_slicing = np.full((5, 12, 12), np.nan, np.float32)
    gpucorr.crop_disks_from_frame_slicing(peaks, frame, 6, got_slicing)
    np.testing.assert_array_equal(got_slicing, expected)
    ref.log_scale_cropbufs_inplace(expected)
    gpucorr.log_scale_cropbufs_inplace(got)
    # gpucorr rounds (x - min) + 1 once from float64; the reference rounds min - 1 and then
    # x - (min - 1) in float32: arguments up to 1 ulp apart, i.e. up to 2**-23 absolute in
    # the log of an argument >= 1
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=2.0 ** -23)
    np.testing.assert_allclose(gpucorr.log_scale(frame, out=np.empty_like(frame)),
                               ref.log_scale(frame, out=np.empty_like(frame)), rtol=1e-6)


def test_crop_slicing_from_sparse_frame(rng):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    dense = rng.random((30, 30)) * (rng.random((30, 30)) > 0.8)
    peaks = np.array([[5, 5], [29, 0], [15, 31]])
    expected = np.zeros((3, 8, 8))
    gpucorr.crop_disks_from_frame(peaks, dense, 4, expected)
    got = np.zeros((3, 8, 8))
    gpucorr.crop_disks_from_frame_slicing(peaks, scipy_sparse.csr_matrix(dense), 4, got)
    np.testing.assert_array_equal(got, expected)


@needs_reference
def test_low_level_helpers_match_reference(rng):
    corrs = rng.random((6, 16, 16))
    corrs[1] = 0.5  # flat map: reference divides by zero here; gpucorr keeps the centre
    peaks = rng.integers(10, 50, size=(6, 2))
    outs = [np.zeros((6, 2), np.int32), np.zeros((6, 2), np.float32),
            np.zeros(6, np.float32), np.zeros(6, np.float32)]
    gpucorr.evaluate_correlations(corrs, peaks, 8, *outs)
    for i in (0, 2, 3, 4, 5):
        expected = [np.zeros((1, 2), np.int32), np.zeros((1, 2), np.float32),
                    np.zeros(1, np.float32), np.zeros(1, np.float32)]
        ref.evaluate_correlations(corrs[i:i + 1], peaks[i:i + 1], 8, *expected)
        assert_results_match([o[i:i + 1] for o in outs], expected)
    np.testing.assert_array_equal(outs[0][1], peaks[1] - 8)  # first index on ties
    np.testing.assert_array_equal(outs[1][1], peaks[1] - 8)
    cut = corrs[0][3:8, 4:9]
    assert gpucorr.center_of_mass(cut) == pytest.approx(ref.center_of_mass(cut), abs=1e-5)
    assert gpucorr.refine_center((5, 6), 2, corrs[0]) == pytest.approx(
        ref.refine_center((5, 6), 2, corrs[0]), abs=1e-5)
    assert gpucorr.peak_elevation((5.2, 6.1), corrs[0], 1.5) == pytest.approx(
        ref.peak_elevation((5.2, 6.1), corrs[0], 1.5), rel=1e-6)
    assert gpucorr.unravel_index(37, (5, 8)) == ref.unravel_index(37, (5, 8))
    for args in [(16, 49, np.float32), (64, 49, np.float64), (8, 3, np.float32, 2**12)]:
        assert gpucorr.get_buf_count(*args) == ref.get_buf_count(*args)
        assert gpucorr.allocate_crop_bufs(*args).shape == ref.allocate_crop_bufs(*args).shape


@needs_reference
@pytest.mark.parametrize("pattern", PATTERNS, ids=pattern_id)
def test_do_correlations_equals_reference_for_symmetric_patterns(pattern, rng):
    ours_pattern, ref_pattern = pattern_pair(*pattern)
    cs = ref_pattern.get_crop_size()
    crops = rng.random((5, 2 * cs, 2 * cs)).astype(np.float32)
    expected = ref.do_correlations(ref_pattern.get_template((2 * cs, 2 * cs)), crops)
    got = gpucorr.do_correlations(ours_pattern.get_template((2 * cs, 2 * cs)), crops)
    assert got.dtype == expected.dtype
    # libertem-blobfinder transforms float32 crops in single precision, gpucorr in
    # the promoted (double) precision: they agree to float32 resolution
    np.testing.assert_allclose(got, expected, rtol=0, atol=4 * EPS32 * np.abs(expected).max())


def test_compatible_names_exist():
    names = ["process_frame_fast", "process_frame_full", "allocate_crop_bufs", "get_buf_count",
             "do_correlations", "evaluate_correlations", "evaluate_upsampling",
             "refine_center_upsampling", "refine_center", "center_of_mass", "peak_elevation",
             "unravel_index", "log_scale", "log_scale_cropbufs_inplace",
             "crop_disks_from_frame", "crop_disks_from_frame_slicing", "zeros", "fft",
             "get_correlation", "get_peaks", "process_frames_fast", "process_frames_full"]
    import gpucorr.correlation
    for name in names:
        assert hasattr(gpucorr, name), name
        assert hasattr(gpucorr.correlation, name) or name in ("get_correlation", "get_peaks")
    assert gpucorr.fft is np.fft and gpucorr.zeros is np.zeros


def test_log_scale_cropbufs_is_the_correctly_rounded_shift(rng):
    """Each value is log of (x - min) + 1 computed exactly (float64) and rounded once to
    float32: the argument is the correctly rounded one."""
    crops = rng.random((4, 10, 10)).astype(np.float32) * 50 - 7
    wide = crops.astype(np.float64)
    want = np.log(((wide - wide.min(axis=(1, 2), keepdims=True)) + 1).astype(np.float32))
    gpucorr.log_scale_cropbufs_inplace(crops)
    np.testing.assert_array_equal(crops, want)
