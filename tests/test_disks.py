"""gpucorr.find_disks: per-frame disk detection against its definition, on synthetic
scans, batch by batch, and its argument checks."""
import numpy as np
import pytest

import gpucorr
from gpucorr import backends, patterns

PATTERN = patterns.Circular(radius=4)


def brute_force_maxima(m, k, s, min_relative, edge):
    """The definition of gpucorr.find_disks' maxima, transcribed directly: every pixel
    against every other pixel within the distance s."""
    h, w = m.shape
    ys, xs = np.mgrid[:h, :w]
    found = []
    for y in range(edge, h - edge):
        for x in range(edge, w - edge):
            near = ((ys - y) ** 2 + (xs - x) ** 2 <= s * s)
            near[y, x] = False
            later = (ys * w + xs) > (y * w + x)
            if np.all((m < m[y, x]) | ((m == m[y, x]) & later) | ~near):
                found.append((m[y, x], y * w + x))
    found.sort(key=lambda t: (-t[0], t[1]))
    if min_relative > 0 and found and found[0][0] > 0:
        found = [f for f in found if f[0] >= min_relative * found[0][0]]
    found = found[:k]
    return [(i // w, i % w) for _, i in found], [v for v, _ in found]


@pytest.mark.parametrize("seed", range(6))
def test_maxima_are_their_definition(seed):
    rng = np.random.default_rng(seed)
    n, h, w = 3, 23, 19
    # few distinct values: many ties and plateaus
    maps = rng.integers(-3, 4, (n, h, w)).astype(np.float32)
    maps[1] = rng.normal(size=(h, w))
    maps[2, :, :] = 1.0  # one plateau
    k, s, rel, edge = [(5, 1.0, 0.0, 0), (12, 2.5, 0.3, 1), (40, 1.5, 0.0, 3),
                       (3, 4.0, 0.9, 0), (7, 1.0, 1.0, 2), (50, 3.2, 0.5, 0)][seed]
    centers = np.empty((n, k, 2), np.int32)
    values = np.empty((n, k), np.float32)
    counts = np.empty(n, np.int32)
    backends.get_backend(np).find_maxima(maps, k, s, rel, edge, centers, values, counts)
    for i in range(n):
        want, want_values = brute_force_maxima(maps[i], k, s, rel, edge)
        assert counts[i] == len(want)
        np.testing.assert_array_equal(centers[i, :counts[i]], np.array(want).reshape(-1, 2))
        np.testing.assert_array_equal(values[i, :counts[i]], want_values)
        assert (centers[i, counts[i]:] == -1).all() and np.isnan(values[i, counts[i]:]).all()


def scan(rng, n_frames, size=128, radius=4, dose=None, all_equal=False):
    """Frames whose lattice moves and turns from frame to frame, and the true centres."""
    frames, truths = [], []
    for _ in range(n_frames):
        zero = np.array([size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)])
        angle = rng.uniform(0, np.pi / 2)
        length = rng.uniform(15, 18)
        a = length * np.array([np.cos(angle), np.sin(angle)])
        b = np.array([-a[1], a[0]])
        frame, _, true = gpucorr.cbed_frame(size, size, zero=zero, a=a, b=b, radius=radius,
                                            all_equal=all_equal, margin=radius,
                                            dose=dose, seed=int(rng.integers(1 << 30)))
        frames.append(frame[0])
        truths.append(true)
    return np.stack(frames).astype(np.float32), truths


def recall_and_error(res, truths, edge, size, tolerance=2.0):
    found = errors = total = 0
    for i, true in enumerate(truths):
        # disks whose maximum may fall on either side of the edge are not counted
        inside = np.all((true >= edge + 1) & (true < size - edge - 1), axis=1)
        true = true[inside]
        pos = res.positions[i, :res.counts[i]]
        d = np.linalg.norm(pos[:, None] - true[None], axis=-1)
        nearest = d.min(axis=0)
        found += int((nearest < tolerance).sum())
        errors += float((nearest[nearest < tolerance] ** 2).sum())
        total += len(true)
    return found / total, np.sqrt(errors / max(found, 1))


@pytest.mark.parametrize("all_equal, dose, max_error", [
    (True, None, 0.05), (False, None, 0.15), (False, 2e6, 0.2)])
def test_disks_of_moving_lattices_are_found(all_equal, dose, max_error):
    """Lattices that move and turn between frames, disks of equal or very different
    brightness (cbed_frame's default weights span about 160:1), with Poisson noise: every
    disk well inside the frame is found within 2 px, close to its true centre."""
    rng = np.random.default_rng(3)
    frames, truths = scan(rng, 6, dose=dose, all_equal=all_equal)
    edge = 8
    res = gpucorr.find_disks(frames, PATTERN, max_disks=80, edge=edge, upsample=20)
    recall, rms = recall_and_error(res, truths, edge, 128)
    assert recall == 1.0
    assert rms < max_error


def test_disks_at_the_border_follow_edge():
    frame, _, true = gpucorr.cbed_frame(96, 96, radius=4, all_equal=True, margin=-4)
    for edge in (0, 10):
        res = gpucorr.find_disks(frame, PATTERN, max_disks=100, edge=edge)
        centers = res.centers[0, :res.counts[0]]
        assert (centers >= edge).all() and (centers < 96 - edge).all()
    inner = gpucorr.find_disks(frame, PATTERN, max_disks=100, edge=10).counts[0]
    outer = gpucorr.find_disks(frame, PATTERN, max_disks=100, edge=0).counts[0]
    assert outer > inner


def test_disks_appear_and_vanish():
    """A frame without disks finds none above the threshold; frames with more or fewer
    disks find as many."""
    rng = np.random.default_rng(5)
    frames, truths = scan(rng, 2, all_equal=True)
    empty = np.zeros((128, 128), np.float32)
    few = np.zeros((128, 128), np.float32)
    few += gpucorr.cbed_frame(128, 128, zero=np.array([40.3, 50.7]), a=np.array([0, 30.0]),
                              b=np.array([30.0, 0]), indices=np.array([[0, 0], [1, 1]]),
                              radius=4, all_equal=True)[0][0]
    stack = np.stack([frames[0], empty, few, frames[1]])
    res = gpucorr.find_disks(stack, PATTERN, max_disks=80, edge=8, min_relative_height=0.5)
    assert res.counts[1] == 0 and res.counts[2] == 2
    for i, true in ((0, truths[0]), (3, truths[1])):
        inside = np.all((true >= 9) & (true < 119), axis=1)
        maybe = np.all((true >= 7) & (true < 121), axis=1)
        assert inside.sum() <= res.counts[i] <= maybe.sum()
    assert res.mask.sum(axis=1).tolist() == res.counts.tolist()


@pytest.mark.parametrize("upsample, subpixel", [(False, "com"), (7, "com"),
                                              (False, "quadratic")])
def test_a_frames_disks_do_not_depend_on_the_batch(upsample, subpixel):
    rng = np.random.default_rng(11)
    frames, _ = scan(rng, 5, dose=1e6)
    kwargs = dict(max_disks=50, edge=6, upsample=upsample, min_elevation=0.01,
                  min_height=0.0, subpixel=subpixel)
    stack = gpucorr.find_disks(frames, PATTERN, workers=2, memory_limit=1, **kwargs)
    for i in (0, 4):
        alone = gpucorr.find_disks(frames[i], PATTERN, workers=1, **kwargs)
        for a, b in zip((stack.positions, stack.centers, stack.heights, stack.elevations,
                         stack.counts), (alone.positions, alone.centers, alone.heights,
                                         alone.elevations, alone.counts)):
            np.testing.assert_array_equal(a[i], b)


def test_without_upsampling_the_disks_are_refines_full_mode_at_their_centres():
    """The centre of mass and the height of a found disk are what refine's full mode gives
    for that disk (the same correlation map, the same evaluation)."""
    rng = np.random.default_rng(2)
    frames, _ = scan(rng, 2, dose=1e6)
    res = gpucorr.find_disks(frames, PATTERN, max_disks=40, edge=10)
    for i in range(2):
        n = res.counts[i]
        ref = gpucorr.refine(frames[i], res.centers[i, :n].astype(np.int64), PATTERN,
                             mode="full")
        np.testing.assert_array_equal(ref.centers, res.centers[i, :n])
        np.testing.assert_allclose(ref.refineds, res.positions[i, :n], atol=1e-5)
        np.testing.assert_allclose(ref.heights, res.heights[i, :n], rtol=1e-6)


@pytest.mark.parametrize("option, scores, kept", [
    ("min_elevation", "elevations", np.greater_equal), ("min_height", "heights", np.greater)])
def test_thresholds_drop_disks_and_keep_the_rank(option, scores, kept):
    rng = np.random.default_rng(4)
    frames, _ = scan(rng, 3, dose=1e5)
    every = gpucorr.find_disks(frames, PATTERN, max_disks=80)
    threshold = float(np.nanmedian(getattr(every, scores)))
    strong = gpucorr.find_disks(frames, PATTERN, max_disks=80, **{option: threshold})
    for i in range(3):
        keep = kept(getattr(every, scores)[i, :every.counts[i]], threshold)
        assert 0 < strong.counts[i] == keep.sum() < every.counts[i]
        for name in ("centers", "heights", "elevations"):
            np.testing.assert_array_equal(getattr(strong, name)[i, :strong.counts[i]],
                                          getattr(every, name)[i, :every.counts[i]][keep])
        assert np.all(np.diff(strong.heights[i, :strong.counts[i]]) <= 0)
    assert np.all(gpucorr.find_disks(frames, PATTERN, max_disks=80,
                                     **{option: 1e30}).counts == 0)


@pytest.mark.parametrize("pattern", [PATTERN, patterns.DiskEdge(radius=4)])
def test_min_height_at_a_disks_own_height_leaves_it_out(pattern):
    """"not above": the cut compares the heights as reported (float32)."""
    frame, _, _ = gpucorr.cbed_frame(128, 128, radius=4, dose=1e6, seed=3)
    every = gpucorr.find_disks(frame, pattern, max_disks=60, upsample=True)
    for i in range(min(18, int(every.counts[0]) - 1)):
        height = float(every.heights[0, i])
        res = gpucorr.find_disks(frame, pattern, max_disks=60, upsample=True,
                                 min_height=height)
        assert res.counts[0] == np.count_nonzero(every.heights[0] > height) <= i, i


def test_min_height_leaves_out_the_maxima_between_disk_edge_disks():
    """DiskEdge's template sums to < 0: between the disks its map has maxima at about 0,
    which min_height=0 leaves out, keeping every disk (even the faintest of 160:1)."""
    frame, _, true = gpucorr.cbed_frame(128, 128, radius=4, all_equal=False)
    inside = true[np.all((true >= 6) & (true < 122), axis=1)]
    edge = patterns.DiskEdge(radius=4)
    every = gpucorr.find_disks(frame, edge, max_disks=60, edge=6, upsample=True)
    assert every.counts[0] > len(inside)          # the maxima between the disks
    res = gpucorr.find_disks(frame, edge, max_disks=60, edge=6, upsample=True, min_height=0)
    n = int(res.counts[0])
    assert n == len(inside)
    distance = np.linalg.norm(res.positions[0, :n, None] - inside[None], axis=-1)
    assert distance.min(axis=1).max() < 0.05 and distance.min(axis=0).max() < 0.05
    np.testing.assert_array_equal(res.centers[0, :n], every.centers[0, :n])
    assert np.all(every.heights[0, n:every.counts[0]] <= 0) and np.all(res.heights[0, :n] > 0)
    assert np.all(res.centers[0, n:] == -1) and np.all(np.isnan(res.positions[0, n:]))


@pytest.mark.parametrize("pattern", [PATTERN, patterns.RadialGradient(radius=4),
                                     patterns.BackgroundSubtraction(radius=4)])
def test_maxima_that_rounding_leaves_on_flat_parts_are_left_out(pattern):
    """Blank margins: rounding of the float32 maps leaves dozens of maxima of elevation 0
    or about 1e-7 of the highest there. By default (min_relative_elevation=1e-6) exactly
    the disks are found; with 0 every maximum is kept, and the default keeps those of them
    whose elevation is above 0 and at least 1e-6 of the highest, in rank order."""
    frame, _, true = gpucorr.cbed_frame(128, 128, radius=4, all_equal=False, margin=20)
    res = gpucorr.find_disks(frame, pattern, max_disks=100)
    n = int(res.counts[0])
    assert n == len(true)
    distance = np.linalg.norm(res.positions[0, :n, None] - true[None], axis=-1)
    assert distance.min(axis=1).max() < 1 and distance.min(axis=0).max() < 1
    every = gpucorr.find_disks(frame, pattern, max_disks=100, min_relative_elevation=0)
    m = int(every.counts[0])
    assert m > n + 20
    e = every.elevations[0, :m]
    keep = (e > 0) & (e >= np.float32(1e-6) * e.max())
    np.testing.assert_array_equal(res.centers[0, :n], every.centers[0, :m][keep])


@pytest.mark.gpu
def test_gpu_leaves_out_the_same_flat_maxima():
    import cupy
    frame, _, _ = gpucorr.cbed_frame(128, 128, radius=4, all_equal=False, margin=20)
    frames = np.concatenate([frame, np.zeros_like(frame)]).astype(np.float32)
    cpu = gpucorr.find_disks(frames, PATTERN, max_disks=100)
    gpu = gpucorr.find_disks(cupy.asarray(frames), PATTERN, max_disks=100)
    np.testing.assert_array_equal(cupy.asnumpy(gpu.counts), cpu.counts)
    np.testing.assert_array_equal(cupy.asnumpy(gpu.centers), cpu.centers)
    assert cpu.counts.tolist() == [25, 0]


def test_a_blank_frame_has_no_disks():
    blank = np.zeros((2, 64, 64), np.float32)
    assert np.all(gpucorr.find_disks(blank, PATTERN, max_disks=5).counts == 0)
    # by the maxima's definition alone, the first pixel of a flat map is one
    assert np.all(gpucorr.find_disks(blank, PATTERN, max_disks=5,
                                     min_relative_elevation=0).counts == 1)


def test_a_spacing_or_edge_beyond_the_frame_is_the_frame():
    """A spacing beyond the frame's diagonal, or an edge beyond its size, means what the
    diagonal or the size means (no overflow in the kernels)."""
    frame, _, _ = gpucorr.cbed_frame(64, 64, radius=4)
    diagonal = gpucorr.find_disks(frame, PATTERN, max_disks=5, min_spacing=float(np.hypot(64, 64)))
    for spacing in (1e10, 1e20, 1e300):
        far = gpucorr.find_disks(frame, PATTERN, max_disks=5, min_spacing=spacing)
        for name in ("positions", "centers", "heights", "elevations", "counts"):
            np.testing.assert_array_equal(getattr(far, name), getattr(diagonal, name))
        assert far.counts[0] == 1
    for edge in (64, 10 ** 6, 10 ** 19, 10 ** 30):
        assert gpucorr.find_disks(frame, PATTERN, max_disks=5, edge=edge).counts[0] == 0


def test_results_keep_the_scan_axes():
    frames = np.zeros((2, 3, 64, 64), np.float32)
    frames[..., 30:35, 30:35] = 1
    res = gpucorr.find_disks(frames, PATTERN, max_disks=4)
    assert res.positions.shape == (2, 3, 4, 2) and res.counts.shape == (2, 3)
    assert res.mask.shape == (2, 3, 4) and "max_disks=4" in repr(res)


def test_per_peak_templates_are_refused():
    templates = np.zeros((3, 8, 8))
    templates[:, 2:6, 2:6] = 1
    with pytest.raises(TypeError, match="got PeakTemplates .one template per peak., which "
                                        "only gpucorr.refine takes"):
        gpucorr.find_disks(np.zeros((64, 64), np.float32), patterns.PeakTemplates(templates),
                           max_disks=5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(max_disks=0), ValueError, "max_disks must be an int >= 1; got 0"),
    (dict(max_disks=2.5), TypeError, "max_disks must be an int >= 1"),
    (dict(max_disks=5, min_spacing=-2), ValueError, "min_spacing must be a finite number >= 1"),
    (dict(max_disks=5, min_spacing=0.5), ValueError, "min_spacing must be a finite number >= 1"),
    (dict(max_disks=5, min_spacing="4"), TypeError, "min_spacing must be a real number"),
    (dict(max_disks=5, min_relative_height=1.5), ValueError,
     r"min_relative_height must be in \[0, 1\]; got 1.5"),
    (dict(max_disks=5, min_relative_height=-0.1), ValueError, "min_relative_height must be in"),
    (dict(max_disks=5, min_elevation=-1), ValueError, "min_elevation must be a finite number"),
    (dict(max_disks=5, min_height="0"), TypeError,
     "min_height must be a real number; got '0' of type str"),
    (dict(max_disks=5, min_height=True), TypeError, "min_height must be a real number"),
    (dict(max_disks=5, min_height=float("nan")), ValueError,
     r"min_height must be finite; got nan"),
    (dict(max_disks=5, min_height=-float("inf")), ValueError, "min_height must be finite"),
    (dict(max_disks=64 * 64 + 1), ValueError,
     "max_disks must be at most the frames' 64x64 = 4096 pixels; got 4097"),
    (dict(max_disks=5, min_relative_elevation=2), ValueError,
     r"min_relative_elevation must be in \[0, 1\]; got 2"),
    (dict(max_disks=5, min_relative_elevation="0"), TypeError,
     "min_relative_elevation must be a real number in"),
    (dict(max_disks=5, edge=-1), ValueError, "edge must be an int >= 0"),
    (dict(max_disks=5, edge=2.5), ValueError, "edge must be an int >= 0"),
    (dict(max_disks=5, upsample=1.5), TypeError, "upsample"),
    (dict(max_disks=5, scaling="sqrt"), ValueError, "scaling must be one of"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        gpucorr.find_disks(np.zeros((64, 64), np.float32), PATTERN, **kwargs)


def test_the_frames_are_not_modified():
    rng = np.random.default_rng(8)
    frames, _ = scan(rng, 2, dose=1e6)
    before = frames.copy()
    gpucorr.find_disks(frames, PATTERN, max_disks=10, upsample=5)
    np.testing.assert_array_equal(frames, before)


@pytest.mark.gpu
@pytest.mark.parametrize("upsample, subpixel, pattern, min_height", [
    (False, "com", PATTERN, None), (7, "com", PATTERN, None),
    (False, "quadratic", PATTERN, None), (7, "com", patterns.DiskEdge(radius=4), 1.0)])
def test_gpu_finds_the_cpus_disks(upsample, subpixel, pattern, min_height):
    """(DiskEdge: min_height leaves out its maxima between the disks, which sit at the
    rounding level of the maps, where CPU and GPU may rank them differently.)"""
    import cupy
    rng = np.random.default_rng(6)
    frames, _ = scan(rng, 3, dose=1e6)
    kwargs = dict(max_disks=50, edge=6, upsample=upsample, subpixel=subpixel,
                  min_height=min_height)
    cpu = gpucorr.find_disks(frames, pattern, **kwargs)
    for given in (cupy.asarray(frames), frames):
        gpu = gpucorr.find_disks(given, pattern, device="cuda", **kwargs)
        np.testing.assert_array_equal(cupy.asnumpy(cupy.asarray(gpu.counts)), cpu.counts)
        np.testing.assert_array_equal(cupy.asnumpy(cupy.asarray(gpu.centers)), cpu.centers)
        np.testing.assert_allclose(cupy.asnumpy(cupy.asarray(gpu.positions)), cpu.positions,
                                   atol=1e-3)
        np.testing.assert_allclose(cupy.asnumpy(cupy.asarray(gpu.heights)), cpu.heights,
                                   rtol=1e-4)


def test_elevations_are_peak_elevation_within_the_spacing():
    """evaluate_at's elevation is the CPU kernel set's peak_elevation limited to the
    pixels closer than the spacing (computed here over the whole map)."""
    from gpucorr.backends._numba import peak_elevation, refine_center
    rng = np.random.default_rng(9)
    maps = rng.normal(size=(2, 40, 36)).astype(np.float32)
    k, s = 6, 3.5
    centers = np.empty((2, k, 2), np.int32)
    values = np.empty((2, k), np.float32)
    counts = np.empty(2, np.int32)
    kernels = backends.get_backend(np)
    kernels.find_maxima(maps, k, s, 0.0, 0, centers, values, counts)
    out = (np.empty((2, k, 2), np.float32), np.empty((2, k), np.float32),
           np.empty((2, k), np.float32))
    kernels.evaluate_at(maps, centers, counts, np.array([0.5, -2.0]), s, *out)
    for n in range(2):
        for i in range(counts[n]):
            ry, rx = refine_center(tuple(centers[n, i]), 2, maps[n])
            best = maps[n][tuple(centers[n, i])]
            assert out[2][n, i] == peak_elevation((ry, rx), maps[n], best, 1.5, s)
            assert out[1][n, i] == np.float32(best + [0.5, -2.0][n])


# ---------------------------------------------------------------- subpixel="quadratic"

def test_the_quadratic_vertex_of_an_exact_quadratic_peak():
    """On a map that is a quadratic around its maximum the vertex is exact; at the border
    the neighbourhood wraps, as the (periodic) map does; where the 3x3 fit is not a
    maximum the centre of mass stays."""
    from gpucorr.pipeline.disks import _quadratic
    h, w = 12, 14
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    maps, centers, want = [], [], []
    for y0, x0, cy, cx in ((5.3, 6.8, 5, 7), (0.2, 13.4, 0, 13)):
        dy = (y - y0 + h / 2) % h - h / 2            # periodic distances
        dx = (x - x0 + w / 2) % w - w / 2
        maps.append(10 - (1.5 * dy ** 2 + 0.8 * dx ** 2 + 0.6 * dx * dy))
        centers.append([[cy, cx]])
        want.append([[y0, x0]])
    saddle = np.zeros((h, w))
    saddle[4:7, 4:7] = [[0, 1, 0], [1, 2, 1], [0, 1, 0]]
    saddle[5, 4] = saddle[5, 6] = 5.0                 # rises along x: not a maximum
    maps.append(saddle)
    centers.append([[5, 5]])
    want.append([[-7.0, -7.0]])                        # the given (centre of mass) stays
    maps = np.stack(maps).astype(np.float32)
    centers = np.array(centers, np.int32)
    positions = np.full((3, 1, 2), -7.0, np.float32)
    _quadratic(np, maps, centers, np.array([1, 1, 1], np.int32), positions)
    np.testing.assert_allclose(positions, np.array(want, np.float32), atol=2e-5)


def test_quadratic_is_more_accurate_than_the_centre_of_mass():
    rng = np.random.default_rng(3)
    frames, truth = scan(rng, 4, dose=1e6)
    errors = {}
    for subpixel in ("com", "quadratic"):
        res = gpucorr.find_disks(frames, PATTERN, max_disks=50, edge=6, subpixel=subpixel)
        err = []
        for i in range(len(frames)):
            found = np.asarray(res.positions[i, :res.counts[i]], np.float64)
            d = np.linalg.norm(found[:, None] - truth[i][None], axis=-1).min(axis=1)
            err.append(d[d < 2])
        errors[subpixel] = float(np.sqrt(np.mean(np.concatenate(err) ** 2)))
    assert errors["quadratic"] < 0.06 and errors["quadratic"] < errors["com"] / 2, errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(subpixel="poly"), "subpixel must be 'com' or 'quadratic'"),
    (dict(subpixel="quadratic", upsample=20), "subpixel='quadratic' refines without"),
])
def test_bad_subpixel_is_refused(kwargs, match):
    frames, _ = scan(np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match=match):
        gpucorr.find_disks(frames, PATTERN, max_disks=5, **kwargs)
