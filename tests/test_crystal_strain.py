"""The crystal's strain from the diffraction lattice: real_space and crystal_strain."""
import numpy as np
import pytest

from gpucorr.lattice import crystal_strain, real_space, strain


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def test_real_space_is_the_dual_basis():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3, 2)) * 20
    b = rng.normal(size=(5, 3, 2)) * 20
    a_star, b_star = real_space((a, b))
    dot = lambda u, v: (u * v).sum(-1)          # noqa: E731
    np.testing.assert_allclose(dot(a_star, a), 1, rtol=1e-12)
    np.testing.assert_allclose(dot(b_star, b), 1, rtol=1e-12)
    np.testing.assert_allclose(dot(a_star, b), 0, atol=1e-12)
    np.testing.assert_allclose(dot(b_star, a), 0, atol=1e-12)
    # the dual of the dual is the lattice
    back = real_space((a_star, b_star))
    np.testing.assert_allclose(back[0], a, rtol=1e-10)
    np.testing.assert_allclose(back[1], b, rtol=1e-10)


def test_parallel_vectors_have_no_dual():
    a_star, b_star = real_space((np.array([[1.0, 2.0], [0.0, 3.0]]),
                                 np.array([[2.0, 4.0], [3.0, 0.0]])))
    assert np.isnan(a_star[0]).all() and np.isnan(b_star[0]).all()
    assert np.isfinite(a_star[1]).all()


def test_nearly_parallel_vectors_are_parallel_as_strain_sees_them():
    a = np.array([26.08, 18.94])
    b = 1.7678 * a                      # parallel up to rounding: det about 1e-13
    a_star, b_star = real_space((a, b))
    assert np.isnan(a_star).all() and np.isnan(b_star).all()
    res = crystal_strain((a[None], b[None]), reference=([0.0, 20.0], [20.0, 0.0]))
    assert np.isnan(res.exx).all() and np.isnan(res.rotation).all()


def test_complex_vectors_are_refused():
    with pytest.raises(TypeError, match="lattice: a and b must be real .y, x. vectors; got "
                                        "dtype complex128"):
        crystal_strain((np.array([1j, 20.0]), np.array([20.0, 0.0])),
                       reference=([0.0, 20.0], [20.0, 0.0]))


def test_infinite_vectors_give_nan_without_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = crystal_strain((np.array([[np.inf, 20.0], [0.0, 20.0]]),
                              np.array([[20.0, 0.0], [20.0, 0.0]])),
                             reference=([0.0, 20.0], [20.0, 0.0]))
        assert np.isnan(res.exx[0]) and res.exx[1] == 0
        with pytest.raises(ValueError, match="reference vectors a0, b0 must be finite"):
            strain((np.array([[0.0, 20.0]]), np.array([[20.0, 0.0]])),
                   reference=([np.inf, 20.0], [20.0, 0.0]))


@pytest.mark.parametrize("exx, eyy, exy, rot", [(0.01, 0.0, 0.0, 0.0), (0.0, -0.02, 0.0, 0.0),
                                                 (0.004, -0.003, 0.0025, 0.07)])
def test_the_crystals_strain_from_its_diffraction_pattern(exx, eyy, exy, rot):
    """A crystal deformed by F = R (I + eps) diffracts into a lattice deformed by F^-T."""
    a0 = np.array([3.0, 21.0])                   # (y, x)
    b0 = np.array([19.0, -2.0])
    f_inv_t = _rotation(rot) @ np.linalg.inv(np.eye(2) + [[exx, exy], [exy, eyy]])
    a, b = ((f_inv_t @ v[::-1])[::-1] for v in (a0, b0))        # (x, y) maths on (y, x)
    res = crystal_strain((a, b), reference=(a0, b0))
    np.testing.assert_allclose([res.exx, res.eyy, res.exy, res.rotation],
                               [exx, eyy, exy, rot], atol=1e-12)
    np.testing.assert_allclose(np.stack(res.reference), [a0, b0])
    # the pattern's own strain is about the negative
    pattern = strain((a, b), reference=(a0, b0))
    np.testing.assert_allclose([pattern.exx, pattern.eyy], [-exx, -eyy], atol=5e-4)


def test_references_are_those_of_strain():
    rng = np.random.default_rng(1)
    a = np.array([0.0, 20.0]) + rng.normal(scale=0.05, size=(4, 6, 2))
    b = np.array([20.0, 0.0]) + rng.normal(scale=0.05, size=(4, 6, 2))
    for reference in (None, "0:2,0:3", np.s_[1:, :], (np.array([0.0, 20.0]),
                                                      np.array([20.0, 0.0]))):
        got = crystal_strain((a, b), reference=reference)
        want = strain((a, b), reference=reference).reference
        np.testing.assert_array_equal(np.stack(got.reference), np.stack(want))
        direct = strain(real_space((a, b)), reference=real_space(want))
        np.testing.assert_array_equal(got.exx, direct.exx)
    with pytest.raises(ValueError, match="reference vectors a0, b0 must be finite and not "
                                         "parallel"):
        crystal_strain((a, b), reference=(np.array([0.0, 1.0]), np.array([0.0, 2.0])))
