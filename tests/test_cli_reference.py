"""The strain reference: a region of scan positions or a known lattice, in
gpucorr.lattice.strain and on the command line (--reference, --reference-lattice), and
the errors of the new options (found before anything is computed)."""
import os
from pathlib import Path

import numpy as np
import pytest

import gpucorr
from gpucorr import cli, demo
from gpucorr.lattice import crystal_strain, parse_region, region_mask, strain

h5py = pytest.importorskip("h5py")


# ------------------------------------------------------------------ the API

def lattice_stack():
    """Lattice vectors of a 3 x 4 scan whose right half is stretched 1 % along x."""
    a = np.tile([0.0, 20.0], (3, 4, 1))
    b = np.tile([21.0, 0.0], (3, 4, 1))
    a[:, 2:] *= 1.01
    return a, b


@pytest.mark.parametrize("region", ["0:3,0:2", ":,:2", np.s_[0:3, 0:2], (slice(None),
                                                                           slice(0, 2))])
def test_strain_reference_region(region):
    a, b = lattice_stack()
    before = a.copy()
    res = strain((a, b), reference=region)
    mask = np.zeros((3, 4), bool)
    mask[:, :2] = True
    expected = strain((a, b), reference=mask)
    np.testing.assert_array_equal(res.exx, expected.exx)
    np.testing.assert_allclose(res.exx[:, 2:], 0.01, atol=1e-12)
    np.testing.assert_allclose(res.exx[:, :2], 0.0, atol=1e-12)
    np.testing.assert_array_equal(a, before)
    # the median of the whole scan is another reference
    assert abs(strain((a, b)).exx[0, 0]) > 1e-3


def test_region_helpers():
    assert parse_region("1:3, -2:") == (slice(1, 3), slice(-2, None))
    assert parse_region("::2") == (slice(None, None, 2),)
    np.testing.assert_array_equal(region_mask("-1", (3,)), [False, False, True])
    np.testing.assert_array_equal(region_mask(np.s_[1:2, 0:1], (2, 2)),
                                  [[False, False], [True, False]])


@pytest.mark.parametrize("region, exc, message", [
    ("0:10", ValueError, r"region '0:10' has 1 scan axis; the scan has 2, shape \(3, 4\)"),
    ("0:1,0:1,0:1", ValueError, "region '0:1,0:1,0:1' has 3 scan axes; the scan has 2"),
    ("5:9,0:2", ValueError, r"region '5:9,0:2' selects no scan position of the scan of shape "
                            r"\(3, 4\)"),
    ("1:2:0,0:1", ValueError, "a step of 0"),
    ("0:1:2:3,0:1", ValueError, "region must be start:stop per scan axis"),
    (",0:1", ValueError, "an empty scan axis"),
    ("left", TypeError, r"reference must be None, .* or a region such as '0:10,0:64'; "
                        "got 'left'"),
    (np.s_[0:1, 0:1, 0:1], ValueError, "region '0:1,0:1,0:1' has 3 scan axes"),
])
def test_strain_reference_region_errors(region, exc, message):
    with pytest.raises(exc, match=message):
        strain(lattice_stack(), reference=region)


def test_region_helper_errors():
    with pytest.raises(ValueError, match="region must be start:stop per scan axis, separated "
                                         r"by commas \(e.g. '0:10,0:64'\); got '1-2'"):
        parse_region("1-2")
    with pytest.raises(TypeError, match="region must be a string like '0:10,0:64'; got int"):
        parse_region(3)
    with pytest.raises(TypeError, match="region must be a string like '0:10,0:64' or a tuple "
                                        "of slices; got 3"):
        region_mask(3, (2,))


# ------------------------------------------------------------------ the command line

@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A 4 x 8 synthetic scan (left quarter unstrained) as .npy: path, field, folder."""
    frames, reference, field = demo.make_scan((4, 8), seed=1)
    folder = tmp_path_factory.mktemp("reference")
    np.save(folder / "scan.npy", frames)
    return dict(path=str(folder / "scan.npy"), frames=frames, field=field, dir=folder,
                reference=reference)


def run(scan, *extra, name="out.h5"):
    out = scan["dir"] / name
    argv = ["refine", scan["path"], "--radius", "8", "--device", "cpu", "-o", str(out),
            "--force", *extra]
    assert cli.main(argv) == 0
    with h5py.File(out, "r") as f:
        return {k: f[k][()] for k in ("lattice/a", "lattice/b", "strain/exx", "strain/eyy",
                                      "strain/reference")}, dict(f["strain/exx"].attrs)


def test_reference_region_matches_the_api(scan, capsys):
    data, attrs = run(scan, "--reference", ":,0:2", "--upsample", "0")
    expected = crystal_strain((data["lattice/a"], data["lattice/b"]), reference=np.s_[:, 0:2])
    np.testing.assert_array_equal(data["strain/exx"], expected.exx)
    np.testing.assert_array_equal(data["strain/reference"], np.stack(expected.reference))
    assert "over scan positions [:,0:2]" in attrs["description"]


def test_reference_lattice_numbers_files_and_units(scan, capsys):
    # the unstrained lattice in the basis the peaks were indexed in: that of the left
    # quarter of the scan, in pixels
    region, _ = run(scan, "--reference", ":,0:2", name="region.h5")
    a0, b0 = region["strain/reference"]
    numbers = ",".join(f"{v:.6f}" for v in (*a0, *b0))
    # (with '=': numbers that start with '-' would read as an option)
    data, attrs = run(scan, f"--reference-lattice={numbers}")
    assert "the given lattice a0 = " in attrs["description"]
    np.testing.assert_allclose(data["strain/reference"], np.stack([a0, b0]), atol=1e-6)
    np.testing.assert_allclose(data["strain/exx"], region["strain/exx"], atol=1e-7)
    for k, name in enumerate(("exx", "eyy")):
        error = np.sqrt(np.mean((data[f"strain/{name}"] - scan["field"][k]) ** 2))
        assert error < 2e-4, (name, error)
    # the same lattice in 1/nm with a pixel size, from a text file, and from the results
    # file of a reference scan (its median lattice)
    physical = " ".join(f"{v * 0.02:.8f}" for v in (*a0, *b0)) + " 1/nm"
    in_nm, _ = run(scan, "--pixel-size", "0.02/nm", f"--reference-lattice={physical}",
                   name="nm.h5")
    np.testing.assert_allclose(in_nm["strain/reference"], np.stack([a0, b0]), atol=1e-5)
    np.savetxt(scan["dir"] / "lattice.txt", np.stack([a0, b0]), header="y x: a0, then b0")
    from_text, _ = run(scan, "--reference-lattice", str(scan["dir"] / "lattice.txt"),
                       name="text.h5")
    np.testing.assert_allclose(from_text["strain/exx"], region["strain/exx"], atol=1e-12)
    from_results, _ = run(scan, "--reference-lattice", str(scan["dir"] / "out.h5"),
                          name="again.h5")
    median = crystal_strain((data["lattice/a"], data["lattice/b"]))
    np.testing.assert_allclose(from_results["strain/exx"], median.exx, atol=1e-12)


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if the command refines anything or sums the frames."""
    from gpucorr.cli import maps

    def called(*args, **kwargs):
        raise AssertionError("computed before the options were checked")
    monkeypatch.setattr(gpucorr, "refine", called)
    monkeypatch.setattr(maps, "sum_frame", called)


@pytest.mark.parametrize("extra, message", [
    (["--reference", "0:10;0:64"], r"--reference must be start:stop per scan axis, separated "
                                   r"by commas \(e.g. 0:10,0:64\); got '0:10;0:64'"),
    (["--reference", "0:2"], r"--reference 0:2: region '0:2' has 1 scan axis; the scan has 2, "
                             r"shape \(4, 8\)"),
    (["--reference", "9:12,0:2"], "--reference 9:12,0:2: region '9:12,0:2' selects no scan "
                                  "position"),
    (["--reference", "0:2,0:2", "--reference-lattice", "0,20,20,0"],
     "--reference and --reference-lattice: give one of them, not both"),
    (["--reference-lattice", "0,20,20"], "--reference-lattice must be a file or four numbers "
                                         "a0y,a0x,b0y,b0x"),
    (["--reference-lattice", "0,20,40,0 1/nm"], "--reference-lattice '0,20,40,0 1/nm': values "
                                                "in 1/nm need a pixel size .* give --pixel-size"),
    (["--reference-lattice", "0,20,0,40"], r"--reference-lattice 0,20,0,40: a0 = \(0.0, 20.0\) "
                                           r"and b0 = \(0.0, 40.0\) are parallel"),
    (["--pixel-size", "0.5mrad", "--reference-lattice", "0,1,1,0 1/nm"],
     "cannot be compared with a pixel size in mrad"),
    (["--pixel-size", "0.02"], r"--pixel-size: give a unit \(1/nm, 1/Å or mrad\), e.g. "
                               "0.02/nm; got '0.02'"),
    (["--pixel-size", "0.02 nm"], "--pixel-size: unknown unit 'nm'; allowed: 1/nm, 1/Å or mrad"),
    (["--scan-step=-1nm"], "--scan-step: must be a finite number > 0; got '-1nm'"),
    (["--scan-step", "2 1/nm"], "--scan-step: unknown unit '1/nm'; allowed: nm"),
    (["--radius", "big"], "--radius must be a number > 0 .disk radius in px. or auto; "
                          "got 'big'"),
    (["--radius", "-3"], "--radius must be a number > 0"),
    (["--plots", "{npy}"], "--plots {npy}: is a file; name a folder for the pictures"),
    (["--plots", "{dir}/no/such"], "--plots {dir}/no/such: no such folder"),
])
def test_option_errors_before_computing(scan, capsys, no_compute, extra, message):
    import re
    extra = [e.format(npy=scan["path"], dir=scan["dir"]) for e in extra]
    message = message.format(npy=re.escape(scan["path"]), dir=re.escape(str(scan["dir"])))
    argv = ["refine", scan["path"], "--device", "cpu", "-o", str(scan["dir"] / "never.h5")]
    if "--radius" not in extra:
        argv += ["--radius", "8"]
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpucorr: error: "), err
    assert re.search(message, err), err
    assert not (scan["dir"] / "never.h5").exists()


def test_reference_needs_lattice_indices(scan, capsys, tmp_path):
    np.savetxt(tmp_path / "peaks.txt", np.array([[128, 128], [140, 150]]), fmt="%d")
    out = tmp_path / "out.h5"
    assert cli.main(["refine", scan["path"], "--radius", "8", "--device", "cpu", "--peaks",
                     str(tmp_path / "peaks.txt"), "--reference", "0:2,0:2",
                     "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        "gpucorr: error: --reference: strain needs lattice indices: use --peaks auto or a "
        "peaks file of y x i j rows\n")
    assert not out.exists()


def test_the_input_file_is_not_modified(scan):
    before = os.path.getmtime(scan["path"]), Path(scan["path"]).read_bytes()
    run(scan, "--reference", "0:4,0:2", "--upsample", "0", name="same.h5")
    assert (os.path.getmtime(scan["path"]), Path(scan["path"]).read_bytes()) == before


def test_templates_from_the_reference_region(scan, capsys):
    """--templates reference: each disk against its own mean over the region; the same as
    gpucorr.refine_by_reference with the command's peaks."""
    data, _ = run(scan, "--reference", "0:4,0:2", "--templates", "reference",
                  name="templates.h5")
    printed = capsys.readouterr().out
    assert "templates: each disk's own mean over scan positions [0:4,0:2]" in printed
    with h5py.File(scan["dir"] / "templates.h5", "r") as f:
        refineds, peaks = f["refineds"][()], f["peaks"][()]
        assert f.attrs["templates"] == "reference" and f.attrs["scaling"] == "log"
    expected = gpucorr.refine_by_reference(scan["frames"], peaks, "0:4,0:2",
                                           pattern=gpucorr.patterns.Circular(radius=8))
    np.testing.assert_array_equal(refineds, expected.refineds)
    for k, name in enumerate(("exx", "eyy")):
        error = np.sqrt(np.mean((data[f"strain/{name}"] - scan["field"][k]) ** 2))
        assert error < 5e-4, (name, error)


@pytest.mark.parametrize("extra, message", [
    (["--templates", "reference"], "--templates reference needs --reference REGION"),
    (["--templates", "reference", "--reference", "0:4,0:2", "--mode", "full"],
     "--templates reference needs --mode fast; got --mode full"),
    (["--templates", "reference", "--reference", "0:4,0:2", "--power", "0.5"],
     "--power must be 1; got 0.5"),
])
def test_templates_from_the_reference_need_a_region_fast_mode_and_power_1(scan, capsys, extra,
                                                                          message):
    argv = ["refine", scan["path"], "--radius", "8", "--device", "cpu", "-o",
            str(scan["dir"] / "never.h5"), *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (scan["dir"] / "never.h5").exists()
