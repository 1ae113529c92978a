"""Lattice fits and strain: exact recovery, weighting, degenerate frames, end to end."""
import numpy as np
import pytest

import gpucorr
from gpucorr.lattice import LatticeFit, StrainResult, fit_lattice, strain
from gpucorr.patterns import Circular
from gpucorr.synthetic import calc_coords

#: a 7x7 lattice with a few points missing, as after dropping edge disks
INDICES = np.mgrid[-3:4, -3:4].reshape(2, -1).T[[k for k in range(49) if k not in (0, 6, 30)]]


def asnumpy(arr):
    return arr.get() if hasattr(arr, "get") else np.asarray(arr)


def positions(zero, a, b, indices):
    """``zero + i a + j b`` for (..., 2) zero, a, b: (..., P, 2)."""
    zero, a, b = (np.asarray(v, dtype=np.float64)[..., None, :] for v in (zero, a, b))
    return zero + indices[:, :1] * a + indices[:, 1:] * b


def random_lattices(rng, lead):
    """Random origins and non-degenerate lattice vectors, each (*lead, 2)."""
    zero = rng.uniform(50, 200, lead + (2,))
    length = rng.uniform(10, 30, lead + (2,))
    angle = rng.uniform(0, 2 * np.pi, lead)
    between = rng.uniform(np.pi / 4, 3 * np.pi / 4, lead) * rng.choice([-1, 1], lead)
    a = length[..., :1] * np.stack([np.sin(angle), np.cos(angle)], -1)
    b = length[..., 1:] * np.stack([np.sin(angle + between), np.cos(angle + between)], -1)
    return zero, a, b


def deformation(exx=0.0, eyy=0.0, exy=0.0, rotation=0.0):
    """F = R(rotation) (I + E), in (x, y) coordinates: its polar factors are R and I + E."""
    c, s = np.cos(rotation), np.sin(rotation)
    return np.array([[c, -s], [s, c]]) @ np.array([[1 + exx, exy], [exy, 1 + eyy]])


def deform(F, v):
    """Apply the (x, y) matrix F to (y, x) vectors v (..., 2)."""
    v = np.asarray(v, dtype=np.float64)
    return (v[..., ::-1] @ F.T)[..., ::-1]


A0 = np.array([2.0, 21.0])     # (y, x)
B0 = np.array([19.0, -3.5])


# ---------------------------------------------------------------------------
# fit_lattice
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("lead", [(), (7,), (3, 4)], ids=["scalar", "N", "scan"])
def test_exact_positions_recovered(xp, rng, lead):
    zero, a, b = random_lattices(rng, lead)
    refineds = positions(zero, a, b, INDICES)
    fit = fit_lattice(xp.asarray(refineds.astype(np.float64)), xp.asarray(INDICES))
    assert isinstance(fit, LatticeFit)
    for got, want in ((fit.zero, zero), (fit.a, a), (fit.b, b)):
        assert got.shape == lead + (2,) and got.dtype == np.float64
        np.testing.assert_allclose(asnumpy(got), want, rtol=0, atol=1e-9)
    assert fit.residual.shape == lead and fit.n_used.shape == lead
    assert np.all(asnumpy(fit.residual) < 1e-9)
    assert np.all(asnumpy(fit.n_used) == len(INDICES))
    np.testing.assert_allclose(asnumpy(fit.positions(xp.asarray(INDICES))), refineds,
                               rtol=0, atol=1e-9)


def test_float32_input_and_list_indices(rng):
    zero, a, b = random_lattices(rng, (4,))
    refineds = positions(zero, a, b, INDICES).astype(np.float32)
    fit = fit_lattice(refineds, INDICES.tolist())
    assert fit.a.dtype == np.float64
    # float32 positions hold ~1e-5 px: the fit is as good as its input
    np.testing.assert_allclose(fit.a, a, rtol=0, atol=1e-5)
    assert np.all(fit.residual < 2e-5)


def test_matches_weighted_lstsq(xp, rng):
    """Noisy positions, random weights, some peaks cut: the per-frame lstsq solution."""
    n = 6
    zero, a, b = random_lattices(rng, (n,))
    refineds = positions(zero, a, b, INDICES) + rng.normal(0, 0.3, (n, len(INDICES), 2))
    elevations = rng.uniform(0, 2, (n, len(INDICES)))
    refineds[1, 5] = np.nan
    fit = fit_lattice(xp.asarray(refineds), xp.asarray(INDICES),
                      elevations=xp.asarray(elevations), min_elevation=0.3, weighted=True)
    design = np.column_stack([np.ones(len(INDICES)), INDICES])
    for k in range(n):
        use = (elevations[k] >= 0.3) & np.isfinite(refineds[k]).all(-1)
        w = elevations[k][use]
        sw = np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(design[use] * sw, refineds[k][use] * sw, rcond=None)
        np.testing.assert_allclose(asnumpy(fit.zero[k]), coef[0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(asnumpy(fit.a[k]), coef[1], rtol=0, atol=1e-9)
        np.testing.assert_allclose(asnumpy(fit.b[k]), coef[2], rtol=0, atol=1e-9)
        dist2 = ((design[use] @ coef - refineds[k][use]) ** 2).sum(-1)
        np.testing.assert_allclose(asnumpy(fit.residual[k]), np.sqrt((w * dist2).sum() / w.sum()),
                                   rtol=1e-9)
        assert int(asnumpy(fit.n_used[k])) == use.sum()


def test_outlier_with_low_elevation():
    """A peak 6 px off with elevation 1e-3: min_elevation drops it, weighted=True ignores it."""
    refineds = positions((128.0, 120.0), A0, B0, INDICES)
    elevations = np.ones(len(INDICES))
    refineds[10] += (6.0, -4.0)
    elevations[10] = 1e-3
    plain = fit_lattice(refineds, INDICES)
    dropped = fit_lattice(refineds, INDICES, elevations=elevations, min_elevation=0.5)
    weighted = fit_lattice(refineds, INDICES, elevations=elevations, weighted=True)

    def err(fit):
        return max(np.abs(fit.a - A0).max(), np.abs(fit.b - B0).max())

    assert err(plain) > 0.02                      # the outlier pulls the plain fit
    assert err(dropped) < 1e-9 and dropped.residual < 1e-9
    assert int(dropped.n_used) == len(INDICES) - 1 and int(weighted.n_used) == len(INDICES)
    assert err(weighted) < err(plain) / 500       # weight 1e-3 of 46
    # min_elevation without weighting keeps equal weights for the rest
    assert int(fit_lattice(refineds, INDICES, elevations=elevations,
                           min_elevation=1e-3).n_used) == len(INDICES)


@pytest.mark.filterwarnings("error")
def test_degenerate_frames_are_nan(xp):
    good = positions((100.0, 110.0), A0, B0, INDICES)
    frames = np.stack([good] * 7)
    elevations = np.ones(frames.shape[:2])
    frames[1, 2:] = np.nan                                  # 2 usable peaks
    frames[2, INDICES[:, 1] != 0] = np.inf                  # collinear: j == 0 only
    frames[3, INDICES[:, 0] != INDICES[:, 1]] = np.nan      # collinear: diagonal i == j
    frames[4] = np.nan                                      # nothing usable
    elevations[5] = 0.0                                     # min_elevation leaves 3 peaks
    elevations[5, [0, 1, 10]] = 1.0                         # (i, j) = (-3, -2), (-3, -1), (-2, 2)
    elevations[6, 2:] = 0.0                                 # min_elevation leaves 2 peaks
    fit = fit_lattice(xp.asarray(frames), xp.asarray(INDICES), elevations=xp.asarray(elevations),
                      min_elevation=0.5)
    nan_frames = [1, 2, 3, 4, 6]
    for arr in (fit.zero, fit.a, fit.b):
        arr = asnumpy(arr)
        assert np.all(np.isnan(arr[nan_frames]))
        assert np.all(np.isfinite(arr[[0, 5]]))
    assert np.all(np.isnan(asnumpy(fit.residual)[nan_frames]))
    np.testing.assert_array_equal(asnumpy(fit.n_used), [46, 2, 7, 6, 0, 3, 2])
    for k in (0, 5):
        np.testing.assert_allclose(asnumpy(fit.a[k]), A0, rtol=0, atol=1e-9)
        np.testing.assert_allclose(asnumpy(fit.b[k]), B0, rtol=0, atol=1e-9)
    # the NaN frames leave the good frame's numbers as when it is fitted alone (bit for
    # bit with NumPy; on CuPy up to its reductions' order)
    alone = fit_lattice(xp.asarray(good), xp.asarray(INDICES))
    for got, want in ((fit.zero[0], alone.zero), (fit.a[0], alone.a), (fit.b[0], alone.b)):
        if xp is np:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(asnumpy(got), asnumpy(want), rtol=1e-14, atol=1e-12)
    # weighted with all weights zero: NaN, no warning
    zero_w = fit_lattice(good, INDICES, elevations=np.zeros(len(INDICES)), weighted=True)
    assert np.isnan(zero_w.a).all() and int(zero_w.n_used) == 0


# ---------------------------------------------------------------------------
# strain
# ---------------------------------------------------------------------------

STATES = {
    "identity": (0.0, 0.0, 0.0, 0.0),
    "rotation-10deg": (0.0, 0.0, 0.0, np.deg2rad(10)),
    "rotation-minus-30deg": (0.0, 0.0, 0.0, np.deg2rad(-30)),
    "pure-strain": (0.02, -0.01, 0.005, 0.0),
    "uniaxial-x": (0.05, 0.0, 0.0, 0.0),
    "shear-only": (0.0, 0.0, 0.03, 0.0),
    "combined": (0.01, -0.005, 0.003, 0.01),
    "large": (0.2, -0.15, 0.1, -1.0),
}


@pytest.mark.parametrize("state", list(STATES.values()), ids=list(STATES))
def test_homogeneous_strain_recovered(xp, state):
    F = deformation(*state)
    a, b = deform(F, A0), deform(F, B0)
    res = strain((xp.asarray(a), xp.asarray(b)), reference=(xp.asarray(A0), xp.asarray(B0)))
    assert isinstance(res, StrainResult)
    got = [float(asnumpy(v)) for v in (res.exx, res.eyy, res.exy, res.rotation)]
    np.testing.assert_allclose(got, state, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(asnumpy(res.reference[0]), A0)


def test_stack_of_states_and_basis_independence():
    """Per-frame states in a (2, 4) scan; the same answer with another basis of the lattice."""
    states = np.array(list(STATES.values())).reshape(2, 4, 4)
    F = np.stack([deformation(*s) for s in states.reshape(-1, 4)]).reshape(2, 4, 2, 2)
    a = deform_stack(F, A0)
    b = deform_stack(F, B0)
    res = strain((a, b), reference=np.stack([A0, B0]))
    got = np.stack([res.exx, res.eyy, res.exy, res.rotation], -1)
    np.testing.assert_allclose(got, states, rtol=0, atol=1e-9)
    # F = A A0^-1 does not depend on which basis describes the lattice (same for both)
    other = strain((a + b, a - 2 * b), reference=(A0 + B0, A0 - 2 * B0))
    np.testing.assert_allclose(np.stack([other.exx, other.eyy, other.exy, other.rotation], -1),
                               states, rtol=0, atol=1e-9)


def deform_stack(F, v):
    """Apply (..., 2, 2) (x, y) matrices to one (y, x) vector: (..., 2)."""
    return (F @ np.asarray(v)[::-1])[..., ::-1]


def test_rotation_sign_convention():
    """Positive rotation turns +x towards +y: on screen (y down) that is clockwise."""
    a0, b0 = np.array([0.0, 10.0]), np.array([10.0, 0.0])   # a0 along +x, b0 along +y
    theta = np.deg2rad(10)
    a = np.array([10 * np.sin(theta), 10 * np.cos(theta)])    # a0 turned: gains +y
    b = np.array([10 * np.cos(theta), -10 * np.sin(theta)])   # b0 turned: gains -x
    res = strain((a, b), reference=(a0, b0))
    assert a[0] > 0 and res.rotation > 0
    np.testing.assert_allclose([res.rotation, res.exx, res.eyy, res.exy], [theta, 0, 0, 0],
                               rtol=0, atol=1e-12)
    # the opposite turn is negative
    back = strain((a0, b0), reference=(a, b))
    np.testing.assert_allclose(back.rotation, -theta, rtol=0, atol=1e-12)


def test_tensor_shear_and_small_strain_limit():
    """Simple shear x += g y: exy = g / 2 (tensor, not engineering), rotation = -g / 2."""
    g = 1e-4
    F = np.array([[1.0, g], [0.0, 1.0]])
    res = strain((deform(F, A0), deform(F, B0)), reference=(A0, B0))
    # for small strains E = sym(F - I) up to O(g^2)
    np.testing.assert_allclose([res.exx, res.eyy, res.exy, res.rotation],
                               [0, 0, g / 2, -g / 2], rtol=0, atol=1e-8)


def test_median_reference_ignores_nan_frames(xp):
    """Default reference: the median lattice of all finite frames."""
    states = [STATES["identity"]] * 5 + [STATES["pure-strain"], STATES["combined"]]
    zero = (120.0, 128.0)
    frames = np.stack([positions(zero, deform(deformation(*s), A0), deform(deformation(*s), B0),
                                 INDICES) for s in states] + [np.full((len(INDICES), 2), np.nan)])
    fit = fit_lattice(xp.asarray(frames), xp.asarray(INDICES))
    res = strain(fit)
    np.testing.assert_allclose(asnumpy(res.reference[0]), A0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(asnumpy(res.reference[1]), B0, rtol=0, atol=1e-9)
    got = np.stack([asnumpy(v) for v in (res.exx, res.eyy, res.exy, res.rotation)], -1)
    np.testing.assert_allclose(got[:7], states, rtol=0, atol=1e-9)
    assert np.all(np.isnan(got[7]))


def test_mask_and_fit_reference():
    """A reference region of a (4, 5) scan, and the fit of a separate reference frame."""
    region = np.zeros((4, 5), bool)
    region[:2, :2] = True
    states = np.where(region[..., None], 0.0, np.array(STATES["combined"]))
    F = np.stack([deformation(*s) for s in states.reshape(-1, 4)]).reshape(4, 5, 2, 2)
    frames = positions((128.0, 128.0), deform_stack(F, A0), deform_stack(F, B0), INDICES)
    frames[0, 0] = np.nan          # a NaN frame inside the region is left out
    fit = fit_lattice(frames, INDICES)
    res = strain(fit, reference=region)
    got = np.stack([res.exx, res.eyy, res.exy, res.rotation], -1)
    np.testing.assert_allclose(got[~region], states[~region], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got[1, 1], 0, rtol=0, atol=1e-9)
    assert np.all(np.isnan(got[0, 0]))
    np.testing.assert_allclose(res.reference[0], A0, rtol=0, atol=1e-9)

    ref_fit = fit_lattice(positions((64.0, 64.0), A0, B0, INDICES), INDICES)
    by_fit = strain(fit, reference=ref_fit)
    np.testing.assert_allclose(np.stack([by_fit.exx, by_fit.eyy, by_fit.exy, by_fit.rotation],
                                        -1)[~region], states[~region], rtol=0, atol=1e-9)
    # the strained region as reference: unstrained frames show the inverse deformation
    inverse = strain(fit, reference=~region)
    np.testing.assert_allclose(inverse.rotation[1, 1], -STATES["combined"][3], rtol=0,
                               atol=1e-9)
    np.testing.assert_allclose(inverse.exx[~region], 0, rtol=0, atol=1e-9)


def test_flipped_handedness_is_nan():
    res = strain((np.stack([A0, B0]), np.stack([B0, A0])), reference=(A0, B0))
    np.testing.assert_allclose([res.exx[0], res.rotation[0]], [0, 0], atol=1e-12)
    assert np.isnan(res.exx[1]) and np.isnan(res.rotation[1])


# ---------------------------------------------------------------------------
# End to end: synthetic frames -> refine -> fit -> strain
# ---------------------------------------------------------------------------

E2E_A0 = np.array([3.1, 26.4])
E2E_B0 = np.array([27.3, -2.2])
E2E_ZERO = np.array([128.3, 127.6])
E2E_STATES = np.array([
    (0.0, 0.0, 0.0, 0.0),                  # the unstrained reference frame
    (0.01, -0.005, 0.003, 0.01),
    (-0.008, 0.012, -0.004, -0.02),
    (0.0, 0.0, 0.0, 0.03),
])
E2E_RADIUS = 8


def e2e_strain_errors(dose, seed):
    """|recovered - true| (exx, eyy, exy, rotation) for each E2E state, (4, 4)."""
    pattern = Circular(radius=E2E_RADIUS)
    crop = pattern.get_crop_size()                       # 16: the crop is 32 px square
    grid = np.mgrid[-7:8, -7:8].reshape(2, -1).T
    lattices = [(E2E_ZERO, deform(deformation(*s), E2E_A0), deform(deformation(*s), E2E_B0))
                for s in E2E_STATES]
    # lattice points whose crop lies inside the frame in every frame
    keep = np.ones(len(grid), bool)
    for zero, a, b in lattices:
        p = np.rint(calc_coords(zero, a, b, grid))
        keep &= np.all((p >= crop) & (p <= 256 - crop), axis=1)
    indices = grid[keep]
    refineds = []
    for k, (zero, a, b) in enumerate(lattices):
        frame, _, _ = gpucorr.cbed_frame(256, 256, zero=zero, a=a, b=b, radius=E2E_RADIUS,
                                         dose=dose, seed=None if dose is None else seed + k)
        peaks = np.rint(calc_coords(zero, a, b, indices)).astype(int)
        refineds.append(gpucorr.refine(frame, peaks, pattern, upsample=20).refineds[0])
    fit = fit_lattice(np.stack(refineds), indices)
    assert np.all(fit.n_used == len(indices)) and len(indices) > 50
    res = strain(fit, reference=np.arange(len(E2E_STATES)) == 0)
    got = np.stack([res.exx, res.eyy, res.exy, res.rotation], -1)
    return np.abs(got - E2E_STATES)


def test_end_to_end_noise_free():
    """Noise-free 256x256 frames, radius-8 disks, 69 peaks, Circular(8), upsample=20.

    Measured (absolute, per component): exx <= 1.1e-5, eyy <= 7.8e-6,
    exy <= 2.0e-5, rotation <= 1.7e-5 rad; largest 2.0e-5. Bound 1e-4.
    """
    err = e2e_strain_errors(dose=None, seed=None)
    assert err.max() <= 1e-4, err


@pytest.mark.parametrize("seed", [0, 1])
def test_end_to_end_poisson(seed):
    """As noise-free, with Poisson noise at 5e5 electrons per frame.

    Measured: largest error over all states and components 7.1e-5 (seed 0) and
    1.2e-4 (seed 100); over 30 seeds (0, 100, ..., 2900) median 1.0e-4,
    95th percentile 1.6e-4, maximum 1.8e-4. Bound 5e-4.
    """
    err = e2e_strain_errors(dose=5e5, seed=100 * seed)
    assert err.max() <= 5e-4, err


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

GOOD = positions((100.0, 100.0), A0, B0, INDICES[:5])[None].repeat(2, axis=0)   # (2, 5, 2)
IDX5 = INDICES[:5]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(refineds=np.zeros((5, 3))), ValueError,
     r"refineds must have shape \(\.\.\., P, 2\).*got \(5, 3\)"),
    (dict(refineds=np.zeros(10)), ValueError, r"refineds must have shape.*got \(10,\)"),
    (dict(refineds=GOOD.astype(complex)), TypeError,
     "refineds must have a real dtype.*complex128"),
    (dict(indices=np.zeros((5, 3), int)), ValueError,
     r"indices must have shape \(P, 2\).*got \(5, 3\)"),
    (dict(indices=IDX5.astype(float)), TypeError,
     "indices must be integer lattice indices.*got dtype float64"),
    (dict(indices=INDICES[:4]), ValueError,
     r"refineds has P=5 peaks per frame but indices has 4 \(shape \(4, 2\)\)"),
    (dict(refineds=GOOD[:, :2], indices=IDX5[:2]), ValueError,
     "at least 3 peaks per frame.*got P=2"),
    (dict(elevations=np.ones((2, 4))), ValueError,
     r"elevations must have shape \(\.\.\., P\) = \(2, 5\).*got \(2, 4\)"),
    (dict(elevations=np.ones((2, 5), complex)), TypeError, "elevations must have a real dtype"),
    (dict(weighted=True), ValueError, "weighted=True needs elevations.*elevations=None"),
    (dict(min_elevation=0.5), ValueError, "min_elevation=0.5 needs elevations"),
    (dict(elevations=np.ones((2, 5)), min_elevation="1"), TypeError,
     "min_elevation must be a real number or None; got '1' of type str"),
    (dict(elevations=np.ones((2, 5)), min_elevation=True), TypeError,
     "min_elevation must be a real number"),
    (dict(elevations=np.ones((2, 5)), min_elevation=float("nan")), ValueError,
     "min_elevation must not be NaN"),
    (dict(elevations=np.ones((2, 5)), weighted="yes"), TypeError,
     "weighted must be True or False; got 'yes'"),
])
def test_fit_lattice_errors(kwargs, exc, match):
    args = dict(refineds=GOOD, indices=IDX5)
    args.update(kwargs)
    refineds, indices = args.pop("refineds"), args.pop("indices")
    with pytest.raises(exc, match=match):
        fit_lattice(refineds, indices, **args)


FIT4 = fit_lattice(np.stack([positions((0.0, 0.0), A0, B0, IDX5)] * 4), IDX5)


@pytest.mark.parametrize("lattice, reference, exc, match", [
    (np.zeros((3, 2)), None, TypeError, "lattice must be a LatticeFit or an \\(a, b\\) pair"),
    ((np.zeros((3, 2)), np.zeros((4, 2))), None, ValueError,
     r"a and b must have the same shape \(\.\.\., 2\).*got \(3, 2\) and \(4, 2\)"),
    ((np.zeros(3), np.zeros(3)), None, ValueError, "a and b must have the same shape"),
    (FIT4, ((1.0, 2.0, 3.0), (0.0, 1.0)), ValueError,
     r"reference \(a0, b0\) must be two \(y, x\) vectors of shape \(2,\); "
     r"got shapes \(3,\) and \(2,\)"),
    (FIT4, np.ones((3, 2)), ValueError,
     r"boolean mask of shape \(4,\) or the vectors \[a0, b0\] of shape \(2, 2\); got \(3, 2\)"),
    (FIT4, np.ones(3, bool), ValueError,
     r"reference mask must have the leading shape of the lattice, \(4,\); got \(3,\)"),
    (FIT4, np.zeros(4, bool), ValueError, "reference mask selects no frame"),
    (FIT4, "median", TypeError, "reference must be None, a LatticeFit, an \\(a0, b0\\) pair"),
    (FIT4, ((0.0, 1.0), (0.0, 2.0)), ValueError,
     r"reference vectors a0, b0 must be finite and not parallel; got a0=\[0.0, 1.0\]"),
    (FIT4, ((0.0, np.nan), (1.0, 0.0)), ValueError, "must be finite and not parallel"),
    (LatticeFit(*(np.full((2, 2), np.nan),) * 3, np.full(2, np.nan), np.zeros(2, int)), None,
     ValueError, "the reference frames hold no finite lattice fit"),
])
def test_strain_errors(lattice, reference, exc, match):
    with pytest.raises(exc, match=match):
        strain(lattice, reference=reference)


def test_mask_of_nan_frames_only():
    frames = np.stack([positions((0.0, 0.0), A0, B0, IDX5)] * 4)
    frames[:2] = np.nan
    fit = fit_lattice(frames, IDX5)
    with pytest.raises(ValueError, match="the reference frames hold no finite lattice fit"):
        strain(fit, reference=np.array([True, True, False, False]))


@pytest.mark.parametrize("weighted", [False, True])
def test_a_frames_fit_does_not_depend_on_the_batch(weighted):
    """Bit for bit: a frame fitted alone, as a stack of one, or among others (the mean
    index once went through BLAS's matrix product, whose order depends on the stack)."""
    rng = np.random.default_rng(3)
    for n in (2, 7, 12, 33):
        a, b = rng.normal(0, 20, (n, 2)), rng.normal(0, 20, (n, 2))
        zero = rng.normal(64, 3, (n, 2))
        pos = positions(zero, a, b, INDICES)                       # (n, P, 2)
        pos = pos + rng.normal(0, 0.05, pos.shape)
        w = rng.uniform(0.1, 5, pos.shape[:-1])
        kw = dict(elevations=w, weighted=True) if weighted else {}
        stack = fit_lattice(pos, INDICES, **kw)
        for i in (0, n // 2, n - 1):
            one = {k: (v[i] if k == "elevations" else v) for k, v in kw.items()}
            alone = fit_lattice(pos[i], INDICES, **one)
            for name in ("zero", "a", "b", "residual", "n_used"):
                np.testing.assert_array_equal(getattr(stack, name)[i], getattr(alone, name))
