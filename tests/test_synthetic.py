"""Tests for gpucorr.synthetic, with libertem-blobfinder as oracle."""
import numpy as np
import pytest

from gpucorr import synthetic

from helpers import optional_modules

ref_utils, needs_reference = optional_modules("libertem_blobfinder.base.utils")

CBED_CASES = [
    {},
    {"fy": 100, "fx": 140},
    {"fy": 64, "fx": 96, "zero": (30.3, 41.7), "a": (10.2, 1.3), "b": (-2.1, 11.6),
     "radius": 3.3},
    {"fy": 80, "fx": 48, "zero": (40.5, 23.5), "a": (7.5, 0), "radius": 2.5},
    {"all_equal": True, "radius": 5.5},
    {"fy": 33, "fx": 47, "radius": 2, "margin": 0},
    {"fy": 64, "fx": 64, "radius": 0.4, "zero": (32.5, 31.5), "a": (7, 0)},
    {"fy": 50, "fx": 70, "indices": np.array([[0, 0], [1, 2], [-1, 1], [3, -2]]),
     "a": (6.4, 2.2), "b": (-1.7, 8.1), "radius": 3},
    {"fy": 64, "fx": 64, "radius": 6, "a": (9, 0), "margin": -3},
    {"fy": 40, "fx": 40, "indices": np.mgrid[-2:3, -1:2], "radius": 4.5, "all_equal": True},
]


@needs_reference
@pytest.mark.parametrize("kwargs", CBED_CASES, ids=range(len(CBED_CASES)))
def test_cbed_frame_matches_reference(kwargs):
    expected_data, expected_indices, expected_peaks = ref_utils.cbed_frame(**kwargs)
    data, indices, peaks = synthetic.cbed_frame(**kwargs)
    assert data.dtype == np.float32
    assert data.shape == expected_data.shape
    np.testing.assert_allclose(data, expected_data, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(peaks, expected_peaks)
    assert peaks.dtype == expected_peaks.dtype


def test_cbed_frame_defaults():
    data, indices, peaks = synthetic.cbed_frame()
    assert data.shape == (1, 128, 128)
    assert len(peaks) == 49
    np.testing.assert_array_equal(peaks[24], (64, 64))
    # The brightest disk is the one at the origin.
    assert data[0, 64, 64] == data.max()


def test_cbed_frame_does_not_modify_inputs():
    zero = np.array([30.5, 31.0])
    a = np.array([8.0, 1.0])
    b = np.array([-1.0, 8.0])
    indices = np.mgrid[-3:4, -3:4]
    copies = [x.copy() for x in (zero, a, b, indices)]
    synthetic.cbed_frame(64, 64, zero=zero, a=a, b=b, indices=indices)
    for x, c in zip((zero, a, b, indices), copies):
        np.testing.assert_array_equal(x, c)


def test_cbed_frame_without_disks_is_empty():
    data, indices, peaks = synthetic.cbed_frame(16, 16, zero=(100, 100),
                                                indices=np.array([[0, 0]]))
    assert data.shape == (1, 16, 16)
    assert not data.any()
    assert indices.shape == (0, 2)
    assert peaks.shape == (0, 2)


# ---------------------------------------------------------------------------
# dose / Poisson noise
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dose", [1e3, 1e5, 37.5])
def test_dose_counts(dose):
    data, _, _ = synthetic.cbed_frame(64, 64, radius=3, dose=dose, seed=7)
    assert data.dtype == np.float32
    assert data.shape == (1, 64, 64)
    np.testing.assert_array_equal(data, np.round(data))
    assert data.min() >= 0
    total = data.sum(dtype=np.float64)
    assert abs(total - dose) < 5 * np.sqrt(dose)


def test_dose_is_reproducible_and_seeded():
    a, _, _ = synthetic.cbed_frame(64, 64, dose=1e4, seed=123)
    b, _, _ = synthetic.cbed_frame(64, 64, dose=1e4, seed=123)
    c, _, _ = synthetic.cbed_frame(64, 64, dose=1e4, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d, _, _ = synthetic.cbed_frame(64, 64, dose=1e4, seed=np.random.default_rng(123))
    np.testing.assert_array_equal(a, d)


def test_dose_expectation_follows_frame():
    clean, _, _ = synthetic.cbed_frame(32, 32, radius=2, a=(8, 0))
    expected = clean[0].astype(np.float64) * (1e4 / clean.sum(dtype=np.float64))
    rng = np.random.default_rng(5)
    draws = np.stack([
        synthetic.cbed_frame(32, 32, radius=2, a=(8, 0), dose=1e4, seed=rng)[0][0]
        for _ in range(40)
    ])
    mean = draws.mean(axis=0)
    # Background stays empty, disks carry the dose in proportion.
    assert not mean[expected == 0].any()
    assert np.abs(mean - expected).max() < 6 * np.sqrt(expected.max() / 40)


def test_dose_without_disks_raises():
    with pytest.raises(ValueError, match=r"dose needs a frame with at least one disk"):
        synthetic.cbed_frame(16, 16, zero=(100, 100), indices=np.array([[0, 0]]), dose=10)


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"fy": 0}, ValueError, r"fy must be a positive int; got 0"),
        ({"fx": -8}, ValueError, r"fx must be a positive int; got -8"),
        ({"fy": 64.0}, TypeError, r"fy must be a positive int; got 64.0 of type float"),
        ({"fx": True}, TypeError, r"fx must be a positive int; got True"),
        ({"radius": 0}, ValueError, r"radius must be > 0; got 0"),
        ({"radius": -1}, ValueError, r"radius must be > 0; got -1"),
        ({"radius": "4"}, TypeError, r"radius must be a real number"),
        ({"dose": 0}, ValueError, r"dose must be > 0; got 0"),
        ({"dose": -5.0}, ValueError, r"dose must be > 0; got -5.0"),
        ({"dose": np.inf}, ValueError, r"dose must be finite; got inf"),
        ({"dose": "a lot"}, TypeError, r"dose must be a real number"),
        ({"margin": np.nan}, ValueError, r"margin must be finite"),
        ({"indices": np.zeros((3, 3))}, ValueError,
         r"indices must have shape \(n, 2\) or \(2, n, m\); got \(3, 3\)"),
    ],
    ids=str,
)
def test_cbed_frame_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        synthetic.cbed_frame(**kwargs)


def test_dose_and_seed_are_keyword_only():
    with pytest.raises(TypeError):
        synthetic.cbed_frame(16, 16, None, None, None, None, 2, False, None, 100)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

VECTORS = [
    np.array([3.0, 4.0]),
    np.array([[0, 2], [3, 0], [-1, -1], [2.5, -7.1]]),
    np.random.default_rng(4).normal(size=(3, 5, 2)),
    np.array([[1, 2], [3, 4]], dtype=np.float32),
]


@needs_reference
@pytest.mark.parametrize("vectors", VECTORS, ids=range(len(VECTORS)))
def test_polar_cartesian_match_reference(vectors):
    polar = synthetic.make_polar(vectors)
    ref_polar = ref_utils.make_polar(vectors)
    assert polar.dtype == ref_polar.dtype
    np.testing.assert_array_equal(polar, ref_polar)
    cart = synthetic.make_cartesian(polar)
    ref_cart = ref_utils.make_cartesian(ref_polar)
    assert cart.dtype == ref_cart.dtype
    np.testing.assert_array_equal(cart, ref_cart)
    np.testing.assert_allclose(cart, vectors, atol=1e-5)


@needs_reference
@pytest.mark.parametrize(
    "indices",
    [np.mgrid[-2:3, -1:2], np.mgrid[0:1, 0:4], np.array([[0, 1], [2, 3], [-1, 5]])],
    ids=["mgrid", "mgrid-row", "pairs"],
)
def test_regularize_indices_matches_reference(indices):
    np.testing.assert_array_equal(
        synthetic.regularize_indices(indices), ref_utils.regularize_indices(indices)
    )


def test_regularize_indices_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"got \(3, 2, 2\)"):
        synthetic.regularize_indices(np.zeros((3, 2, 2)))


@needs_reference
def test_lattice_helpers_match_reference():
    indices = np.mgrid[-4:5, -4:5]
    zero = np.array((20.5, 30.25))
    a = np.array((6.1, 0.7))
    b = np.array((-0.4, 7.3))
    flat = ref_utils.regularize_indices(indices)
    np.testing.assert_array_equal(
        synthetic.calc_coords(zero, a, b, flat), ref_utils.calc_coords(zero, a, b, flat)
    )
    coords = ref_utils.calc_coords(zero, a, b, flat)
    np.testing.assert_array_equal(
        synthetic.within_frame(coords, 3, 40, 60), ref_utils.within_frame(coords, 3, 40, 60)
    )
    got = synthetic.frame_peaks(40, 60, zero, a, b, 3, indices)
    expected = ref_utils.frame_peaks(40, 60, zero, a, b, 3, indices)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
