"""Per-frame lattices: index_peaks and fit_lattice on peaks found in each frame on its own.

The frames' lattices move, turn and stretch from frame to frame, and disks
come and go (those outside the frame are lost, ranks are shuffled, rows are
padded with NaN), as :func:`gpucorr.find_disks` gives them. Every expected
value comes from the synthetic parameters.
"""
import numpy as np
import pytest

from gpucorr.indexing import index_peaks
from gpucorr.lattice import fit_lattice, strain

FRAME = 128          # frames FRAME x FRAME px; disks inside [MARGIN, FRAME - MARGIN)
MARGIN = 10.0
K = 40               # rows per frame (disks, then NaN padding)
ZERO0 = np.array([64.0, 60.0])
A0 = np.array([1.5, 19.0])      # (y, x)
B0 = np.array([20.0, -2.0])
GRID = np.mgrid[-5:6, -5:6].reshape(2, -1).T


def rotate(v, angle):
    """(y, x) vectors turned by ``angle`` from +x towards +y."""
    c, s = np.cos(angle), np.sin(angle)
    y, x = v[..., 0], v[..., 1]
    return np.stack([s * x + c * y, c * x - s * y], axis=-1)


def lattice_of(shift, angle, stretch):
    """Origin and vectors of a frame: moved by ``shift``, turned by ``angle``, a stretched."""
    return ZERO0 + shift, rotate(A0, angle) * stretch, rotate(B0, angle)


def frame_disks(zero, a, b, rng, k=K):
    """Disks inside the frame, in a random order, padded with NaN to ``k`` rows; their
    true indices (padding -99) and the mask."""
    pos = zero + GRID[:, :1] * a + GRID[:, 1:] * b
    inside = np.all((pos >= MARGIN) & (pos < FRAME - MARGIN), axis=1)
    pos, ij = pos[inside], GRID[inside]
    order = rng.permutation(len(pos))[:k]
    out = np.full((k, 2), np.nan)
    true = np.full((k, 2), -99)
    out[:len(order)], true[:len(order)] = pos[order], ij[order]
    return out, true, np.arange(k) < len(order)


# (shift (y, x) px, rotation rad, stretch of a) per frame: moving, turning, straining
PARAMS = [((0.0, 0.0), 0.0, 1.0), ((3.0, -4.0), 0.05, 1.01), ((-6.0, 7.5), -0.08, 0.99),
          ((9.0, 2.0), 0.12, 1.02), ((-2.0, -9.0), -0.15, 1.0), ((5.5, 5.5), 0.2, 0.98)]


def make_scan(rng, shift_scale=1.0):
    """A (2, 3) scan of per-frame disks: positions, true indices, mask, and per frame the
    true zero, a, b."""
    zero, a, b = (np.array(v).reshape(2, 3, 2) for v in zip(
        *(lattice_of(shift_scale * np.array(s), t, m) for s, t, m in PARAMS)))
    rows = [frame_disks(z, va, vb, rng) for z, va, vb in
            zip(zero.reshape(-1, 2), a.reshape(-1, 2), b.reshape(-1, 2))]
    pos, true, mask = (np.stack(v).reshape((2, 3) + v[0].shape) for v in zip(*rows))
    return pos, true, mask, zero, a, b


@pytest.fixture
def scan(rng):
    return make_scan(rng)


# ---------------------------------------------------------------------------
# index_peaks
# ---------------------------------------------------------------------------

def test_each_frame_indexed_with_its_own_lattice(scan):
    pos, true, mask, zero, a, b = scan
    assert 20 < mask.sum(axis=-1).min() < mask.sum(axis=-1).max() < K   # disks come and go
    indices, valid, basis = index_peaks(pos, mask=mask, reference=(ZERO0, A0, B0))
    assert indices.shape == (2, 3, K, 2) and indices.dtype == np.int64
    assert valid.shape == (2, 3, K) and basis.shape == (2, 3, 3, 2)
    np.testing.assert_array_equal(valid, mask)
    np.testing.assert_array_equal(indices[mask], true[mask])
    assert np.all(indices[~mask] == 0)
    np.testing.assert_allclose(basis[..., 0, :], zero, atol=1e-9)
    np.testing.assert_allclose(basis[..., 1, :], a, atol=1e-9)
    np.testing.assert_allclose(basis[..., 2, :], b, atol=1e-9)


def test_nan_rows_without_a_mask_are_absent(scan):
    pos, true, mask, _zero, a, _b = scan
    indices, valid, basis = index_peaks(pos, reference=(ZERO0, A0, B0))
    np.testing.assert_array_equal(valid, mask)
    np.testing.assert_array_equal(indices[mask], true[mask])
    np.testing.assert_allclose(basis[..., 1, :], a, atol=1e-9)


def test_masked_rows_are_left_out_whatever_they_hold(scan):
    pos, true, mask, _zero, _a, b = scan
    junk = pos.copy()
    junk[~mask] = [33.3, 71.1]       # finite positions off the lattice, masked out
    drop = mask.copy()
    drop[0, 1, :3] = False           # and three real disks masked too
    indices, valid, basis = index_peaks(junk, mask=drop, reference=(ZERO0, A0, B0))
    np.testing.assert_array_equal(valid, drop)
    np.testing.assert_array_equal(indices[drop], true[drop])
    np.testing.assert_allclose(basis[..., 2, :], b, atol=1e-9)


def test_default_reference_labels_every_frame_alike(rng):
    """Without a reference every frame gets the same equivalent basis: (a, b) = M (a_f, b_f)
    with one integer M for all frames, and, where the patterns lie within half a lattice
    spacing of each other, the same (0, 0) lattice point."""
    pos, true, mask, _zero, a, b = make_scan(rng, shift_scale=0.4)
    indices, valid, basis = index_peaks(pos, mask=mask)
    np.testing.assert_array_equal(valid, mask)
    truth = np.stack([a, b], axis=-2)                                 # (2, 3, 2, 2)
    m = np.linalg.solve(np.swapaxes(truth, -1, -2), np.swapaxes(basis[..., 1:, :], -1, -2))
    m = np.swapaxes(m, -1, -2)                                        # basis = m @ truth
    np.testing.assert_allclose(m, np.rint(m), atol=1e-9)
    assert np.all(np.rint(m) == np.rint(m[0, 0]))
    assert abs(abs(np.linalg.det(m[0, 0])) - 1) < 1e-9
    # true = n + indices @ M: one lattice point n is (0, 0) in every frame
    offsets = true[mask] - indices[mask] @ np.rint(m[0, 0]).astype(int)
    assert np.all(offsets == offsets[0])
    fitted = basis[..., None, 0, :] + np.einsum("...pk,...kc->...pc", indices, basis[..., 1:, :])
    np.testing.assert_allclose(fitted[mask], pos[mask], atol=1e-9)


def test_default_follows_a_pattern_that_moves_far_across_the_scan(rng):
    """A descan that carries the pattern 2.5 lattice spacings across an (8, 8) scan, little
    from one frame to the next: one lattice point is (0, 0) in every frame."""
    y, x = np.meshgrid(np.arange(8) / 7, np.arange(8) / 7, indexing="ij")
    shift = 2.5 * (x[..., None] * A0 + 0.6 * y[..., None] * B0)
    rows = [frame_disks(ZERO0 + s, A0, B0, rng) for s in shift.reshape(-1, 2)]
    pos, true, mask = (np.stack(v).reshape((8, 8) + v[0].shape) for v in zip(*rows))
    indices, valid, basis = index_peaks(pos, mask=mask, reference=(A0, B0))
    np.testing.assert_array_equal(valid, mask)
    offsets = true[mask] - indices[mask]
    assert np.all(offsets == offsets[0])
    np.testing.assert_allclose(basis[..., 1:, :], np.broadcast_to([A0, B0], (8, 8, 2, 2)),
                               atol=1e-9)
    # with zero0, each frame's (0, 0) is its lattice point nearest zero0 instead
    near = index_peaks(pos, mask=mask, reference=(ZERO0, A0, B0))[2][..., 0, :]
    assert np.all(np.linalg.norm(near - ZERO0, axis=-1) < 15)
    np.testing.assert_allclose(near[0, 0], ZERO0, atol=1e-9)


def test_frames_that_cannot_be_indexed_are_nan(scan):
    pos, _true, mask, _zero, a, _b = scan
    pos, mask = pos.copy(), mask.copy()
    mask[0, 0, 2:] = False                                # two disks only
    pos[1, 2] = np.nan
    pos[1, 2, :5] = ZERO0 + np.arange(5)[:, None] * A0    # five disks on one line
    indices, valid, basis = index_peaks(pos, mask=mask, reference=(ZERO0, A0, B0))
    for f in ((0, 0), (1, 2)):
        assert np.isnan(basis[f]).all() and not valid[f].any() and not indices[f].any()
    np.testing.assert_allclose(basis[0, 1, 1], a[0, 1], atol=1e-9)   # the others indexed


def test_a_frame_whose_zero_is_absent_is_not_indexed(scan):
    pos, _true, mask, _zero, _a, _b = scan
    mask = mask.copy()
    mask[0, 2, 0] = False
    indices, valid, basis = index_peaks(pos, mask=mask, zero=0, reference=(A0, B0))
    assert np.isnan(basis[0, 2]).all() and not valid[0, 2].any()
    # zero = 0: the first disk of each frame is (0, 0)
    assert np.all(indices[..., 0, :][np.isfinite(basis[..., 0, 0])] == 0)
    np.testing.assert_allclose(basis[1, 0, 0], pos[1, 0, 0], atol=1e-9)


def test_zero_per_frame_for_a_pattern_that_moves_far(rng):
    """A pattern moved by more than half a lattice spacing: the default labels another
    disk (0, 0); zero per frame names the disk."""
    shift = 1.6 * A0 + 0.3 * B0
    pos, true, mask = (np.stack(v) for v in zip(
        frame_disks(ZERO0, A0, B0, rng), frame_disks(ZERO0 + shift, A0, B0, rng)))
    zero = np.array([int(np.flatnonzero(np.all(t == 0, axis=1))[0]) for t in true])
    indices, _valid, basis = index_peaks(pos, mask=mask, zero=zero, reference=(A0, B0))
    np.testing.assert_array_equal(indices[mask], true[mask])
    np.testing.assert_allclose(basis[:, 0], [ZERO0, ZERO0 + shift], atol=1e-9)
    moved = index_peaks(pos, mask=mask, reference=(ZERO0, A0, B0))[2]
    np.testing.assert_allclose(moved[1, 0], ZERO0 + shift - 2 * A0, atol=1e-9)


def test_one_set_unchanged_and_like_a_stack_of_one(rng):
    zero, a, b = np.array([60.3, 70.1]), np.array([0.4, 17.0]), np.array([16.0, -0.3])
    ij = GRID[np.abs(GRID).max(axis=1) <= 2]
    peaks = zero + ij[:, :1] * a + ij[:, 1:] * b
    indices, valid, basis = index_peaks(peaks)
    assert indices.shape == (len(ij), 2) and valid.shape == (len(ij),)
    assert basis.shape == (3, 2) and valid.all()
    fitted = basis[0] + indices @ basis[1:]
    np.testing.assert_allclose(fitted, peaks, atol=1e-9)
    np.testing.assert_allclose(basis[0], zero, atol=1e-9)      # nearest the mean: (0, 0)
    stack = index_peaks(peaks[None], reference=basis)
    for one, many in zip((indices, valid, basis), stack):
        np.testing.assert_array_equal(many[0], one)


def test_one_set_with_a_mask_and_nan_rows():
    zero, a, b = np.array([64.0, 64.0]), np.array([0.0, 16.0]), np.array([16.0, 0.0])
    ij = np.array([[0, 0], [1, 0], [0, 1], [-1, 2], [2, -1], [1, 1]])
    peaks = zero + ij @ np.stack([a, b])
    peaks[3] = np.nan
    mask = np.array([True, True, True, True, True, False])
    indices, valid, basis = index_peaks(peaks, mask=mask, reference=(zero, a, b))
    assert valid.tolist() == [True, True, True, False, True, False]
    np.testing.assert_array_equal(indices[valid], ij[valid])
    np.testing.assert_allclose(basis, [zero, a, b], atol=1e-9)
    with pytest.raises(ValueError, match="zero=3 is an absent peak"):
        index_peaks(peaks, mask=mask, zero=3)
    with pytest.raises(ValueError, match="need at least 3 peaks to find a lattice; got 2"):
        index_peaks(peaks, mask=np.array([True, True] + [False] * 4))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(peaks=np.zeros((2, 5, 3))), ValueError,
     r"peaks must have shape \(P, 2\), or \(\.\.\., P, 2\).*got \(2, 5, 3\)"),
    (dict(peaks=np.zeros(4)), ValueError, r"peaks must have shape.*got \(4,\)"),
    (dict(mask=np.ones((2, 4), bool)), ValueError,
     r"mask must have shape \(\.\.\., P\) = \(2, 5\), the shape of peaks \(2, 5, 2\) "
     r"without its last axis; got \(2, 4\)"),
    (dict(mask=np.ones(5, bool)), ValueError, r"mask must have shape .*got \(5,\)"),
    (dict(mask=np.ones((2, 5))), TypeError, "mask must be a boolean array.*float64"),
    (dict(zero=7), ValueError, "zero must index one of the 5 peaks; got 7"),
    (dict(zero=np.zeros(3, int)), ValueError,
     r"zero must be None, an int or an integer array of shape \(2,\)"),
    (dict(zero=1.5), ValueError, "zero must be None, an int or an integer array"),
    (dict(tolerance=-1), ValueError, "tolerance must be > 0; got -1"),
    (dict(tolerance=float("nan")), ValueError, "tolerance must be finite; got nan"),
    (dict(tolerance="0.2"), TypeError, "tolerance must be a real number; got '0.2' of type str"),
    (dict(min_angle=0), ValueError, "min_angle must be in degrees, 0 < min_angle < 90; got 0"),
    (dict(min_angle=100), ValueError, "min_angle must be in degrees, .* got 100"),
    (dict(min_angle=float("nan")), ValueError, "min_angle must be finite; got nan"),
    (dict(peaks=np.zeros((2, 5, 2)) + 1j), TypeError,
     r"peaks must be real \(y, x\) positions; got dtype complex128"),
    (dict(peaks=np.zeros((3, 0, 2))), ValueError, r"P >= 1; got \(3, 0, 2\)"),
    (dict(peaks=np.arange(10.0).reshape(5, 2), zero=1.0), TypeError,
     r"zero must be None or an int \(the index of a peak\); got 1.0"),
    (dict(peaks=np.arange(10.0).reshape(5, 2), zero=True), TypeError,
     "zero must be None or an int"),
    (dict(peaks=np.arange(10.0).reshape(5, 2), zero=[2]), TypeError,
     "zero must be None or an int"),
    (dict(reference=np.ones(3)), ValueError,
     r"reference must be finite \(y, x\) vectors \(a0, b0\) or \(zero0, a0, b0\)"),
    (dict(reference=((0.0, np.nan), (1.0, 0.0))), ValueError, "reference must be finite"),
    (dict(reference=((0.0, 1.0), (0.0, 2.0))), ValueError,
     "reference vectors a0, b0 must not be parallel"),
])
def test_index_peaks_errors(kwargs, exc, match):
    args = dict(peaks=np.zeros((2, 5, 2)) + np.arange(5)[:, None])
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        index_peaks(args.pop("peaks"), **args)


def test_index_peaks_per_frame_on_cupy(any_cupy, scan):
    pos, _true, mask, _zero, _a, _b = scan
    want = index_peaks(pos, mask=mask, reference=(ZERO0, A0, B0))
    got = index_peaks(any_cupy.asarray(pos), mask=any_cupy.asarray(mask),
                      reference=(ZERO0, A0, B0))
    for w, g in zip(want, got):
        assert isinstance(g, any_cupy.ndarray)
        np.testing.assert_array_equal(g.get(), w)


# ---------------------------------------------------------------------------
# fit_lattice
# ---------------------------------------------------------------------------

def test_fit_with_per_frame_indices(xp, scan):
    pos, true, mask, zero, a, b = scan
    indices = np.where(mask[..., None], true, 0)
    fit = fit_lattice(xp.asarray(pos), xp.asarray(indices), mask=xp.asarray(mask))
    np.testing.assert_allclose(_np(fit.zero), zero, atol=1e-9)
    np.testing.assert_allclose(_np(fit.a), a, atol=1e-9)
    np.testing.assert_allclose(_np(fit.b), b, atol=1e-9)
    np.testing.assert_array_equal(_np(fit.n_used), mask.sum(axis=-1))
    assert np.all(_np(fit.residual) < 1e-9)
    np.testing.assert_allclose(_np(fit.positions(xp.asarray(indices)))[mask], pos[mask],
                               atol=1e-9)


def _np(arr):
    return arr.get() if hasattr(arr, "get") else np.asarray(arr)


def test_fit_masked_peaks_have_no_weight(scan):
    pos, true, mask, zero, a, b = scan
    junk, indices, drop = pos.copy(), np.where(mask[..., None], true, 0), mask.copy()
    junk[~mask] = 1e6                                 # finite, far off, and masked
    drop[1, 1, :4] = False
    junk[1, 1, :4] += 7.0                             # moved disks, masked
    indices[~drop] = 12345                            # any index where masked
    elevations = np.where(drop, 2.0, np.nan)
    fit = fit_lattice(junk, indices, mask=drop, elevations=elevations, weighted=True)
    np.testing.assert_allclose(fit.a, a, atol=1e-9)
    np.testing.assert_allclose(fit.zero, zero, atol=1e-9)
    np.testing.assert_array_equal(fit.n_used, drop.sum(axis=-1))
    # NaN rows without a mask drop out too; the padding's indices are then any value
    fit = fit_lattice(pos, np.where(mask[..., None], true, 7))
    np.testing.assert_allclose(fit.b, b, atol=1e-9)


def test_fit_frames_with_too_few_or_collinear_peaks_are_nan(scan):
    pos, true, mask, _zero, a, _b = scan
    indices, mask = np.where(mask[..., None], true, 0), mask.copy()
    mask[0, 0, 2:] = False                    # two peaks
    indices[0, 1, :, 1] = 0                   # all (i, 0): collinear indices
    fit = fit_lattice(pos, indices, mask=mask)
    assert np.isnan(fit.a[0, 0]).all() and np.isnan(fit.a[0, 1]).all()
    assert np.isnan(fit.residual[0, :2]).all() and fit.n_used[0, 0] == 2
    np.testing.assert_allclose(fit.a[1], a[1], atol=1e-9)


def test_shared_indices_unchanged_and_equal_to_broadcast_per_frame(rng):
    ij = GRID[np.abs(GRID).max(axis=1) <= 3]
    zero, a, b = ZERO0 + rng.normal(0, 2, (4, 2)), A0 * 1.01, B0
    pos = zero[:, None] + ij[:, :1] * a + ij[:, 1:] * b + rng.normal(0, 0.05, (4, len(ij), 2))
    pos[2, 5] = np.nan
    shared = fit_lattice(pos, ij)
    per_frame = fit_lattice(pos, np.broadcast_to(ij, pos.shape).copy())
    for name in ("zero", "a", "b", "residual"):
        np.testing.assert_allclose(getattr(per_frame, name), getattr(shared, name),
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(per_frame.n_used, [len(ij)] * 2 + [len(ij) - 1, len(ij)])
    np.testing.assert_allclose(shared.a, np.broadcast_to(a, (4, 2)), atol=0.02)


def test_strain_of_per_frame_fits(scan):
    """Frames only turned (not stretched) give their rotation and no strain against the
    unturned lattice, though their patterns moved and lost disks."""
    pos, _true, mask, _zero, _a, _b = scan
    indices, valid, _ = index_peaks(pos, mask=mask, reference=(ZERO0, A0, B0))
    fit = fit_lattice(pos, indices, mask=valid)
    st = strain(fit, reference=(A0, B0))
    angles = np.array([p[1] for p in PARAMS]).reshape(2, 3)
    no_stretch = np.array([p[2] for p in PARAMS]).reshape(2, 3) == 1.0
    assert no_stretch.sum() == 2 and angles[no_stretch].tolist() == [0.0, -0.15]
    np.testing.assert_allclose(st.rotation[no_stretch], angles[no_stretch], atol=1e-9)
    np.testing.assert_allclose(st.exx[no_stretch], 0.0, atol=1e-9)
    np.testing.assert_allclose(st.eyy[no_stretch], 0.0, atol=1e-9)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(indices=np.zeros((3, 5, 2), int)), ValueError,
     r"per-frame indices must have the shape of refineds, \(2, 5, 2\), or be one \(P, 2\) "
     r"for all frames; got \(3, 5, 2\)"),
    (dict(indices=np.zeros((2, 4, 2), int)), ValueError,
     r"refineds has P=5 peaks per frame but indices has 4 \(shape \(2, 4, 2\)\)"),
    (dict(indices=np.zeros((2, 5, 2))), TypeError, "indices must be integer lattice indices"),
    (dict(mask=np.ones((2, 4), bool)), ValueError,
     r"mask must have shape \(\.\.\., P\) = \(2, 5\), the shape of refineds \(2, 5, 2\) "
     r"without its last axis; got \(2, 4\)"),
    (dict(mask=np.ones(5, bool)), ValueError, r"mask must have shape .*got \(5,\)"),
    (dict(mask=np.ones((2, 5), int)), TypeError, "mask must be a boolean array.*int64"),
])
def test_fit_lattice_per_frame_errors(kwargs, exc, match):
    args = dict(refineds=np.zeros((2, 5, 2)), indices=np.zeros((2, 5, 2), int))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fit_lattice(args.pop("refineds"), args.pop("indices"), **args)


def test_positions_per_frame_shape_error():
    fit = fit_lattice(np.zeros((2, 5, 2)) + np.arange(5)[:, None] * [0.0, 1.0]
                      + (np.arange(5)[:, None] % 2) * [1.0, 0.0],
                      np.stack([np.arange(5), np.arange(5) % 2], -1))
    with pytest.raises(ValueError, match=r"per-frame indices must have the shape"):
        fit.positions(np.zeros((3, 5, 2), int))
