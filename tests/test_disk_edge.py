"""DiskEdge, the edge template, and fit_edge_radius, the radius it needs."""
import numpy as np
import pytest

import gpucorr
from gpucorr import patterns
from gpucorr.synthetic import cbed_frame

from helpers import assert_results_match


def _lattice(radius=8.0, size=160, shifts=((0.0, 0.0),)):
    """cbed_frame lattices shifted by sub-pixel ``shifts``: frames, true centres, and the
    rounded centres of the unshifted lattice (the start positions)."""
    zero = (size // 2, size // 2)
    _, indices, start = cbed_frame(fy=size, fx=size, radius=radius, zero=zero)
    frames, truth = [], []
    for dy, dx in shifts:
        data, _, peaks = cbed_frame(fy=size, fx=size, radius=radius, indices=indices,
                                    zero=(zero[0] + dy, zero[1] + dx))
        frames.append(data[0])
        truth.append(peaks)
    return np.stack(frames), np.stack(truth), np.rint(start).astype(np.int64)


def _ramp_disk(size, center, radius, tilt, n=8):
    """A disk brighter on one side, I = 1 + tilt * (x - cx) / radius inside, drawn by
    n x n samples per pixel (the kind of contrast dynamical diffraction puts in disks)."""
    o = (np.arange(n) + 0.5) / n - 0.5
    y = np.arange(size)[:, None, None, None] + o[None, None, :, None] - center[0]
    x = np.arange(size)[None, :, None, None] + o[None, None, None, :] - center[1]
    inside = (y ** 2 + x ** 2) <= radius ** 2
    return (inside * (1 + tilt * x / radius)).mean(axis=(2, 3))


def test_the_template_is_an_edge_centred_on_the_radius():
    p = patterns.DiskEdge(radius=5.0, width=0.8)
    mask = p.get_mask((24, 24))
    row = mask[12, 12:]
    assert np.all(row[1:5] > 0) and abs(row[5]) < 1e-12 and np.all(row[6:9] < 0)
    # symmetric about the radius along a row (the profile is odd in rho - radius)
    np.testing.assert_allclose(row[5 - 2:5][::-1], -row[6:6 + 2], rtol=1e-12)
    assert p.default_scaling == "none"
    assert p.search == 10 and patterns.DiskEdge(radius=1.0, width=0.7).search == pytest.approx(3.1)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(radius="5"), TypeError, "radius must be a real number"),
    (dict(radius=0), ValueError, "radius"),
    (dict(radius=5, width=0), ValueError, "width"),
    (dict(radius=5, width=np.nan), ValueError, "width must be finite"),
    (dict(radius=5, width=None), TypeError, "width must be a real number"),
    (dict(radius=5, search=4), ValueError, "search must be >= radius"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        patterns.DiskEdge(**kwargs)


def test_flat_disks_are_found_to_a_few_thousandths_of_a_pixel():
    frames, truth, start = _lattice(shifts=((0.23, -0.41), (-0.37, 0.12), (0.05, 0.48)))
    res = gpucorr.refine(frames, start, patterns.DiskEdge(radius=8.0, search=11), upsample=20,
                         workers=1)
    err = np.asarray(res.refineds, np.float64) - truth
    assert np.sqrt(np.mean(np.sum(err ** 2, axis=-1))) < 0.005


def test_contrast_inside_a_disk_pulls_the_edge_much_less_than_a_solid_disk():
    center = (20.3, 19.6)
    frame = _ramp_disk(40, center, 8.0, tilt=0.8)
    start = np.array([[20, 20]])
    edge = gpucorr.refine(frame, start, patterns.DiskEdge(radius=8.0, search=12), upsample=20)
    solid = gpucorr.refine(frame, start, patterns.Circular(radius=8.0, search=12), upsample=20)
    edge_err = np.abs(np.asarray(edge.refineds[0], np.float64) - center)
    solid_err = np.abs(np.asarray(solid.refineds[0], np.float64) - center)
    assert solid_err[1] > 0.4           # the solid disk follows the brightness
    # the edge's inner lobe still sees the brightness gradient next to the edge
    assert edge_err[0] < 0.01 and edge_err[1] < solid_err[1] / 3


def test_results_do_not_depend_on_the_batch():
    frames, _, start = _lattice(shifts=((0.23, -0.41), (-0.37, 0.12), (0.05, 0.48)))
    pattern = patterns.DiskEdge(radius=8.0)
    stack = gpucorr.refine(frames, start, pattern, upsample=20, workers=2, memory_limit=1)
    for i in range(len(frames)):
        alone = gpucorr.refine(frames[i], start, pattern, upsample=20, workers=1)
        for a, b in zip(stack, alone):
            np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b))


def test_the_command_line_knows_the_pattern():
    from gpucorr.cli.options import PATTERNS
    assert getattr(patterns, PATTERNS["disk-edge"]) is patterns.DiskEdge


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_gpu_gives_the_cpus_answers(mode):
    import cupy
    frames, _, start = _lattice(size=96, radius=5.0, shifts=((0.2, -0.3), (-0.4, 0.1)))
    pattern = patterns.DiskEdge(radius=5.0)
    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(start), pattern, mode=mode, upsample=7)
    expected = gpucorr.refine(frames, start, pattern, mode=mode, upsample=7)
    assert_results_match([cupy.asnumpy(a) for a in got], expected)


# ---------------------------------------------------------------- fit_edge_radius

@pytest.mark.parametrize("radius", [5.0, 8.0, 11.5])
def test_the_edge_radius_of_flat_disks(radius):
    frames, _, start = _lattice(radius=radius, size=200, shifts=((0.3, -0.2), (-0.1, 0.4)))
    before = frames.copy()
    got = gpucorr.fit_edge_radius(frames, start, radius - 0.4)
    # a ring's response peaks about width**2 / radius outside a sharp edge
    assert radius < got < radius + 0.7 ** 2 / radius + 0.08
    np.testing.assert_array_equal(frames, before)


def test_scans_and_single_frames_are_read():
    frames, _, start = _lattice(shifts=((0.3, -0.2), (-0.1, 0.4), (0.2, 0.2), (0.0, -0.3)))
    scan = frames.reshape(2, 2, *frames.shape[-2:])
    one = gpucorr.fit_edge_radius(scan, start, 8.3, max_frames=4)
    assert one == gpucorr.fit_edge_radius(frames, start, 8.3)
    assert 8.0 < gpucorr.fit_edge_radius(scan[:, ::-1], start, 8.3, max_frames=1) < 8.2
    assert 8.0 < gpucorr.fit_edge_radius(frames[0], start, 8.3) < 8.2


@pytest.mark.gpu
def test_gpu_measures_the_cpus_radius():
    import cupy
    frames, _, start = _lattice(shifts=((0.3, -0.2), (-0.1, 0.4)))
    expected = gpucorr.fit_edge_radius(frames, start, 8.3)
    for given in (cupy.asarray(frames), frames):
        got = gpucorr.fit_edge_radius(given, start, 8.3, device="cuda")
        assert isinstance(got, float)
        assert abs(got - expected) < 2e-3, (got, expected)


def test_a_list_of_frames_is_a_stack():
    frames, _, start = _lattice(shifts=((0.3, -0.2), (-0.1, 0.4)))
    expected = gpucorr.fit_edge_radius(frames, start, 8.3)
    assert gpucorr.fit_edge_radius(list(frames), start, 8.3) == expected
    assert gpucorr.fit_edge_radius(tuple(frames), start, 8.3) == expected


def test_the_radii_tried_stay_within_span():
    frames, _, start = _lattice()
    # span 1.0 in steps of 0.6: radii 7.7, 8.3, 8.9 (not 7.1 to 9.5)
    got = gpucorr.fit_edge_radius(frames, start, 8.3, span=1.0, step=0.6)
    assert 7.7 < got < 8.9
    with pytest.raises(ValueError, match=r"radii tried \(8.9 to 10.1 px\)"):
        gpucorr.fit_edge_radius(frames, start, 9.5, span=1.0, step=0.6)


def test_a_guess_too_far_off_is_refused():
    frames, _, start = _lattice()
    with pytest.raises(ValueError, match="peaks at the end of the radii tried"):
        gpucorr.fit_edge_radius(frames, start, 5.5, span=0.5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(span=0), ValueError, "span must be > 0; got 0"),
    (dict(span="1"), TypeError, "span must be a real number"),
    (dict(step=2.0), ValueError, "step must be <= span"),
    (dict(step=True), TypeError, "step must be a real number"),
    (dict(max_frames=0), ValueError, "max_frames must be an int >= 1"),
    (dict(max_frames=2.0), TypeError, "max_frames must be an int >= 1"),
    (dict(width=-1), ValueError, "width"),
    (dict(radius=0.5), ValueError, "radius must be > span"),
    (dict(step=1e-9), ValueError, r"span / step must be at most 100 .one refine call per "
                                  r"radius tried, 201 at most.; got span=1.0, step=1e-09"),
    (dict(search=8.5), ValueError, r"search must be >= the largest radius tried, radius \+ "
                                   r"span = 9 px; got search=8.5"),
    (dict(search="12"), TypeError, "search must be a real number; got '12' of type str"),
])
def test_bad_options_are_refused(kwargs, error, match):
    frames, _, start = _lattice()
    args = dict(radius=8.0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        gpucorr.fit_edge_radius(frames, start, **args)
