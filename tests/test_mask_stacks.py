"""balance, radial_bins, rectangular and sparse_template_multi_stack: the definitions,
and libertem-blobfinder 0.6.1's results where it is right (a test-only oracle)."""
import numpy as np
import pytest
import sparse

from gpucorr import masks

from helpers import optional_modules

ref_masks, needs_reference = optional_modules("libertem_blobfinder.base.masks")


def dense(x):
    return np.asarray(x.todense() if hasattr(x, "todense") else x)


@needs_reference
@pytest.mark.parametrize("geometry", [(35, 37, 80, 80), (4, 3, 9, 8), (10.5, 2.25, 30, 8)])
@pytest.mark.parametrize("kwargs", [
    {"n_bins": 42}, {"n_bins": 2}, {"n_bins": 3, "radius": 5},
    {"n_bins": 3, "radius": 5, "radius_inner": 2, "normalize": True}, {"radius": 5.5},
    {"radius": 4.5, "radius_inner": 1}, {"n_bins": 4, "dtype": np.float32},
    {"n_bins": 3, "use_sparse": True}, {"n_bins": 50, "use_sparse": False}])
def test_radial_bins_match_reference(geometry, kwargs):
    got = masks.radial_bins(*geometry, **kwargs)
    want = ref_masks.radial_bins(*geometry, **kwargs)
    assert got.shape == want.shape and got.dtype == want.dtype
    if "use_sparse" in kwargs:
        assert isinstance(got, sparse.COO) == kwargs["use_sparse"]
    np.testing.assert_allclose(dense(got), dense(want), rtol=0, atol=1e-12)


def test_radial_bins_tile_the_frame():
    """Away from the centre pixel the rings sum to 1 everywhere in the frame (default
    radius), each ring is about 1 px wide by default, and normalize makes each sum 1."""
    bins = dense(masks.radial_bins(20.3, 17.6, 41, 37))
    total = bins.sum(axis=0)
    total[18, 20] = 1  # the centre pixel (rounded centre) carries the innermost ring's patch
    np.testing.assert_allclose(total, 1, atol=1e-12)
    assert len(bins) == round(np.ceil(np.hypot(41 - 20.3, 37 - 17.6)) + 1)
    normed = dense(masks.radial_bins(20.3, 17.6, 41, 37, n_bins=7, normalize=True))
    np.testing.assert_allclose(normed.sum(axis=(1, 2)), 1)


def test_radial_bins_sparse_where_mostly_zero():
    assert isinstance(masks.radial_bins(40, 40, 80, 80, n_bins=42), sparse.COO)
    assert isinstance(masks.radial_bins(40, 40, 80, 80, n_bins=2), np.ndarray)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"radius": 0}, ValueError, "radius must be > 0; got 0"),
    ({"radius": 3, "radius_inner": 3}, ValueError, "radius_inner must be < radius"),
    ({"n_bins": 0}, ValueError, "n_bins must be a positive int; got 0"),
    ({"n_bins": 2.5}, TypeError, "n_bins must be a positive int; got 2.5"),
    ({"dtype": np.int32}, TypeError, "dtype must be a float dtype; got int32"),
])
def test_radial_bins_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        masks.radial_bins(4, 4, 9, 9, **kwargs)


@needs_reference
@pytest.mark.parametrize("args", [(2, 2, 3, 3, 5, 5), (2, 2, -3, 3, 5, 5), (2, 2, 3, -3, 5, 5),
                                  (2, 2, -3, -3, 5, 5), (2, 2, 0, 3, 5, 5), (2, 2, 3, 0, 5, 5)])
def test_rectangular_where_reference_agrees(args):
    """Inside a 5x5 image from (2, 2) the reference's extra row and column are clipped
    away, so both agree there (its own test cases)."""
    np.testing.assert_array_equal(masks.rectangular(*args), ref_masks.rectangular(*args))


@needs_reference
def test_rectangular_is_width_by_height():
    """|Width| columns and |Height| rows, leftwards/upwards for negative extents, clipped
    to the image; libertem-blobfinder 0.6.1 gives |Width| + 1 by |Height| + 1."""
    mask = masks.rectangular(1, 2, 2, 3, 6, 8)
    assert mask.shape == (8, 6) and mask.dtype == bool
    want = np.zeros((8, 6), bool)
    want[2:5, 1:3] = True
    np.testing.assert_array_equal(mask, want)
    assert ref_masks.rectangular(1, 2, 2, 3, 6, 8).sum() == 12  # the peer: 4 x 3
    want = np.zeros((8, 6), bool)
    want[1:3, 0:2] = True  # rows 1, 2 (upwards from 2), columns 0, 1 (leftwards from 1)
    np.testing.assert_array_equal(masks.rectangular(1, 2, -2, -2, 6, 8), want)
    assert not masks.rectangular(10, 10, 3, 3, 6, 8).any()  # outside: empty
    with pytest.raises(TypeError, match="Width must be an int; got 2.5"):
        masks.rectangular(1, 2, 2.5, 3, 6, 8)


@needs_reference
def test_balance():
    template = np.array([[1.0, -1, 2], [-3, 0, 4]])
    before = template.copy()
    got = masks.balance(template)
    np.testing.assert_array_equal(template, before)  # not modified
    assert abs(got.sum()) < 1e-12
    np.testing.assert_array_equal(got[template > 0], template[template > 0])
    np.testing.assert_allclose(got[template < 0], template[template < 0] * 7 / 4)
    np.testing.assert_allclose(got, ref_masks.balance(template))
    np.testing.assert_array_equal(masks.balance(np.array([1.0, 2.0])), [1.0, 2.0])
    np.testing.assert_array_equal(masks.balance(np.array([-1.0, -2.0])), [0.0, 0.0])
    # integers: a float result (the peer raises a casting error)
    np.testing.assert_array_equal(masks.balance(np.array([2, -1, -1])), [2.0, -1.0, -1.0])
    assert masks.balance(np.array([1.0, -2.0], np.float32)).dtype == np.float32
    with pytest.raises(TypeError, match="template must be a real-valued array"):
        masks.balance(np.array([1j]))


@needs_reference
def test_sparse_template_multi_stack_matches_reference():
    template = np.arange(6.0).reshape(2, 3)
    args = ((0, 1, 2, 1), (15, 14, -1, 30), (13, 14, 15, 31), template, 32, 33)
    got = masks.sparse_template_multi_stack(*args)
    want = ref_masks.sparse_template_multi_stack(*args)
    assert isinstance(got, sparse.COO) and got.shape == want.shape == (3, 33, 32)
    np.testing.assert_array_equal(dense(got), dense(want))
    # by the definition: mask 1 holds the template at (14, 14) and its clipped copy at
    # (31, 30)
    expected = np.zeros((33, 32))
    expected[14:16, 14:17] += template
    expected[31:33, 30:32] += template[:, :2]
    np.testing.assert_array_equal(dense(got)[1], expected)


def test_sparse_template_multi_stack_errors():
    with pytest.raises(ValueError, match="must have one length; got 2, 1 and 2"):
        masks.sparse_template_multi_stack((0, 1), (1,), (1, 2), np.ones((2, 2)), 8, 8)
    with pytest.raises(ValueError, match="mask_index must be >= 0; got -1"):
        masks.sparse_template_multi_stack((-1,), (1,), (1,), np.ones((2, 2)), 8, 8)
    with pytest.raises(TypeError, match="offsetX must be a 1-D sequence of ints"):
        masks.sparse_template_multi_stack((0,), (1.5,), (1,), np.ones((2, 2)), 8, 8)


@needs_reference
@pytest.mark.parametrize("name", ["Circular", "RadialGradient", "BackgroundSubtraction"])
def test_feature_vector_matches_reference(name):
    from gpucorr import patterns
    from libertem_blobfinder.common import patterns as ref_patterns
    peaks = np.array([[5, 6], [10, 3], [0, 0], [13, 15]])
    got = patterns.feature_vector(16, 14, peaks, getattr(patterns, name)(radius=2.5))
    want = ref_patterns.feature_vector(16, 14, peaks, getattr(ref_patterns, name)(radius=2.5))
    assert isinstance(got, sparse.COO) and got.shape == want.shape == (4, 14, 16)
    np.testing.assert_allclose(dense(got), dense(want), rtol=0, atol=1e-12)
    # by the definition: layer 0 is the crop-sized mask with its corner at peak - cs
    pattern = getattr(patterns, name)(radius=2.5)
    cs = pattern.get_crop_size()
    frame = np.zeros((14 + 4 * cs, 16 + 4 * cs))
    frame[2 * cs + 5 - cs:2 * cs + 5 + cs, 2 * cs + 6 - cs:2 * cs + 6 + cs] = \
        pattern.get_mask((2 * cs, 2 * cs))
    np.testing.assert_allclose(dense(got)[0], frame[2 * cs:2 * cs + 14, 2 * cs:2 * cs + 16])


@needs_reference
def test_sparse_circular_multi_stack():
    """Disks as circular() draws them, or-ed per layer; equal to the peer's for integer
    centres (the peer truncates fractional centres to integers first)."""
    rng = np.random.default_rng(0)
    for _ in range(10):
        idx = rng.integers(0, 3, 5)
        cx, cy = rng.integers(-3, 13, 5), rng.integers(-3, 12, 5)
        radius = rng.uniform(0, 5)
        got = masks.sparse_circular_multi_stack(idx, cx, cy, 10, 9, radius)
        want = ref_masks.sparse_circular_multi_stack(idx, cx, cy, 10, 9, radius)
        assert isinstance(got, sparse.COO) and got.dtype == bool
        np.testing.assert_array_equal(dense(got), dense(want))
    idx, cx, cy = [0, 1, 1], [3.4, 5.7, 1.2], [2.6, 6.1, -0.4]
    got = dense(masks.sparse_circular_multi_stack(idx, cx, cy, 10, 9, 2.3))
    np.testing.assert_array_equal(got[0], masks.circular(3.4, 2.6, 10, 9, 2.3))
    np.testing.assert_array_equal(
        got[1], masks.circular(5.7, 6.1, 10, 9, 2.3) | masks.circular(1.2, -0.4, 10, 9, 2.3))


@needs_reference
def test_bounding_radius_and_gradients_match_reference():
    for args in [(3, 4, 10, 12), (0, 0, 10, 12), (9.5, 11, 10, 12), (-3, 4, 10, 12),
                 (5, 5, 1, 1), (2.2, 7.9, 33, 5)]:
        assert masks.bounding_radius(*args) == ref_masks.bounding_radius(*args)
        # it covers the frame: every pixel centre lies within it
        y, x = np.mgrid[:args[3], :args[2]]
        assert np.hypot(y - args[1], x - args[0]).max() < masks.bounding_radius(*args)
    for dtype in (np.float32, np.float64):
        np.testing.assert_array_equal(masks.gradient_x(4, 3, dtype), ref_masks.gradient_x(4, 3,
                                                                                          dtype))
        np.testing.assert_array_equal(masks.gradient_y(4, 3, dtype), ref_masks.gradient_y(4, 3,
                                                                                          dtype))
        assert masks.gradient_x(4, 3, dtype).dtype == dtype
