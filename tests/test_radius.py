"""Tests for gpucorr.radius.estimate_radius.

Every expected value is the radius the synthetic frame was drawn with
(:func:`gpucorr.synthetic.cbed_frame`), never a number taken from the code under
test. The lattices have non-integer origins and vectors, so the disk centres sit
at arbitrary sub-pixel positions.
"""
import numpy as np
import pytest

from gpucorr.radius import RadiusEstimate, estimate_radius
from gpucorr.synthetic import cbed_frame

RADII = [4.3, 6.0, 8.0, 8.7, 12.5]
SIZE = 256


def lattice(radius, *, gap=6.0, dose=None, seed=0, all_equal=False, size=SIZE):
    """A ``size``-square lattice frame of disks of ``radius``, ``gap`` pixels apart at
    the closest; returns ``(frame, peaks)``."""
    spacing = 2 * radius + gap
    # a is (spacing, 0) turned by about 3 degrees; b is a turned by -90 degrees
    angle = 0.05
    a = (spacing * np.cos(angle), spacing * np.sin(angle))
    data, _, peaks = cbed_frame(size, size, zero=(size / 2 + 0.37, size / 2 - 0.21), a=a,
                                radius=radius, all_equal=all_equal, dose=dose, seed=seed)
    return data[0], peaks


def single_disk(radius, *, dose=None, seed=0, size=SIZE, zero=(127.4, 129.1)):
    """One disk at ``zero``, drawn even where the border cuts it."""
    data, _, peaks = cbed_frame(size, size, zero=zero, indices=np.array([[0, 0]]),
                                radius=radius, margin=0, dose=dose, seed=seed)
    return data[0], peaks


# ---------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("radius", RADII)
def test_noise_free_lattice(radius):
    frame, _ = lattice(radius)
    assert estimate_radius(frame) == pytest.approx(radius, abs=0.01)


@pytest.mark.parametrize("radius", RADII)
def test_noise_free_pixel_centred(radius):
    # cbed_frame's own lattice: every disk centred on a pixel, axis-aligned
    data, _, _ = cbed_frame(SIZE, SIZE, radius=radius, a=(int(2 * radius + 6), 0))
    assert estimate_radius(data[0]) == pytest.approx(radius, abs=0.05)


@pytest.mark.parametrize("radius", RADII)
@pytest.mark.parametrize("dose, tolerance", [(1e7, 0.02), (1e6, 0.03), (1e5, 0.12)],
                         ids=["dose1e7", "dose1e6", "dose1e5"])
def test_poisson_lattice(radius, dose, tolerance):
    # total counts over the 256x256 frame; 1e5 leaves the brightest disks a few
    # counts per pixel and the faintest well below one
    frame, _ = lattice(radius, dose=dose, seed=int(radius * 10))
    assert estimate_radius(frame) == pytest.approx(radius, abs=tolerance)


@pytest.mark.parametrize("radius", [8.7, 12.5])
def test_very_low_dose(radius):
    # 1e4 counts: about one count per pixel in the brightest disk
    frame, _ = lattice(radius, dose=1e4, seed=1)
    assert estimate_radius(frame) == pytest.approx(radius, abs=0.4)


@pytest.mark.parametrize("radius", [4.3, 20.5, 60.2])
@pytest.mark.parametrize("dose", [None, 1e6], ids=["clean", "dose1e6"])
def test_single_disk(radius, dose):
    # a vacuum probe: one disk, anywhere up to a large radius
    frame, _ = single_disk(radius, dose=dose, seed=3)
    assert estimate_radius(frame) == pytest.approx(radius, abs=0.02 if dose is None else 0.05)


@pytest.mark.parametrize("radius, gap", [(4.3, 1.5), (8.0, 1.0), (12.5, 2.0)])
def test_narrow_gaps(radius, gap):
    # neighbours within the fit window are left out of each disk's fit
    frame, _ = lattice(radius, gap=gap, all_equal=True)
    assert estimate_radius(frame) == pytest.approx(radius, abs=0.02)


def unequal_frame(radius=8.7):
    """One disk 199 times as bright as the rest of an equal-weight lattice."""
    dim, _ = lattice(radius, all_equal=True)
    bright, _ = single_disk(radius, zero=(SIZE / 2 + 0.37, SIZE / 2 - 0.21))
    return dim + 99 * bright  # cbed_frame gives a lone disk weight 2


@pytest.mark.parametrize("dose", [None, 50], ids=["clean", "poisson"])
def test_unequal_brightness(dose):
    frame = unequal_frame()
    if dose is not None:
        frame = np.random.default_rng(5).poisson(frame * dose)
    details = estimate_radius(frame, return_details=True)
    assert details.radius == pytest.approx(8.7, abs=0.02)
    # the faint disks are measured too
    assert len(details.radii) == 10
    scale = 1 if dose is None else dose
    levels = np.sort(details.amplitudes) / scale
    assert levels[-1] == pytest.approx(199, rel=0.02)
    np.testing.assert_allclose(levels[:-1], 1, rtol=0.05)


def test_default_unequal_weights_and_background():
    # cbed_frame's default weights fall off from the centre; a constant offset
    # (dark level) does not matter
    frame, _ = lattice(6.0, dose=1e6, seed=2)
    assert estimate_radius(frame + 100) == pytest.approx(6.0, abs=0.05)


def test_border_disks_are_skipped():
    # a disk cut by the border and a whole one of another radius: only the whole
    # one is measured
    cut, _ = single_disk(15.0, zero=(10.0, 60.3), size=128)
    whole, _ = single_disk(7.4, zero=(80.6, 70.2), size=128)
    assert cut[0].max() > 0  # the cut disk reaches the border
    details = estimate_radius(3 * cut + whole, return_details=True)
    assert len(details.radii) == 1
    assert details.radius == pytest.approx(7.4, abs=0.02)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64, np.uint8])
def test_dtypes(dtype):
    frame, _ = lattice(8.7, dose=1e6, seed=4)
    assert frame.max() <= np.iinfo(np.uint8).max  # the counts fit every dtype
    assert estimate_radius(frame.astype(dtype)) == pytest.approx(8.7, abs=0.05)


@pytest.mark.parametrize("view", ["reversed", "fortran", "strided"])
def test_non_contiguous_views(view):
    frame, _ = lattice(6.0)
    if view == "reversed":
        arg = frame[::-1, ::-1]
    elif view == "fortran":
        arg = np.asfortranarray(frame)
    else:
        big = np.zeros((2 * SIZE, 2 * SIZE), np.float32)
        big[::2, ::2] = frame
        arg = big[::2, ::2]
    assert not arg.flags.c_contiguous
    assert estimate_radius(arg) == pytest.approx(6.0, abs=0.02)


def test_nested_list_input():
    frame, _ = single_disk(5.5, size=32, zero=(15.3, 16.2))
    assert estimate_radius(frame.tolist()) == pytest.approx(5.5, abs=0.02)


def test_input_unmodified():
    frame, _ = lattice(8.0, dose=1e6, seed=6)
    copy = frame.copy()
    estimate_radius(frame)
    np.testing.assert_array_equal(frame, copy)


def test_xp_backends(xp):
    # the same float on every backend
    frame, _ = lattice(8.7, dose=1e6, seed=7)
    on_device = estimate_radius(xp.asarray(frame))
    assert isinstance(on_device, float)
    assert on_device == estimate_radius(frame)


# ---------------------------------------------------------------------------
# Details and options
# ---------------------------------------------------------------------------

def test_return_details():
    frame, peaks = lattice(8.7)
    details = estimate_radius(frame, max_disks=6, return_details=True)
    assert isinstance(details, RadiusEstimate)
    assert isinstance(details.radius, float)
    n = len(details.radii)
    assert n == 6
    assert details.centers.shape == (n, 2)
    for array in (details.errors, details.amplitudes, details.edge_widths, details.inliers):
        assert array.shape == (n,)
    assert details.inliers.all()
    np.testing.assert_allclose(details.radii, 8.7, atol=0.02)
    # each fitted centre is one of the drawn disk centres
    distance = np.linalg.norm(details.centers[:, None, :] - peaks[None, :, :], axis=-1)
    assert distance.min(axis=1).max() < 0.02
    # cbed_frame gives the pixel nearest a disk centre the disk's full weight
    nearest = np.round(details.centers).astype(int)
    np.testing.assert_allclose(details.amplitudes, frame[nearest[:, 0], nearest[:, 1]],
                               rtol=0.01)


def test_max_disks_one():
    frame, _ = lattice(12.5)
    details = estimate_radius(frame, max_disks=1, return_details=True)
    assert len(details.radii) == 1
    assert details.radius == pytest.approx(12.5, abs=0.02)


def test_radius_range_excludes_disks():
    # a large disk and smaller ones: the range picks which are measured
    small, _ = single_disk(5.2, zero=(30.4, 40.7), size=160)
    large, _ = single_disk(22.6, zero=(100.3, 95.8), size=160)
    frame = small + large
    assert estimate_radius(frame, radius_range=(2, 10)) == pytest.approx(5.2, abs=0.02)
    assert estimate_radius(frame, radius_range=(15, 40)) == pytest.approx(22.6, abs=0.02)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("frame, error, match", [
    (np.zeros((4, 16, 16)), ValueError,
     r"frame must be a 2-D array; got 3-D array of shape \(4, 16, 16\)"),
    (np.zeros(16), ValueError, r"frame must be a 2-D array; got 1-D"),
    (np.zeros((2, 16)), ValueError, r"frame must be at least 3x3 pixels; got shape \(2, 16\)"),
    (np.ones((16, 16), complex), TypeError,
     r"frame must be a real-valued array .*complex dtype complex128"),
    (np.array([["a", "b"], ["c", "d"]]), TypeError,
     r"frame must be a real-valued array .*non-numeric"),
    (np.full((16, 16), 3.0), ValueError, r"frame must not be constant; all pixels are 3\.0"),
    (np.where(np.eye(16), np.nan, 1.0), ValueError,
     r"frame must contain only finite values; got NaN or Inf"),
    (np.where(np.eye(16), np.inf, 1.0), ValueError, r"frame must contain only finite values"),
    ([[1, 2], [3]], TypeError, r"frame must be a 2-D real-valued array; got list"),
], ids=["3d", "1d", "tiny", "complex", "strings", "constant", "nan", "inf", "ragged"])
def test_bad_frame(frame, error, match):
    with pytest.raises(error, match=match):
        estimate_radius(frame)


def test_no_disk_found():
    # a single hot pixel is no disk of radius >= 1
    frame = np.zeros((64, 64))
    frame[30, 30] = 100
    with pytest.raises(ValueError, match=r"frame has no disk whose edge could be fitted "
                                         r"with a radius in \[1, 32\] pixels"):
        estimate_radius(frame)


def test_only_border_disk():
    frame, _ = single_disk(15.0, zero=(10.0, 60.3), size=128)
    with pytest.raises(ValueError, match="frame has no disk .* away from the border"):
        estimate_radius(frame)


def test_no_disk_in_range():
    frame, _ = single_disk(5.2, size=64, zero=(30.4, 31.7))
    with pytest.raises(ValueError, match=r"radius in \[10, 20\]"):
        estimate_radius(frame, radius_range=(10, 20))


@pytest.mark.parametrize("value, error, match", [
    (0, ValueError, r"max_disks must be an int >= 1; got 0"),
    (2.5, TypeError, r"max_disks must be an int >= 1; got 2\.5 \(float\)"),
    (True, TypeError, r"max_disks must be an int >= 1; got True \(bool\)"),
])
def test_bad_max_disks(value, error, match):
    frame, _ = single_disk(5.2, size=64, zero=(30.4, 31.7))
    with pytest.raises(error, match=match):
        estimate_radius(frame, max_disks=value)


@pytest.mark.parametrize("value, error, match", [
    ((5, 2), ValueError, r"radius_range must be \(min, max\) with 0 < min < max.*got \(5, 2\)"),
    ((0, 3), ValueError, r"radius_range must be \(min, max\) with 0 < min < max"),
    ((1, np.inf), ValueError, r"both finite; got \(1, inf\)"),
    ((1,), TypeError, r"radius_range must be a pair of numbers \(min, max\); got \(1,\)"),
    (5, TypeError, r"radius_range must be a pair of numbers \(min, max\); got 5"),
    (("a", "b"), TypeError, r"radius_range must be a pair of numbers"),
])
def test_bad_radius_range(value, error, match):
    frame, _ = single_disk(5.2, size=64, zero=(30.4, 31.7))
    with pytest.raises(error, match=match):
        estimate_radius(frame, radius_range=value)


def test_cupy_frame_is_read_to_the_host(any_cupy):
    # CuPy forbids implicit host conversion; the frame is copied with .get()
    frame, _ = lattice(6.0, dose=1e6, seed=8)
    assert estimate_radius(any_cupy.asarray(frame)) == estimate_radius(frame)


def test_the_radius_does_not_depend_on_the_intensity_unit():
    """The fit runs in units of about the frame's largest value: a frame scaled by any
    factor gives the same radius (its tolerances were absolute: 0.04 px off at 1e-11,
    no disk at 1e200), without warnings."""
    import warnings
    frame = cbed_frame(128, 128, radius=4.3)[0][0].astype(np.float64)
    expected = estimate_radius(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for factor in (1e-30, 1e-11, 1e-10, 3.7, 1e6, 1e100, 1e200):
            assert estimate_radius(frame * factor) == pytest.approx(expected, abs=1e-9)
    details = estimate_radius(frame * 1e-11, return_details=True)
    np.testing.assert_allclose(details.amplitudes * 1e11,
                               estimate_radius(frame, return_details=True).amplitudes,
                               rtol=1e-9)
