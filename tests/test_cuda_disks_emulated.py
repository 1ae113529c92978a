"""kernels/maxima.cu (``find_maxima``, ``evaluate_at``) against the definition of a maximum
and the CPU kernel set.

Each test runs the launchers of :mod:`gpucorr.backends._cuda_disks` twice:

* ``[emulator]``: in the CPU emulator of the kernel sources (tests/cuda_emulator.py,
  through :func:`fake_cupy.run_on_device`), in every run, as tests/test_cuda_emulated.py;
* ``[cupy]`` (marked ``gpu``): on ``cupy``, which is a GPU under ``pytest --gpu`` and the
  CPU stand-in (the same emulator, ``BLOCK = 32``) under ``pytest --fake-gpu -m gpu``.

Only a ``[cupy]`` run under ``--gpu`` is a GPU result; the others are emulation.

References:

* ``find_maxima``: :func:`reference_maxima`, a direct NumPy transcription of the rule
  (every pixel against every pixel within the spacing, no shortcut), for the integer
  outputs exactly; the values are the map's, so they are compared exactly too. The
  distance rule is ``dy^2 + dx^2 <= s^2`` in float64, as both kernel sets compute it
  (for s = sqrt(13) it excludes the pixels at distance sqrt(13), which a
  ``hypot(dy, dx) <= s`` would include: the test at that spacing pins the convention).
* ``evaluate_at``: :func:`gpucorr.backends._numba.refine_center` and
  :func:`~gpucorr.backends._numba.peak_elevation` per centre (the CPU evaluate's own
  functions), with the tolerances of tests/test_cuda_emulated.py: refined positions
  ``2**-22`` (the CUDA window subtracts its minimum in the map dtype, the CPU one in
  float64), heights ``rtol = 2**-22``, elevations ``rtol = 2**-19``.
"""
import numpy as np
import pytest

import cuda_emulator
import fake_cupy
from fake_cupy import run_on_device
from gpucorr.backends import _cuda, _cuda_disks, _numba

RTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
RTYPE_IDS = ["float32", "float64"]


def _on_cupy(func, *args):
    """``func`` on ``cupy`` (a GPU, or the stand-in under --fake-gpu) with host arrays moved
    there and the written ones copied back."""
    import cupy
    moved = [cupy.asarray(a) if isinstance(a, np.ndarray) and a.ndim else a for a in args]
    result = func(*moved)
    cupy.cuda.get_current_stream().synchronize()
    for a, d in zip(args, moved):
        if d is not a and a.flags.writeable:
            a[...] = cupy.asnumpy(d)
    return result


@pytest.fixture(params=[pytest.param("emulator", id="emulator"),
                        pytest.param("cupy", id="cupy", marks=pytest.mark.gpu)])
def launch(request):
    """How a test runs a launcher: ``launch(func, *host_arrays_and_scalars)``."""
    if request.param == "cupy":
        return _on_cupy
    reason = cuda_emulator.unavailable_reason()
    if reason is not None:
        pytest.skip(f"CUDA emulator unavailable: {reason}")
    return run_on_device


# --------------------------------------------------------------------------------------
# the definition, transcribed
# --------------------------------------------------------------------------------------

def reference_maxima(m, k, s, min_relative, edge):
    """(centers (k, 2), values (k,), count) of one map by the definition, brute force.

    Pixel p is a maximum iff edge <= y < H - edge, edge <= x < W - edge, and every other
    pixel q with dy^2 + dx^2 <= s^2 has value[q] < value[p], or value[q] == value[p] and a
    larger C index. Ranked by value descending, ties by C index; where min_relative > 0
    and the largest maximum ``top`` is positive, only those with value >=
    min_relative * top; the first k.
    """
    h, w = m.shape
    y, x = np.mgrid[:h, :w]
    is_max = (y >= edge) & (y < h - edge) & (x >= edge) & (x < w - edge)
    s2 = float(s) * float(s)
    reach = min(max(h, w), int(np.floor(s)))
    # every pixel q = p + (dy, dx) within s of p, for all p at once
    for dy in range(-min(reach, h - 1), min(reach, h - 1) + 1):
        for dx in range(-min(reach, w - 1), min(reach, w - 1) + 1):
            if (dy == 0 and dx == 0) or float(dy * dy + dx * dx) > s2:
                continue
            ps = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
            qs = slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx))
            later = dy > 0 or (dy == 0 and dx > 0)       # q after p in C order
            is_max[ps] &= (m[qs] < m[ps]) | ((m[qs] == m[ps]) & later)
    v = m.ravel()
    maxima = np.flatnonzero(is_max)
    ranked = maxima[np.lexsort((maxima, -v[maxima].astype(np.float64)))]
    if min_relative > 0 and ranked.size and float(v[ranked[0]]) > 0:
        top = float(v[ranked[0]])
        ranked = ranked[v[ranked].astype(np.float64) >= min_relative * top]
    kept = ranked[:k]
    centers = np.full((k, 2), -1, np.int32)
    values = np.full(k, np.nan, m.dtype)
    centers[:kept.size] = np.stack(np.divmod(kept, w), axis=-1)
    values[:kept.size] = v[kept]
    return centers, values, kept.size


def run_find_maxima(launch, maps, k, s, min_relative, edge):
    n = maps.shape[0]
    centers = np.full((n, k, 2), -777, np.int32)          # stale values
    values = np.full((n, k), 777, maps.dtype)
    counts = np.full(n, -777, np.int32)
    launch(_cuda_disks.find_maxima, maps, k, s, min_relative, edge, centers, values, counts)
    return centers, values, counts


def assert_maxima_match(launch, maps, k, s, min_relative, edge):
    """find_maxima == the definition on every map; returns the kernel's outputs."""
    centers, values, counts = run_find_maxima(launch, maps, k, s, min_relative, edge)
    for n, m in enumerate(maps):
        ref_centers, ref_values, ref_count = reference_maxima(m, k, s, min_relative, edge)
        where = f"map {n}, k={k}, s={s}, min_relative={min_relative}, edge={edge}"
        assert counts[n] == ref_count, where
        np.testing.assert_array_equal(centers[n], ref_centers, err_msg=where)
        np.testing.assert_array_equal(values[n], ref_values, err_msg=where)   # NaN == NaN
    return centers, values, counts


# --------------------------------------------------------------------------------------
# maps
# --------------------------------------------------------------------------------------

def smooth_maps(n, h, w, rng, n_peaks=12):
    """Zero-mean maps with Gaussian disks' correlation peaks, a little noise."""
    y, x = np.mgrid[:h, :w].astype(np.float64)
    out = np.empty((n, h, w))
    for b in range(n):
        m = rng.normal(0, 0.02, (h, w))
        for cy, cx, a in zip(rng.uniform(-1, h, n_peaks), rng.uniform(-1, w, n_peaks),
                             rng.uniform(0.2, 1.0, n_peaks)):
            m += a * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 4.0)
        out[b] = m - m.mean()
    return out


def tricky_maps(h, w, rng):
    """Ties, plateaus, maxima on edges and corners, flat, negative and zero maps."""
    maps = [rng.standard_normal((h, w)),                      # many maxima
            rng.integers(0, 3, (h, w)).astype(np.float64),    # ties and plateaus everywhere
            np.zeros((h, w)),                                 # all equal: only (0, 0)
            np.full((h, w), -2.5),                            # all equal, negative
            rng.standard_normal((h, w)) - 10.0,               # all negative: no relative cut
            np.minimum(rng.standard_normal((h, w)), 0.0)]     # largest maximum exactly 0
    m = rng.standard_normal((h, w)) * 0.1
    m[0, 0] = m[0, -1] = m[-1, 0] = m[-1, -1] = 3.0           # corners
    m[0, w // 2] = m[h // 2, 0] = m[h - 1, w // 3] = m[h // 3, w - 1] = 2.0   # edges
    maps.append(m)
    m = rng.standard_normal((h, w)) * 0.1
    m[3:6, 4:8] = 1.0                                         # plateau: its first pixel
    m[h - 4, 2] = m[h - 4, 4] = 1.0                           # equal, 2 apart
    m[8, w - 3] = m[9, w - 2] = 1.0                           # equal diagonal neighbours
    maps.append(m)
    m = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2).astype(np.float64)
    maps.append(m + rng.normal(0, 1e-3, (h, w)))              # checkerboard: 1 in 2 pass 3x3
    maps.append(-m)                                           # checkerboard ties
    return np.stack(maps)


# --------------------------------------------------------------------------------------
# find_maxima
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("rtype", RTYPES, ids=RTYPE_IDS)
def test_find_maxima_every_instantiation(rtype, launch, rng):
    maps = smooth_maps(3, 23, 29, rng).astype(rtype)
    counts = assert_maxima_match(launch, maps, 8, 3.5, 0.1, 2)[2]
    assert (counts > 0).all()
    if launch is run_on_device:
        assert cuda_emulator.launches[-1].expression == f"find_maxima<{_cuda.C_TYPES[rtype]}>"


@pytest.mark.parametrize("s", [1.0, np.sqrt(2.0), 1.9, 2.0, 2.5, np.sqrt(13.0), 4.7])
@pytest.mark.parametrize("rtype", RTYPES, ids=RTYPE_IDS)
def test_find_maxima_tricky_maps(s, rtype, launch, rng):
    """Random, quantised (ties, plateaus), flat, negative and edge maxima, at spacings with
    and without diagonals and beyond the 3x3 window."""
    maps = tricky_maps(17, 19, rng).astype(rtype)
    for k, min_relative, edge in ((5, 0.0, 0), (40, 0.3, 1), (1, 1.0, 3)):
        assert_maxima_match(launch, maps, k, s, min_relative, edge)


def test_find_maxima_flat_maps(launch):
    """All equal: (0, 0) is the only maximum (every other pixel has an earlier one
    within the spacing); with an edge, none."""
    maps = np.stack([np.zeros((9, 12)), np.full((9, 12), 4.0), np.full((9, 12), -1.0)])
    centers, _, counts = assert_maxima_match(launch, maps, 3, 1.0, 0.5, 0)
    np.testing.assert_array_equal(counts, 1)
    np.testing.assert_array_equal(centers[:, 0], 0)
    np.testing.assert_array_equal(centers[:, 1:], -1)
    _, _, counts = assert_maxima_match(launch, maps, 3, 2.0, 0.5, 1)
    np.testing.assert_array_equal(counts, 0)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_find_maxima_buffer_cut_and_rounds(k, launch, rng, monkeypatch):
    """More candidates than the buffer holds: with the smallest buffer (2 k + BLOCK rounded
    up to a power of two) a 64 x 61 checkerboard has about 2000 candidates, so the block
    cuts the buffer to its best k and packs a tile in several rounds, and the result is
    still exact."""
    monkeypatch.setattr(_cuda_disks, "MAXIMA_MIN_CAPACITY", 1)
    h, w = 64, 61
    board = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2).astype(np.float64)
    maps = np.stack([board + rng.uniform(0, 0.5, (h, w)),          # s = 1: 1 in 2 a maximum
                     board * 0,                                      # flat
                     rng.integers(0, 2, (h, w)).astype(np.float64),  # ties
                     rng.standard_normal((h, w))])
    capacity = _cuda_disks.maxima_capacity(k, _cuda.BLOCK)
    assert capacity < h * w / 2 - 100
    for s, edge in ((1.0, 0), (1.5, 2), (2.2, 1)):
        assert_maxima_match(launch, maps, k, s, 0.0, edge)
    assert_maxima_match(launch, maps.astype(np.float32), k, 1.0, 0.9, 0)


@pytest.mark.parametrize("rtype", RTYPES, ids=RTYPE_IDS)
def test_find_maxima_scratch_in_device_memory(rtype, launch, rng, monkeypatch):
    """Where the buffer does not fit in shared memory it is a device array, one buffer a
    block, and blocks stride over the maps: the same results."""
    maps = np.concatenate([smooth_maps(3, 20, 21, rng), tricky_maps(20, 21, rng)[:4]])
    maps = maps.astype(rtype)
    in_shared = run_find_maxima(launch, maps, 6, 2.5, 0.2, 1)
    monkeypatch.setattr(_cuda, "FAST_SHARED_BYTES", 0)
    monkeypatch.setattr(_cuda, "MAX_GRID", 2)
    monkeypatch.setattr(_cuda_disks, "MAXIMA_MIN_CAPACITY", 1)
    in_device = assert_maxima_match(launch, maps, 6, 2.5, 0.2, 1)
    for a, b in zip(in_shared, in_device):
        np.testing.assert_array_equal(a, b)
    if launch is run_on_device:
        record = cuda_emulator.launches[-1]
        assert record.grid == 2 and record.shared_mem == 4 * _cuda.BLOCK
    # scratch for one block only: one block takes every map in turn
    monkeypatch.setattr(_cuda_disks, "MAXIMA_SCRATCH_BYTES", 1)
    one_block = assert_maxima_match(launch, maps, 6, 2.5, 0.2, 1)
    for a, b in zip(in_shared, one_block):
        np.testing.assert_array_equal(a, b)
    if launch is run_on_device:
        assert cuda_emulator.launches[-1].grid == 1


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (2, 2), (3, 40), (33, 35)])
def test_find_maxima_geometry(shape, launch, rng):
    """Tiny and thin maps, and a map larger than one tile of BLOCK * 8 pixels at the
    stand-in's BLOCK = 32; edges that leave nothing."""
    maps = np.stack([rng.standard_normal(shape), np.zeros(shape)])
    for s, edge in ((1.0, 0), (3.0, 0), (1.5, 1), (2.0, 40)):
        assert_maxima_match(launch, maps, 4, s, 0.0, edge)


def test_find_maxima_huge_spacing_and_edge(launch, rng):
    maps = rng.standard_normal((2, 6, 7))
    _, _, counts = assert_maxima_match(launch, maps, 3, 1e300, 0.0, 0)
    np.testing.assert_array_equal(counts, 1)                   # the global maximum only
    _, _, counts = assert_maxima_match(launch, maps, 3, 2.0, 0.0, 2**31 - 1)
    np.testing.assert_array_equal(counts, 0)


def test_find_maxima_nan_map(launch):
    """An all-NaN map (a bad frame): no pixel beats another, so every interior pixel is
    a maximum, ranked in C order, values NaN (and no relative cut)."""
    maps = np.full((1, 5, 6), np.nan)
    centers, values, counts = run_find_maxima(launch, maps, 4, 2.0, 0.5, 1)
    assert counts[0] == 4
    np.testing.assert_array_equal(centers[0], [[1, 1], [1, 2], [1, 3], [1, 4]])
    assert np.isnan(values).all()


def test_find_maxima_matches_numba(launch, rng):
    """The CPU kernel set's find_maxima gives the same outputs (exactly)."""
    _numba_disks = pytest.importorskip("gpucorr.backends._numba_disks")
    maps = np.concatenate([smooth_maps(2, 18, 20, rng), tricky_maps(18, 20, rng)])
    for rtype in RTYPES:
        for k, s, min_relative, edge in ((6, 2.5, 0.2, 1), (30, 1.0, 0.0, 0),
                                         (3, np.sqrt(13.0), 0.5, 2)):
            m = maps.astype(rtype)
            got = run_find_maxima(launch, m, k, s, min_relative, edge)
            ref = (np.zeros((len(m), k, 2), np.int32), np.zeros((len(m), k), rtype),
                   np.zeros(len(m), np.int32))
            _numba_disks.find_maxima(m, k, s, min_relative, edge, *ref)
            for a, b in zip(got, ref):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change, error, match", [
    (dict(k=0), ValueError, r"max_disks must be >= 1; got 0"),
    (dict(s=0.5), ValueError, r"min_spacing must be >= 1; got 0.5"),
    (dict(s=np.nan), ValueError, r"min_spacing must be >= 1; got nan"),
    (dict(edge=-1), ValueError, r"edge must be >= 0; got -1"),
    (dict(values=np.zeros((2, 3), np.float64)), TypeError, r"out_values must be .* float32"),
    (dict(centers=np.zeros((2, 4, 2), np.int32)), ValueError,
     r"out_centers must have shape \(2, 3, 2\); got \(2, 4, 2\)"),
    (dict(maps=np.zeros((2, 5, 5), np.int32)), TypeError, r"maps must be a float32 or float64"),
])
def test_find_maxima_argument_errors(change, error, match):
    args = dict(maps=np.zeros((2, 5, 5), np.float32), k=3, s=2.0, min_relative=0.5, edge=0,
                centers=np.zeros((2, 3, 2), np.int32), values=np.zeros((2, 3), np.float32),
                counts=np.zeros(2, np.int32))
    args.update(change)
    with pytest.raises(error, match=match):
        run_on_device(_cuda_disks.find_maxima, *args.values())


def test_empty_batch_launches_nothing():
    cuda_emulator.launches.clear()
    run_on_device(_cuda_disks.find_maxima, np.zeros((0, 4, 4), np.float32), 2, 1.0, 0.0, 0,
                  np.zeros((0, 2, 2), np.int32), np.zeros((0, 2), np.float32),
                  np.zeros(0, np.int32))
    run_on_device(_cuda_disks.evaluate_at, np.zeros((2, 4, 4), np.float32),
                  np.zeros((2, 0, 2), np.int32), np.zeros(2, np.int32), np.zeros(2), 3.0,
                  np.zeros((2, 0, 2), np.float32), np.zeros((2, 0), np.float32),
                  np.zeros((2, 0), np.float32))
    assert cuda_emulator.launches == []


# --------------------------------------------------------------------------------------
# evaluate_at
# --------------------------------------------------------------------------------------

def reference_evaluate_at(maps, centers, counts, offsets, radius):
    """The CPU evaluate's refine_center and peak_elevation at each centre."""
    n, k = centers.shape[:2]
    refineds = np.full((n, k, 2), np.nan, np.float32)
    heights = np.full((n, k), np.nan, np.float32)
    elevations = np.full((n, k), np.nan, np.float32)
    for b in range(n):
        m = maps[b]
        for i in range(min(int(counts[b]), k)):
            cy, cx = int(centers[b, i, 0]), int(centers[b, i, 1])
            ry, rx = _numba.refine_center((cy, cx), 2, m)
            refineds[b, i] = ry, rx
            heights[b, i] = m[cy, cx] + offsets[b]
            elevations[b, i] = _numba.peak_elevation((ry, rx), m, m[cy, cx], 1.5, radius)
    return refineds, heights, elevations


def assert_evaluate_at_matches(launch, maps, centers, counts, offsets, radius):
    n, k = centers.shape[:2]
    outs = (np.full((n, k, 2), 777, np.float32), np.full((n, k), 777, np.float32),
            np.full((n, k), 777, np.float32))
    launch(_cuda_disks.evaluate_at, maps, centers, counts, offsets, radius, *outs)
    refs = reference_evaluate_at(maps, centers, counts, offsets, radius)
    np.testing.assert_allclose(outs[0], refs[0], rtol=2 ** -22, atol=2 ** -22)
    np.testing.assert_allclose(outs[1], refs[1], rtol=2 ** -22)
    np.testing.assert_allclose(outs[2], refs[2], rtol=2 ** -19)
    return outs


@pytest.mark.parametrize("radius", [np.inf, 2.0, 4.5, 9.0])
@pytest.mark.parametrize("rtype", RTYPES, ids=RTYPE_IDS)
def test_evaluate_at_found_maxima(rtype, radius, launch, rng):
    """At the maxima find_maxima's reference finds: counts below k, 0 and k."""
    maps = np.concatenate([smooth_maps(3, 21, 23, rng), tricky_maps(21, 23, rng)[[0, 1, 6, 7]]])
    maps = maps.astype(rtype)
    k = 6
    centers = np.full((len(maps), k, 2), -1, np.int32)
    counts = np.zeros(len(maps), np.int32)
    for b, m in enumerate(maps):
        centers[b], _, counts[b] = reference_maxima(m, k, 3.0, 0.2, 0)
    counts[1] = 0
    counts[2] = min(counts[2], 2)
    offsets = rng.standard_normal(len(maps)) * 1e3
    outs = assert_evaluate_at_matches(launch, maps, centers, counts, offsets, radius)
    if np.isinf(radius):
        # away from the global maximum a higher pixel lies in range: elevation 0
        assert (outs[2][0, 1:counts[0]] == 0).all()
    elif radius <= 3.0:
        # within the spacing every pixel is lower
        assert (outs[2][0, :counts[0]] > 0).all()
    if launch is run_on_device:
        assert cuda_emulator.launches[-1].expression == f"evaluate_at<{_cuda.C_TYPES[rtype]}>"


def test_evaluate_at_edges_and_corners(launch, rng):
    """Centres on the edges, corners and one pixel in (windows of radius 0 and 1), flat
    windows, NaN and -inf pixels near a centre, counts above k (all valid)."""
    h, w = 12, 14
    maps = rng.standard_normal((3, h, w))
    maps[1, :4, :4] = 0.5                                      # flat window at (1, 1)
    maps[2, 5, 6] = np.nan
    maps[2, 8, 9] = -np.inf
    centers = np.array([[[0, 0], [h - 1, w - 1], [0, 7], [6, 0], [1, 1], [h - 2, 5]]] * 3,
                       np.int32)
    centers[2, 4] = [6, 7]                                     # NaN at distance 1
    centers[2, 5] = [7, 9]                                     # -inf at distance 1
    counts = np.array([6, 9, 6], np.int32)
    for radius in (np.inf, 3.0, np.nan):
        assert_evaluate_at_matches(launch, maps, centers, counts, np.zeros(3), radius)
        assert_evaluate_at_matches(launch, maps.astype(np.float32), centers, counts,
                                   np.ones(3), radius)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 3), (20, 17)])
def test_evaluate_at_small_maps_and_threads(shape, launch, rng):
    """No pixel at d >= 1.5 (elevation inf), windows clipped; maps of more pixels than a
    block has threads."""
    h, w = shape
    maps = rng.random((2, h, w)).astype(np.float32)
    k = 3
    centers = np.stack([rng.integers(0, h, (2, k)), rng.integers(0, w, (2, k))],
                       axis=-1).astype(np.int32)
    counts = np.array([k, 1], np.int32)
    outs = assert_evaluate_at_matches(launch, maps, centers, counts, np.zeros(2), np.inf)
    if h * w <= 4:
        assert np.isinf(outs[2][0]).all()


def test_evaluate_at_device_centres_are_converted(launch, rng):
    """int64 centres and counts, float32 offsets: the launcher makes them the kernel's."""
    maps = rng.random((2, 8, 9))
    centers = np.array([[[4, 4], [2, 6]], [[1, 1], [0, 0]]], np.int64)
    counts = np.array([2, 1], np.int64)
    outs = (np.zeros((2, 2, 2), np.float32), np.zeros((2, 2), np.float32),
            np.zeros((2, 2), np.float32))
    launch(_cuda_disks.evaluate_at, maps, centers, counts, np.array([1.5, -2.0], np.float32),
           5.0, *outs)
    refs = reference_evaluate_at(maps, centers, counts, [1.5, -2.0], 5.0)
    np.testing.assert_allclose(outs[0], refs[0], rtol=2 ** -22, atol=2 ** -22)
    np.testing.assert_allclose(outs[2], refs[2], rtol=2 ** -19)


def test_evaluate_at_matches_numba(launch, rng):
    """The CPU kernel set's evaluate_at, at finite radii (its square around the centre
    is then the same set of pixels)."""
    _numba_disks = pytest.importorskip("gpucorr.backends._numba_disks")
    maps = np.concatenate([smooth_maps(3, 19, 22, rng), tricky_maps(19, 22, rng)[[0, 1, 6]]])
    k = 5
    centers = np.full((len(maps), k, 2), -1, np.int32)
    counts = np.zeros(len(maps), np.int32)
    for b, m in enumerate(maps):
        centers[b], _, counts[b] = reference_maxima(m, k, 2.5, 0.0, 0)
    offsets = rng.standard_normal(len(maps))
    for rtype in RTYPES:
        for radius in (2.5, 6.0):
            outs = [np.zeros((len(maps), k, 2), np.float32), np.zeros((len(maps), k), np.float32),
                    np.zeros((len(maps), k), np.float32)]
            refs = [np.zeros_like(o) for o in outs]
            m = maps.astype(rtype)
            launch(_cuda_disks.evaluate_at, m, centers, counts, offsets, radius, *outs)
            _numba_disks.evaluate_at(m, centers, counts, offsets, radius, *refs)
            np.testing.assert_allclose(outs[0], refs[0], rtol=2 ** -22, atol=2 ** -22)
            np.testing.assert_allclose(outs[1], refs[1], rtol=2 ** -22)
            np.testing.assert_allclose(outs[2], refs[2], rtol=2 ** -19)


# --------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------

def test_registered_in_the_cuda_kernel_set():
    assert _cuda.find_maxima is _cuda_disks.find_maxima
    assert _cuda.evaluate_at is _cuda_disks.evaluate_at
    assert _cuda.kernel_expressions()["maxima.cu"] == _cuda_disks.maxima_expressions()
    params = cuda_emulator.kernel_signature(_cuda.kernel_source("maxima.cu"),
                                            "find_maxima<double>")
    assert [repr(p) for p in params[-3:]] == ["int* out_centers", "double* out_values",
                                              "int* out_counts"]
    from gpucorr.backends import get_backend
    with fake_cupy.installed() as cupy:
        backend = get_backend(cupy)
        assert backend.find_maxima is _cuda_disks.find_maxima
        assert backend.evaluate_at is _cuda_disks.evaluate_at


def test_capacity():
    assert _cuda_disks.maxima_capacity(1, 256) == 1024
    assert _cuda_disks.maxima_capacity(500, 256) == 2048
    assert _cuda_disks.maxima_capacity(1000, 256) == 4096
