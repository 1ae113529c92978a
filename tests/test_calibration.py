"""gpucorr.Calibration: parsing pixel sizes and scan steps, conversions, file metadata."""
import numpy as np
import pytest

import gpucorr
from gpucorr.calibration import Calibration, parse_quantity


@pytest.mark.parametrize("text, kind, expected", [
    ("0.02/nm", "pixel", (0.02, "1/nm")),
    ("0.02 1/nm", "pixel", (0.02, "1/nm")),
    ("0.02 nm^-1", "pixel", (0.02, "1/nm")),
    ("0.002 1/Å", "pixel", (0.02, "1/nm")),
    ("0.002/A", "pixel", (0.02, "1/nm")),
    ("0.5mrad", "pixel", (0.5, "mrad")),
    ("0.5 mrad", "pixel", (0.5, "mrad")),
    ("5e-4 rad", "pixel", (0.5, "mrad")),
    ("2nm", "scan", (2.0, "nm")),
    ("2 nm", "scan", (2.0, "nm")),
    ("15 Å", "scan", (1.5, "nm")),
    ("1.5 um", "scan", (1500.0, "nm")),
    (" 20pm ", "scan", (0.02, "nm")),
])
def test_parse_quantity(text, kind, expected):
    value, unit = parse_quantity(text, kind)
    assert unit == expected[1] and value == pytest.approx(expected[0], rel=1e-12)


@pytest.mark.parametrize("text, kind, message", [
    ("0.02", "pixel", r"pixel_size: give a unit \(1/nm, 1/Å or mrad\), e.g. 0.02/nm; got '0.02'"),
    ("fast", "pixel", r"pixel_size: expected a number and a unit .*; got 'fast'"),
    ("0 1/nm", "pixel", r"pixel_size: must be a finite number > 0; got '0 1/nm'"),
    ("-2nm", "scan", r"scan_step: must be a finite number > 0; got '-2nm'"),
    ("0.02 nm", "pixel", r"pixel_size: unknown unit 'nm'; allowed: 1/nm, 1/Å or mrad"),
    ("2 1/nm", "scan", r"scan_step: unknown unit '1/nm'; allowed: nm, Å, pm or µm"),
    ("2 furlongs", "scan", r"scan_step: unknown unit 'furlongs'"),
])
def test_parse_quantity_errors(text, kind, message):
    with pytest.raises(ValueError, match=message):
        parse_quantity(text, kind)


def test_calibration_from_numbers_and_strings():
    assert Calibration("0.02/nm", scan_step="2nm") == Calibration(0.02, "1/nm", 2.0, "nm")
    assert Calibration(0.2, "1/Å") == Calibration(2.0, "1/nm")   # converted, kept in 1/nm
    assert Calibration(scan_step=5, scan_unit="Å").scan_step == pytest.approx(0.5)
    cal = Calibration()
    assert cal.pixel_size is None and cal.scan_step is None and not cal.calibrated
    with pytest.raises(ValueError, match=r"pixel_size must be a finite number > 0 or None; "
                                         r"got -1.0"):
        Calibration(-1)
    with pytest.raises(TypeError, match="scan_step must be a number > 0 or None; got list"):
        Calibration(scan_step=[2])
    with pytest.raises(ValueError, match="pixel_unit: unknown unit 'px'"):
        Calibration(0.1, "px")
    with pytest.raises(Exception):  # frozen
        cal.pixel_size = 1.0


def test_conversions_do_not_modify_their_input():
    cal = Calibration("0.5mrad", scan_step="2nm")
    vectors = np.array([[0.0, 20.0], [24.0, 0.0]])
    before = vectors.copy()
    np.testing.assert_allclose(cal.reciprocal(vectors), [[0.0, 10.0], [12.0, 0.0]])
    np.testing.assert_allclose(cal.reciprocal(vectors, origin=[4.0, 0.0]),
                               [[-2.0, 10.0], [10.0, 0.0]])
    np.testing.assert_array_equal(vectors, before)
    np.testing.assert_allclose(cal.scan_axis(4), [0, 2, 4, 6])
    np.testing.assert_allclose(cal.to_pixels([10.0, 1.0], "mrad"), [20.0, 2.0])
    with pytest.raises(ValueError, match="cannot be compared with a pixel size in mrad"):
        cal.to_pixels([1.0], "1/nm")
    with pytest.raises(ValueError, match="need a pixel size"):
        Calibration().to_pixels([1.0], "1/nm")
    assert Calibration().reciprocal(vectors) is None


def test_update_puts_known_values_over():
    file_cal = Calibration("0.02/nm", scan_step="3nm")
    assert file_cal.update(Calibration(scan_step="2nm")) == Calibration("0.02/nm",
                                                                         scan_step="2nm")
    assert file_cal.update(Calibration()) == file_cal
    assert file_cal.update(Calibration("1 mrad")).pixel_unit == "mrad"


@pytest.mark.parametrize("attrs, expected", [
    ({"pixel_size": 0.02, "pixel_unit": "1/nm", "scan_step": 2.0, "scan_unit": "nm"},
     Calibration(0.02, "1/nm", 2.0, "nm")),
    ({"PIXEL_SIZE": np.float32(0.5), "Pixel_Units": b"mrad"}, Calibration(0.5, "mrad")),
    ({"pixel_size": "0.02/nm", "scan_step": "15 Å"}, Calibration(0.02, scan_step=1.5)),
    ({"scan_step": 2.0}, Calibration(scan_step=2.0)),            # nm by default
    ({"pixel_size": 0.02}, Calibration()),                        # no unit: unknown
    ({"pixel_size": 0.02, "pixel_unit": "px"}, Calibration()),    # not physical
    ({"Q_pixel_size": 0.02, "Q_pixel_units": "A^-1", "R_pixel_size": 1.0,
      "R_pixel_units": "nm"}, Calibration(0.2, "1/nm", 1.0)),     # py4DSTEM
    ({}, Calibration()),
])
def test_from_metadata_attributes(attrs, expected):
    cal = Calibration.from_metadata(attrs)
    assert cal.pixel_unit == expected.pixel_unit and cal.scan_unit == expected.scan_unit
    for name in ("pixel_size", "scan_step"):
        got, want = getattr(cal, name), getattr(expected, name)
        assert (got is None and want is None) or got == pytest.approx(want), name


def test_from_metadata_rosettasciio_axes():
    def axis(scale, units, navigate):
        return {"scale": scale, "units": units, "navigate": navigate, "size": 4, "offset": 0}
    axes = [axis(2.0, "nm", True), axis(2.0, "nm", True), axis(0.02, "1/nm", False),
            axis(0.02, "1/nm", False)]
    assert Calibration.from_metadata(axes=axes) == Calibration(0.02, "1/nm", 2.0, "nm")
    axes[3] = axis(0.03, "1/nm", False)      # the two detector axes disagree: unknown
    assert Calibration.from_metadata(axes=axes).pixel_size is None
    undefined = object()                      # HyperSpy's t.Undefined units: unknown
    axes = [axis(1.0, undefined, True), axis(0.5, "mrad", False), axis(0.5, "mrad", False)]
    assert Calibration.from_metadata(axes=axes) == Calibration(0.5, "mrad")


def test_public_names():
    assert gpucorr.Calibration is Calibration
    from gpucorr.radius import estimate_radius
    assert gpucorr.estimate_radius is estimate_radius


def test_refine_result_repr_is_short():
    frames, _, peaks = gpucorr.cbed_frame(radius=4)
    stack = np.repeat(frames, 50, axis=0)
    res = gpucorr.refine(stack, np.rint(peaks).astype(int), gpucorr.patterns.Circular(radius=4))
    text = repr(res)
    assert len(text) < 300, text
    assert text == ("RefineResult(frames=(50,), peaks=49, centers=int32(50, 49, 2), "
                    "refineds=float32(50, 49, 2), heights=float32(50, 49), "
                    "elevations=float32(50, 49))")
