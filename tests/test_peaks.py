"""Tests for gpucorr.peaks, with libertem-blobfinder and scikit-image as oracles."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from gpucorr import patterns, peaks
from gpucorr.synthetic import cbed_frame

from helpers import optional_modules

# the references: the tests that compare with one take its mark, the others run without it
ref_corr, ref_patterns, needs_reference = optional_modules(
    "libertem_blobfinder.common.correlation", "libertem_blobfinder.common.patterns")
skimage_feature, needs_skimage = optional_modules("skimage.feature")

# Patterns that are point-symmetric about the centre pixel for these radii
# (RadialGradientBackgroundSubtraction needs an integer max radius to match).
SYMMETRIC = [
    ("Circular", 2), ("Circular", 5.5),
    ("RadialGradient", 4), ("RadialGradient", 5.5),
    ("BackgroundSubtraction", 2), ("BackgroundSubtraction", 5.5),
    ("RadialGradientBackgroundSubtraction", 4),
    ("RadialGradientBackgroundSubtraction", 8),
]
EVEN_SHAPES = [(32, 32), (48, 64), (40, 26)]


def make(module, name, radius):
    return getattr(module, name)(radius)


def shape_id(shape):
    return "x".join(map(str, shape))


def brute_force_correlation(frame, mask):
    """corr[y, x] = sum_d mask[c + d] * frame[(y + d) mod shape], c = shape // 2."""
    h, w = frame.shape
    cy, cx = h // 2, w // 2
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            rows = (np.arange(h) - cy + y) % h
            cols = (np.arange(w) - cx + x) % w
            out[y, x] = np.sum(mask * frame[np.ix_(rows, cols)])
    return out


# ---------------------------------------------------------------------------
# get_correlation
# ---------------------------------------------------------------------------

@needs_reference
@pytest.mark.parametrize("shape", EVEN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("name, radius", SYMMETRIC, ids=str)
def test_correlation_matches_reference_for_even_frames(name, radius, shape):
    frame = np.random.default_rng(11).random(shape)
    expected = ref_corr.get_correlation(frame, make(ref_patterns, name, radius))
    got = peaks.get_correlation(frame, make(patterns, name, radius))
    assert got.dtype == np.float64
    assert got.shape == shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


@needs_reference
def test_correlation_of_float32_frame_is_float64():
    frame, _, _ = cbed_frame(64, 64, radius=3)
    got = peaks.get_correlation(frame[0], patterns.RadialGradient(3))
    assert got.dtype == np.float64
    exact = peaks.get_correlation(frame[0].astype(np.float64), patterns.RadialGradient(3))
    np.testing.assert_array_equal(got, exact)
    # The reference transforms float32 frames in single precision.
    expected = ref_corr.get_correlation(frame[0], ref_patterns.RadialGradient(3))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(7, 9), (8, 8), (9, 6), (5, 5)], ids=shape_id)
def test_correlation_is_correlation_not_convolution(shape):
    rng = np.random.default_rng(12)
    frame = rng.normal(size=shape)
    template = rng.normal(size=(3, 4))
    pattern = patterns.UserTemplate(template)
    mask = pattern.get_mask(shape)
    np.testing.assert_allclose(
        peaks.get_correlation(frame, pattern), brute_force_correlation(frame, mask),
        rtol=0, atol=1e-12,
    )


@pytest.mark.parametrize("shape", [(31, 33), (32, 32), (17, 24)], ids=shape_id)
@pytest.mark.parametrize("position", [(8, 9), (10, 14)], ids=shape_id)
def test_asymmetric_template_finds_its_copy(shape, position):
    # An L-shaped template, odd-sized, pasted into the frame with its centre
    # pixel at `position`: the correlation peaks exactly there.
    template = np.zeros((5, 5))
    template[0:4, 1] = 1
    template[3, 1:5] = 1
    frame = np.zeros(shape)
    y, x = position
    frame[y - 2:y + 3, x - 2:x + 3] = template
    corr = peaks.get_correlation(frame, patterns.UserTemplate(template))
    assert np.unravel_index(np.argmax(corr), shape) == position
    assert corr[position] == pytest.approx(template.sum())
    found = peaks.get_peaks(frame, patterns.UserTemplate(template), 1)
    np.testing.assert_array_equal(found, [position])


@pytest.mark.parametrize("shape", [(63, 65), (64, 64), (47, 80)], ids=shape_id)
def test_disk_peaks_land_on_disk_centres(shape):
    data, _, disk_centres = cbed_frame(*shape, zero=(shape[0] // 2, shape[1] // 2),
                                       a=(12, 0), b=(0, 12), radius=4, all_equal=True)
    found = peaks.get_peaks(data[0], patterns.RadialGradient(4), len(disk_centres))
    assert sorted(map(tuple, found.tolist())) == sorted(
        map(tuple, disk_centres.astype(int).tolist())
    )


def test_correlation_does_not_modify_input():
    frame = np.random.default_rng(13).random((16, 16)).astype(np.float32)
    copy = frame.copy()
    peaks.get_correlation(frame, patterns.Circular(2))
    peaks.get_peaks(frame, patterns.Circular(2), 5)
    np.testing.assert_array_equal(frame, copy)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, bool])
def test_correlation_accepts_real_dtypes(dtype):
    frame = (np.random.default_rng(14).random((16, 16)) * 3).astype(dtype)
    got = peaks.get_correlation(frame, patterns.Circular(2))
    expected = peaks.get_correlation(frame.astype(np.float64), patterns.Circular(2))
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# get_peaks
# ---------------------------------------------------------------------------

def test_docstring_example_of_reference():
    frame, _, _ = cbed_frame(radius=4)
    found = peaks.get_peaks(frame[0], patterns.RadialGradient(radius=4), 7)
    assert found.dtype == np.int64
    np.testing.assert_array_equal(
        found,
        [[64, 64], [64, 80], [80, 80], [80, 64], [48, 80], [48, 64], [64, 96]],
    )


@needs_reference
@pytest.mark.parametrize("num_peaks", [1, 10, 60])
@pytest.mark.parametrize("shape", EVEN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("name, radius", SYMMETRIC, ids=str)
def test_peaks_match_reference_on_random_frames(name, radius, shape, num_peaks):
    frame = np.random.default_rng(15).random(shape)
    expected = ref_corr.get_peaks(frame, make(ref_patterns, name, radius), num_peaks)
    got = peaks.get_peaks(frame, make(patterns, name, radius), num_peaks)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


CBED_CASES = [
    {},
    {"fy": 96, "fx": 128, "radius": 3},
    # Sub-pixel lattice with no disk centre at a half-pixel position: there
    # two neighbouring pixels tie exactly and their order is set by rounding.
    {"fy": 64, "fx": 96, "zero": (30.3137, 41.7182), "a": (10.2317, 1.3049),
     "b": (-2.1191, 11.6353), "radius": 3.3},
    {"fy": 96, "fx": 64, "radius": 5.5, "a": (16, 0), "b": (0, 16)},
]


@needs_reference
@pytest.mark.parametrize("kwargs", CBED_CASES, ids=range(len(CBED_CASES)))
@pytest.mark.parametrize("name", ["Circular", "RadialGradient", "BackgroundSubtraction"])
def test_peaks_match_reference_on_cbed_frames(kwargs, name):
    data, _, disk_centres = cbed_frame(**kwargs)
    radius = kwargs.get("radius", 4)
    # Beyond the number of disks the maxima are rounding noise of the FFT.
    num_peaks = len(disk_centres)
    expected = ref_corr.get_peaks(data[0], make(ref_patterns, name, radius), num_peaks)
    got = peaks.get_peaks(data[0], make(patterns, name, radius), num_peaks)
    np.testing.assert_array_equal(got, expected)


@needs_reference
@pytest.mark.parametrize("name", ["Circular", "RadialGradient", "BackgroundSubtraction"])
def test_peaks_match_reference_on_equal_disks(name):
    # All disks equal: their correlation maxima tie up to rounding, so only the
    # set of positions is well defined.
    data, _, disk_centres = cbed_frame(all_equal=True, radius=5.5)
    num_peaks = len(disk_centres)
    expected = ref_corr.get_peaks(data[0], make(ref_patterns, name, 5.5), num_peaks)
    got = peaks.get_peaks(data[0], make(patterns, name, 5.5), num_peaks)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, expected.tolist()))
    assert sorted(map(tuple, got.tolist())) == sorted(
        map(tuple, disk_centres.astype(int).tolist())
    )


def test_flat_frame_has_no_peaks():
    found = peaks.get_peaks(np.ones((16, 16)), patterns.Circular(2), 5)
    assert found.shape == (0, 2)
    assert found.dtype == np.int64


def test_tiny_frames_have_no_peaks():
    for shape in [(1, 1), (2, 2), (1, 7)]:
        found = peaks.get_peaks(np.arange(np.prod(shape), dtype=float).reshape(shape),
                                patterns.Circular(1), 3)
        assert found.shape == (0, 2)


# ---------------------------------------------------------------------------
# local maxima against skimage.feature.peak_local_max
# ---------------------------------------------------------------------------

def reference_maxima(image, num_peaks):
    return skimage_feature.peak_local_max(image, num_peaks=num_peaks)


@needs_skimage
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [2, 4, 1000])
def test_local_maxima_match_skimage_with_plateaus(seed, levels):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 30, size=2))
    image = rng.integers(0, levels, size=shape).astype(np.float64)
    for num_peaks in (1, 3, 1000):
        np.testing.assert_array_equal(
            peaks._local_maxima(image, num_peaks), reference_maxima(image, num_peaks)
        )


@needs_skimage
@settings(max_examples=60, deadline=None)
@given(
    image=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.integers(1, 12)),
        elements=st.sampled_from([0.0, 1.0, 2.0, -1.5, 7.25]),
    ),
    num_peaks=st.integers(1, 20),
)
def test_local_maxima_match_skimage_property(image, num_peaks):
    np.testing.assert_array_equal(
        peaks._local_maxima(image, num_peaks).reshape(-1, 2),
        reference_maxima(image, num_peaks).reshape(-1, 2),
    )


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "frame, exc, match",
    [
        (np.ones((2, 8, 8)), ValueError,
         r"sum_result must be a 2-D array; got 3-D array of shape \(2, 8, 8\)"),
        (np.ones(8), ValueError, r"sum_result must be a 2-D array; got 1-D"),
        (np.ones((8, 8), dtype=complex), TypeError,
         r"sum_result must be a real-valued array; got complex dtype"),
        (np.full((8, 8), "x"), TypeError,
         r"sum_result must be a real-valued array; got non-numeric"),
        (np.zeros((0, 8)), ValueError,
         r"sum_result.shape must contain two positive ints; got \(0, 8\)"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError,
         r"sum_result must contain only finite values"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), ValueError,
         r"sum_result must contain only finite values"),
    ],
    ids=["3d", "1d", "complex", "str", "empty", "nan", "inf"],
)
def test_frame_validation(frame, exc, match):
    with pytest.raises(exc, match=match):
        peaks.get_correlation(frame, patterns.Circular(2))
    with pytest.raises(exc, match=match):
        peaks.get_peaks(frame, patterns.Circular(2), 3)


@pytest.mark.parametrize(
    "num_peaks, exc, match",
    [
        (0, ValueError, r"num_peaks must be a positive int; got 0"),
        (-3, ValueError, r"num_peaks must be a positive int; got -3"),
        (2.5, ValueError, r"num_peaks must be a positive int; got 2.5 of type float"),
        (7.0, ValueError, r"num_peaks must be a positive int; got 7.0"),
        (True, ValueError, r"num_peaks must be a positive int; got True of type bool"),
        ("3", TypeError, r"num_peaks must be a positive int; got '3' of type str"),
        (None, TypeError, r"num_peaks must be a positive int; got None"),
    ],
    ids=str,
)
def test_num_peaks_validation(num_peaks, exc, match):
    with pytest.raises(exc, match=match):
        peaks.get_peaks(np.ones((8, 8)), patterns.Circular(2), num_peaks)


def test_num_peaks_accepts_numpy_int():
    frame, _, _ = cbed_frame(radius=4)
    found = peaks.get_peaks(frame[0], patterns.RadialGradient(4), np.int64(3))
    assert found.shape == (3, 2)


def test_match_pattern_type_is_checked():
    match = r"match_pattern must be a gpucorr.patterns.MatchPattern \(or have get_mask\(\)\); got str"
    with pytest.raises(TypeError, match=match):
        peaks.get_correlation(np.ones((8, 8)), "circular")


@needs_reference
def test_libertem_blobfinder_patterns_are_accepted():
    frame, _, _ = cbed_frame(radius=4)
    np.testing.assert_array_equal(
        peaks.get_peaks(frame[0], ref_patterns.RadialGradient(4), 7),
        peaks.get_peaks(frame[0], patterns.RadialGradient(4), 7))
