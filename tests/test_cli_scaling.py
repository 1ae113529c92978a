"""``gpucorr refine --scaling {log,none} --power P``: passed to ``gpucorr.refine``, recorded
in the results file, and bad values refused (one line, exit 2) before anything is computed."""
import json

import numpy as np
import pytest

import gpucorr
from gpucorr import cli
from gpucorr.patterns import Circular


@pytest.fixture
def small(tmp_path):
    """Two 64 x 64 CBED frames (radius 3) as .npy and their peaks (rounded) as a text
    file: paths by name."""
    frames = np.concatenate([gpucorr.cbed_frame(64, 64, radius=3, seed=s)[0] for s in (1, 2)])
    peaks = np.rint(gpucorr.cbed_frame(64, 64, radius=3)[2]).astype(int)
    np.save(tmp_path / "scan.npy", frames)
    np.savetxt(tmp_path / "peaks.txt", peaks, fmt="%d")
    return dict(frames=frames, peaks=peaks, npy=str(tmp_path / "scan.npy"),
                peaks_file=str(tmp_path / "peaks.txt"), out=tmp_path / "r.h5")


def refine_argv(small, *extra):
    return ["refine", small["npy"], "--radius", "3", "--peaks", small["peaks_file"],
            "--upsample", "0", "--device", "cpu", "-o", str(small["out"]), *extra]


@pytest.fixture
def calls(monkeypatch):
    """The keyword arguments of each ``gpucorr.refine`` call (which still computes)."""
    seen = []
    refine = gpucorr.refine

    def recording(*args, **kwargs):
        seen.append(kwargs)
        return refine(*args, **kwargs)
    monkeypatch.setattr(gpucorr, "refine", recording)
    return seen


def file_attrs(path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    return attrs, json.loads(attrs["parameters"])


@pytest.mark.parametrize("extra, scaling, power, recorded", [
    ((), None, 1.0, "log"),   # not given: the pattern's default, log
    (("--scaling", "none", "--power", "0.5"), "none", 0.5, "none"),
    (("--scaling", "log", "--power", "0"), "log", 0.0, "log"),
])
def test_scaling_and_power_reach_refine_and_the_file(small, capsys, calls, extra, scaling,
                                                     power, recorded):
    pytest.importorskip("h5py")
    assert cli.main(refine_argv(small, *extra)) == 0
    assert [(c["scaling"], c["power"]) for c in calls] == [(scaling, power)]
    assert f"scaling={recorded}, power={power:g}" in capsys.readouterr().out
    attrs, parameters = file_attrs(small["out"])
    assert attrs["scaling"] == recorded and attrs["power"] == power
    assert parameters["scaling"] == scaling and parameters["power"] == power


def test_no_scaling_changes_the_numbers_as_the_python_api_does(small, capsys):
    h5py = pytest.importorskip("h5py")
    assert cli.main(refine_argv(small, "--scaling", "none", "--power", "0.5")) == 0
    with h5py.File(small["out"], "r") as f:
        refineds = f["refineds"][()]
    expected = gpucorr.refine(small["frames"], small["peaks"],
                              Circular(radius=3), device="cpu",
                              scaling="none", power=0.5)
    np.testing.assert_array_equal(refineds, expected.refineds)
    default = gpucorr.refine(small["frames"], small["peaks"], Circular(radius=3), device="cpu")
    assert not np.array_equal(refineds, default.refineds)  # the options made a difference


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if the command reads the frames or refines anything."""
    import gpucorr.io
    for module, name in ((gpucorr, "refine"), (gpucorr.io, "open_frames")):
        monkeypatch.setattr(module, name, lambda *args, **kwargs: pytest.fail(
            "computed before the options were checked"))


@pytest.mark.parametrize("extra, message", [
    (("--power", "1.5"), "argument --power: must be a number in [0, 1] (1: plain correlation, "
                         "0: phase correlation); got 1.5"),
    (("--power", "-0.5"), "argument --power: must be a number in [0, 1]"),
    (("--power", "nan"), "argument --power: must be a number in [0, 1]"),
    (("--power", "inf"), "argument --power: must be a number in [0, 1]"),
    (("--power", "half"), "argument --power: must be a number; got 'half'"),
    (("--scaling", "sqrt"), "argument --scaling: invalid choice: 'sqrt' (choose from"),
])
def test_bad_values_are_refused_before_computing(small, capsys, no_compute, extra, message):
    assert cli.main(refine_argv(small, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"gpucorr: error: {message}"), err
    assert not small["out"].exists()


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["refine", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--scaling {log,none}" in text
    assert "pattern's default: none for radial-gradient and disk-edge, else log" in text
    assert "--templates {pattern,reference}" in text and "(default: pattern)" in text
    assert "--power P" in text and "(default: 1.0)" in text
