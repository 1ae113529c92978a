"""Tests for gpucorr.masks and gpucorr.patterns, with libertem-blobfinder as oracle."""
import math

import numpy as np
import pytest

from gpucorr import masks, patterns

from helpers import optional_modules

# the reference: the tests that compare with it take needs_reference
ref_masks, ref_patterns, needs_reference = optional_modules(
    "libertem_blobfinder.base.masks", "libertem_blobfinder.common.patterns")

RADII = [2, 4, 5.5, 8]
EVEN_SHAPES = [(32, 32), (48, 64)]
ODD_SHAPES = [(33, 31), (17, 40), (31, 31)]
SHAPES = EVEN_SHAPES + ODD_SHAPES
BUILTIN = ["Circular", "RadialGradient", "BackgroundSubtraction"]


def shape_id(shape):
    return "x".join(map(str, shape))


# ---------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------

GEOMETRIES = [
    (4, 4, 9, 9),
    (3.3, 5.7, 11, 8),
    (6.5, 2.5, 13, 7),
    (0, 0, 5, 6),
    (10.2, -1.5, 8, 12),
]


@needs_reference
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("stretch, angle", [(1., 0.), (2., 0.7), (0.5, np.pi / 4)])
def test_polar_map_matches_reference(geometry, stretch, angle):
    expected = ref_masks.polar_map(*geometry, stretchY=stretch, angle=angle)
    got = masks.polar_map(*geometry, stretchY=stretch, angle=angle)
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        assert g.dtype == np.float64
        np.testing.assert_array_equal(g, e)


@needs_reference
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("radius", [0.3, 1, 2, 3.7])
@pytest.mark.parametrize("antialiased", [False, True], ids=["hard", "aa"])
@pytest.mark.parametrize("name", ["circular", "radial_gradient"])
def test_disk_masks_match_reference(name, geometry, radius, antialiased):
    expected = getattr(ref_masks, name)(*geometry, radius, antialiased=antialiased)
    got = getattr(masks, name)(*geometry, radius, antialiased=antialiased)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@needs_reference
@pytest.mark.parametrize("geometry", GEOMETRIES[:4], ids=str)
@pytest.mark.parametrize("radius_inner, radius", [(0, 2), (0.3, 2.5), (1, 3), (2.2, 4.9)])
@pytest.mark.parametrize("antialiased", [False, True], ids=["hard", "aa"])
@pytest.mark.parametrize("name", ["ring", "background_subtraction"])
def test_ring_masks_match_reference(name, geometry, radius, radius_inner, antialiased):
    expected = getattr(ref_masks, name)(
        *geometry, radius, radius_inner, antialiased=antialiased
    )
    got = getattr(masks, name)(*geometry, radius, radius_inner, antialiased=antialiased)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@needs_reference
@pytest.mark.parametrize("r0, r_outer, delta", [(3, 5, 1), (2.5, 2, 1), (4, 7.5, 2.5), (3, 6, 0)])
def test_radial_gradient_background_subtraction_mask_matches_reference(r0, r_outer, delta):
    r = np.random.default_rng(1).uniform(0, 9, size=(13, 11))
    r_copy = r.copy()
    expected = ref_masks.radial_gradient_background_subtraction(r, r0, r_outer, delta)
    got = masks.radial_gradient_background_subtraction(r, r0, r_outer, delta)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(r, r_copy)


def test_antialiased_disk_closed_form():
    # Away from the centre pixel the antialiased disk is clip(R + 0.5 - r, 0, 1).
    r, _ = masks.polar_map(5.3, 4.6, 12, 10)
    disk = masks.circular(5.3, 4.6, 12, 10, 3.2, antialiased=True)
    expected = np.clip(3.2 + 0.5 - r, 0, 1)
    expected[5, 5] = 1
    np.testing.assert_allclose(disk, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: masks.circular(2, 2, 0, 5, 1), ValueError,
         r"imageSizeX must be a positive int; got 0"),
        (lambda: masks.circular(2, 2, 5, 5.0, 1), TypeError,
         r"imageSizeY must be a positive int; got 5.0"),
        (lambda: masks.circular(2, 2, 5, 5, -1), ValueError, r"radius must be >= 0; got -1"),
        (lambda: masks.circular("2", 2, 5, 5, 1), TypeError, r"centerX must be a real number"),
        (lambda: masks.circular(2, np.nan, 5, 5, 1), ValueError, r"centerY must be finite"),
        (lambda: masks.radial_gradient(2, 2, 5, 5, 0), ValueError, r"radius must be > 0; got 0"),
        (lambda: masks.ring(2, 2, 5, 5, 1, 2), ValueError, r"radius_inner must be <= radius"),
        (lambda: masks.background_subtraction(2, 2, 5, 5, 2, 2), ValueError,
         r"radius must be > radius_inner; got radius=2, radius_inner=2"),
        (lambda: masks.polar_map(2, 2, 5, 5, stretchY=0), ValueError,
         r"stretchY must be non-zero"),
        (lambda: masks.radial_gradient_background_subtraction(np.ones(3), 2, 3, -1),
         ValueError, r"delta must be >= 0; got -1"),
        (lambda: masks.radial_gradient_background_subtraction(np.ones(3) * 1j, 2, 3),
         TypeError, r"r must be a real-valued array"),
    ],
)
def test_mask_validation(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------
# patterns: agreement with the reference
# ---------------------------------------------------------------------------

@needs_reference
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("radius", RADII)
@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_patterns_match_reference(name, radius, shape):
    ours = getattr(patterns, name)(radius)
    ref = getattr(ref_patterns, name)(radius)
    assert ours.radius == ref.radius
    assert ours.search == ref.search
    assert ours.get_crop_size() == ref.get_crop_size()
    mask = ours.get_mask(shape)
    assert mask.shape == shape
    assert mask.dtype == np.float64
    np.testing.assert_array_equal(mask, ref.get_mask(shape))
    np.testing.assert_allclose(
        ours.get_template(shape), ref.get_template(shape), rtol=0, atol=1e-12
    )


@needs_reference
@pytest.mark.parametrize("radius, radius_outer", [(3, 5), (2.5, 7.25), (4, None)])
def test_background_subtraction_attributes(radius, radius_outer):
    ours = patterns.BackgroundSubtraction(radius, radius_outer=radius_outer)
    ref = ref_patterns.BackgroundSubtraction(radius, radius_outer=radius_outer)
    assert (ours.radius, ours.radius_outer, ours.search) == (
        ref.radius, ref.radius_outer, ref.search
    )
    np.testing.assert_array_equal(ours.get_mask((40, 40)), ref.get_mask((40, 40)))


@needs_reference
@pytest.mark.parametrize("shape", EVEN_SHAPES + [(20, 24)], ids=shape_id)
@pytest.mark.parametrize(
    "radius, kwargs",
    [
        (2, {}),                                # radius_outer 3
        (4, {}),                                # radius_outer 6
        (8, {}),                                # radius_outer 12
        (4, {"radius_outer": 7, "delta": 2}),
        (5.5, {"radius_outer": 9}),             # max radius is an integer
        (3, {"radius_outer": 6, "search": 10, "delta": 0.5}),
    ],
    ids=str,
)
def test_radial_gradient_background_subtraction_matches_reference(radius, kwargs, shape):
    # With integer max(radius, radius_outer) the default radial map is the same
    # as the reference's; for even shapes the placement is too.
    ours = patterns.RadialGradientBackgroundSubtraction(radius, **kwargs)
    ref = ref_patterns.RadialGradientBackgroundSubtraction(radius, **kwargs)
    for attr in ("radius", "radius_outer", "delta", "search"):
        assert getattr(ours, attr) == getattr(ref, attr)
    np.testing.assert_array_equal(ours.radial_map, ref.radial_map)
    np.testing.assert_array_equal(ours.template, ref.template)
    assert ours.get_crop_size() == ref.get_crop_size()
    np.testing.assert_array_equal(ours.get_mask(shape), ref.get_mask(shape))


@needs_reference
@pytest.mark.parametrize("shape", EVEN_SHAPES, ids=shape_id)
def test_radial_gradient_background_subtraction_custom_map(shape):
    r, _ = masks.polar_map(16, 16, 32, 32, stretchY=2., angle=np.pi / 4)
    ours = patterns.RadialGradientBackgroundSubtraction(radius=5, radial_map=r)
    ref = ref_patterns.RadialGradientBackgroundSubtraction(radius=5, radial_map=r)
    assert ours.radial_map is r
    np.testing.assert_array_equal(ours.get_mask(shape), ref.get_mask(shape))


@needs_reference
@pytest.mark.parametrize("shape", EVEN_SHAPES + [(20, 6)], ids=shape_id)
@pytest.mark.parametrize("template_shape", [(6, 8), (4, 4), (40, 70)], ids=shape_id)
def test_user_template_even_sizes_match_reference(template_shape, shape):
    template = np.random.default_rng(2).normal(size=template_shape)
    ours = patterns.UserTemplate(template)
    ref = ref_patterns.UserTemplate(template)
    assert ours.search == ref.search
    assert ours.get_crop_size() == ref.get_crop_size()
    np.testing.assert_array_equal(ours.get_mask(shape), ref.get_mask(shape))


@needs_reference
@pytest.mark.parametrize(
    "source, target, agrees",
    [
        (6, 10, True), (5, 9, True), (6, 9, True),    # pad: even/even, odd/odd, even->odd
        (5, 10, False),                               # pad odd -> even: reference one before
        (10, 6, True), (9, 5, True), (9, 6, True),    # crop: even/even, odd/odd, odd->even
        (10, 5, False),                               # crop even -> odd: reference one after
    ],
    ids=str,
)
def test_user_template_placement_vs_reference_by_parity(source, target, agrees):
    template = np.zeros((source, 4))
    template[source // 2, 2] = 1
    ours = patterns.UserTemplate(template).get_mask((target, 8))
    ref = ref_patterns.UserTemplate(template).get_mask((target, 8))
    assert ours[target // 2, 4] == 1
    assert np.array_equal(ours, ref) == agrees
    if not agrees:
        expected_row = target // 2 - 1 if source < target else target // 2 + 1
        assert ref[expected_row, 4] == 1


def test_user_template_custom_search():
    pattern = patterns.UserTemplate(np.ones((3, 5)), search=7.5)
    assert pattern.search == 7.5
    assert pattern.get_crop_size() == 8


# ---------------------------------------------------------------------------
# patterns: deliberate differences from the reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES + [(4, 5), (1, 1)], ids=shape_id)
@pytest.mark.parametrize(
    "template_shape", [(3, 3), (5, 7), (9, 4), (1, 1), (41, 35)], ids=shape_id
)
def test_user_template_hot_pixel_lands_on_centre(template_shape, shape):
    template = np.zeros(template_shape, dtype=np.float32)
    template[template_shape[0] // 2, template_shape[1] // 2] = 1
    mask = patterns.UserTemplate(template).get_mask(shape)
    assert mask.shape == shape
    assert mask.dtype == np.float32
    assert mask.sum() == 1
    assert mask[shape[0] // 2, shape[1] // 2] == 1


@needs_reference
def test_reference_user_template_is_off_by_one_for_odd_templates():
    # Documents the fault we correct: the reference pads an odd template into
    # an even frame with the extra pixel at the end, so the centre moves.
    template = np.zeros((3, 3))
    template[1, 1] = 1
    ref_mask = ref_patterns.UserTemplate(template).get_mask((8, 8))
    assert ref_mask[4, 4] == 0
    assert ref_mask[3, 3] == 1
    assert patterns.UserTemplate(template).get_mask((8, 8))[4, 4] == 1


@pytest.mark.parametrize("shape", [(9, 12), (12, 9), (3, 2), (30, 31)], ids=shape_id)
def test_user_template_asymmetric_placement(shape):
    template = np.arange(35, dtype=np.int64).reshape(5, 7) + 1
    mask = patterns.UserTemplate(template).get_mask(shape)
    assert mask.dtype == np.int64
    oy = shape[0] // 2 - 5 // 2
    ox = shape[1] // 2 - 7 // 2
    expected = np.zeros(shape, dtype=np.int64)
    for i in range(5):
        for j in range(7):
            y, x = i + oy, j + ox
            if 0 <= y < shape[0] and 0 <= x < shape[1]:
                expected[y, x] = template[i, j]
    np.testing.assert_array_equal(mask, expected)


def test_user_template_input_not_modified_and_not_shared():
    template = np.random.default_rng(3).normal(size=(8, 8))
    copy = template.copy()
    pattern = patterns.UserTemplate(template)
    assert pattern.template is template
    for shape in [(8, 8), (16, 12), (5, 5)]:
        mask = pattern.get_mask(shape)
        mask[...] = 42
        assert not np.shares_memory(mask, template)
    np.testing.assert_array_equal(template, copy)


def test_user_template_accepts_lists_and_bool():
    pattern = patterns.UserTemplate([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert pattern.template.shape == (3, 3)
    mask = patterns.UserTemplate(np.eye(3, dtype=bool)).get_mask((4, 4))
    assert mask.dtype == bool
    assert mask[2, 2] and mask[1, 1] and mask[3, 3]


@pytest.mark.parametrize("radius", [2.5, 5.5, 4.2, 7.9])
@pytest.mark.parametrize("shape", [(32, 32), (33, 31), (24, 40)], ids=shape_id)
def test_radial_gradient_background_subtraction_default_map_is_pixel_centred(radius, shape):
    pattern = patterns.RadialGradientBackgroundSubtraction(radius)
    c = math.ceil(max(radius, 1.5 * radius)) + 1
    assert pattern.radial_map.shape == (2 * c, 2 * c)
    assert pattern.radial_map[c, c] == 0
    mask = pattern.get_mask(shape)
    cy, cx = shape[0] // 2, shape[1] // 2
    k = min(cy, cx, shape[0] - 1 - cy, shape[1] - 1 - cx)
    window = mask[cy - k:cy + k + 1, cx - k:cx + k + 1]
    # Mirror-symmetric about the centre pixel in both axes, and nothing lost
    # outside the window.
    np.testing.assert_array_equal(window, window[::-1, :])
    np.testing.assert_array_equal(window, window[:, ::-1])
    np.testing.assert_array_equal(window, window.T)
    assert mask.sum() == pytest.approx(window.sum())
    assert mask[cy, cx] == 0


@needs_reference
def test_reference_default_map_is_off_centre_for_non_integer_radius():
    # The fault we correct: for a non-integer radius the reference map is
    # centred between pixels.
    ref = ref_patterns.RadialGradientBackgroundSubtraction(5.5)
    assert ref.radial_map.min() > 0
    ours = patterns.RadialGradientBackgroundSubtraction(5.5)
    assert ours.radial_map.min() == 0


def test_radial_gradient_background_subtraction_recomputes_on_change():
    pattern = patterns.RadialGradientBackgroundSubtraction(4)
    before = pattern.get_mask((32, 32))
    pattern.radius_outer = 7
    pattern.delta = 2
    after = pattern.get_mask((32, 32))
    # radial_map is kept (as in the reference); the other parameters apply.
    expected = patterns.RadialGradientBackgroundSubtraction(
        4, radius_outer=7, delta=2, radial_map=pattern.radial_map
    )
    np.testing.assert_array_equal(after, expected.get_mask((32, 32)))
    assert not np.array_equal(before, after)


# ---------------------------------------------------------------------------
# patterns: validation
# ---------------------------------------------------------------------------

ALL_RADIUS_PATTERNS = BUILTIN + ["RadialGradientBackgroundSubtraction"]


@pytest.mark.parametrize("name", ALL_RADIUS_PATTERNS)
@pytest.mark.parametrize(
    "radius, exc, match",
    [
        (-1, ValueError, r"radius must be > 0; got -1"),
        (0, ValueError, r"radius must be > 0; got 0"),
        (np.nan, ValueError, r"radius must be finite; got nan"),
        (np.inf, ValueError, r"radius must be finite; got inf"),
        ("3", TypeError, r"radius must be a real number; got '3' of type str"),
        (None, TypeError, r"radius must be a real number; got None"),
        (True, TypeError, r"radius must be a real number; got True"),
    ],
    ids=str,
)
def test_radius_validation(name, radius, exc, match):
    with pytest.raises(exc, match=match):
        getattr(patterns, name)(radius)


@needs_reference
@pytest.mark.parametrize("name", ["Circular", "RadialGradient"])
def test_search_must_contain_radius(name):
    # same condition as the reference
    with pytest.raises(ValueError):
        getattr(ref_patterns, name)(4, search=3)
    with pytest.raises(ValueError, match=r"search must be >= radius .*got search=3, radius=4"):
        getattr(patterns, name)(4, search=3)
    assert getattr(patterns, name)(4, search=4).search == 4


@needs_reference
@pytest.mark.parametrize("name", ["BackgroundSubtraction", "RadialGradientBackgroundSubtraction"])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"radius_outer": 4}, r"radius_outer must be > radius; got radius_outer=4, radius=4"),
        ({"radius_outer": 3}, r"radius_outer must be > radius; got radius_outer=3, radius=4"),
        ({"radius_outer": 8, "search": 7},
         r"search must be >= radius_outer .*got search=7, radius_outer=8"),
    ],
    ids=str,
)
def test_outer_radius_conditions(name, kwargs, match):
    with pytest.raises(ValueError):
        getattr(ref_patterns, name)(4, **kwargs)
    with pytest.raises(ValueError, match=match):
        getattr(patterns, name)(4, **kwargs)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"search": -2}, ValueError, r"search must be > 0; got -2"),
        ({"search": "x"}, TypeError, r"search must be a real number"),
        ({"radius_outer": np.nan}, ValueError, r"radius_outer must be finite"),
        ({"delta": -1}, ValueError, r"delta must be >= 0; got -1"),
        ({"radial_map": np.ones((4, 4)) * 1j}, TypeError,
         r"radial_map must be a real-valued array"),
        ({"radial_map": np.ones(4)}, ValueError, r"radial_map must be a 2-D array; got 1-D"),
        ({"radial_map": np.full((4, 4), np.nan)}, ValueError,
         r"radial_map must contain only finite"),
    ],
    ids=str,
)
def test_rgbs_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        patterns.RadialGradientBackgroundSubtraction(4, **kwargs)


@pytest.mark.parametrize(
    "template, exc, match",
    [
        (np.ones((3, 3, 3)), ValueError,
         r"template must be a 2-D array; got 3-D array of shape \(3, 3, 3\)"),
        (np.ones(5), ValueError, r"template must be a 2-D array; got 1-D"),
        (np.ones((3, 3), dtype=complex), TypeError,
         r"template must be a real-valued array .*complex"),
        (np.array([["a", "b"]]), TypeError, r"template must be a real-valued array .*non-numeric"),
        (np.zeros((0, 3)), ValueError, r"template must not be empty; got shape \(0, 3\)"),
        (np.array([[1.0, np.nan]]), ValueError, r"template must contain only finite values"),
        (np.array([[1.0, np.inf]]), ValueError, r"template must contain only finite values"),
        ([[1, 2], [3]], TypeError, r"template must be a real-valued array"),
    ],
    ids=["3d", "1d", "complex", "str", "empty", "nan", "inf", "ragged"],
)
def test_user_template_validation(template, exc, match):
    with pytest.raises(exc, match=match):
        patterns.UserTemplate(template)


@pytest.mark.parametrize(
    "pattern",
    [
        patterns.Circular(2),
        patterns.RadialGradient(2),
        patterns.BackgroundSubtraction(2),
        patterns.UserTemplate(np.ones((3, 3))),
        patterns.RadialGradientBackgroundSubtraction(2),
    ],
    ids=lambda p: type(p).__name__,
)
@pytest.mark.parametrize(
    "shape, exc, match",
    [
        ((0, 4), ValueError, r"sig_shape must contain two positive ints; got \(0, 4\)"),
        ((4,), ValueError, r"sig_shape must have two entries \(height, width\); got \(4,\)"),
        ((4, 4, 4), ValueError, r"sig_shape must have two entries"),
        ((4.0, 4), TypeError, r"sig_shape must contain two positive ints; got \(4.0, 4\)"),
        (4, TypeError, r"sig_shape must be a sequence of two positive ints; got 4"),
    ],
    ids=str,
)
def test_sig_shape_validation(pattern, shape, exc, match):
    with pytest.raises(exc, match=match):
        pattern.get_mask(shape)


def test_sig_shape_accepts_numpy_ints():
    mask = patterns.Circular(2).get_mask((np.int64(8), np.int32(6)))
    assert mask.shape == (8, 6)


def test_match_pattern_base():
    base = patterns.MatchPattern(search=3.2)
    assert base.search == 3.2
    assert base.get_crop_size() == 4
    with pytest.raises(NotImplementedError, match="MatchPattern must implement get_mask"):
        base.get_mask((8, 8))
    with pytest.raises(ValueError, match=r"search must be > 0; got 0"):
        patterns.MatchPattern(search=0)
