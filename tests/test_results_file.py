"""The results file of ``gpucorr refine`` explains itself: units, axes, descriptions,
calibration, the strain reference; context maps; what h5py and rosettasciio read."""
import importlib.util
import json
import os

import numpy as np
import pytest

import gpucorr
from gpucorr import cli, demo

h5py = pytest.importorskip("h5py")

SCAN = (6, 8)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A synthetic scan with a known strain field saved as HDF5 with its calibration in the
    attributes (pixel size on the dataset, scan step on its group): path, frames, field."""
    frames, _, field = demo.make_scan(SCAN, seed=1)
    folder = tmp_path_factory.mktemp("calibrated")
    path = folder / "scan.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("entry/data", data=frames, chunks=(1, 1) + frames.shape[2:])
        ds.attrs["pixel_size"] = 0.02
        ds.attrs["pixel_unit"] = "1/nm"
        f["entry"].attrs["scan_step"] = "2 nm"
    return dict(path=str(path), frames=frames, field=field, dir=folder)


def read(path):
    """Datasets (with their attributes) and the file's attributes."""
    data, attrs = {}, {}

    def visit(name, obj):  # soft links (the NeXus signals) are not visited
        if isinstance(obj, h5py.Dataset):
            data[name], attrs[name] = obj[()], dict(obj.attrs)
    with h5py.File(path, "r") as f:
        f.visititems(visit)
        return data, attrs, dict(f.attrs)


def test_refine_a_calibrated_hdf5_scan_against_a_reference_region(calibrated, capsys):
    """The issue's test: a synthetic scan saved as HDF5 with calibration, refined with a
    reference region; the file's units and the strain against the known field."""
    out = calibrated["dir"] / "results.h5"
    # the unstrained part of the demo field: the left quarter of the scan (columns 0, 1)
    assert cli.main(["refine", calibrated["path"] + ":/entry/data", "--radius", "8",
                     "--device", "cpu", "--reference", "0:6,0:2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "calibration: pixel 0.02 1/nm, scan step 2 nm" in printed
    assert "strain relative to the median lattice over scan positions [0:6,0:2]" in printed
    data, attrs, file_attrs = read(out)

    # units, axes and a description on every dataset
    for name, a in attrs.items():
        assert {"units", "axes", "description"} <= set(a), name
        assert len(a["axes"].split(", ")) == data[name].ndim, (name, a["axes"])
        assert a["description"] and "\n" not in a["description"], name
    assert attrs["refineds"]["units"] == "px"
    assert attrs["refineds"]["axes"] == "scan_y, scan_x, peak, yx"
    assert attrs["heights"]["axes"] == "scan_y, scan_x, peak"
    assert attrs["lattice/a"]["units"] == "px"
    assert attrs["lattice/a_calibrated"]["units"] == "1/nm"
    assert attrs["refineds_calibrated"]["units"] == "1/nm"
    assert attrs["strain/exx"]["units"] == "dimensionless"
    assert attrs["strain/rotation"]["units"] == "rad"
    assert attrs["scan_x"]["units"] == "nm" and attrs["scan_y"]["axes"] == "scan_y"
    assert "[0:6,0:2]" in attrs["strain/exx"]["description"]

    # the calibration, version, parameters and device on the file
    assert file_attrs["pixel_size"] == 0.02 and file_attrs["pixel_unit"] == "1/nm"
    assert file_attrs["scan_step"] == 2.0 and file_attrs["scan_unit"] == "nm"
    assert file_attrs["gpucorr_version"] == gpucorr.__version__
    assert file_attrs["device"] == "cpu" and file_attrs["radius"] == 8.0
    assert json.loads(file_attrs["parameters"])["reference"] == "0:6,0:2"
    assert "0:6,0:2" in file_attrs["strain_reference"]

    # physical units beside pixels
    np.testing.assert_allclose(data["lattice/a_calibrated"], data["lattice/a"] * 0.02)
    np.testing.assert_allclose(data["refineds_calibrated"],
                               (data["refineds"] - data["lattice/zero"][..., None, :]) * 0.02,
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(data["scan_x"], np.arange(SCAN[1]) * 2.0)

    # the strain against the known field (demo: RMS about 3e-5)
    for k, name in enumerate(("exx", "eyy", "exy", "rotation")):
        error = np.sqrt(np.mean((data[f"strain/{name}"] - calibrated["field"][k]) ** 2))
        assert error < 2e-4, (name, error)
    # a reference region is not the median of the whole scan: against the median the
    # unstrained columns would show strain
    median = gpucorr.lattice.strain((data["lattice/a"], data["lattice/b"]))
    assert abs(np.mean(median.exx[:, :2])) > 1e-3 > abs(np.mean(data["strain/exx"][:, :2]))


def test_context_maps_are_the_virtual_bright_field_and_the_mean_elevation(calibrated):
    out = calibrated["dir"] / "maps.h5"
    assert cli.main(["refine", calibrated["path"] + ":/entry/data", "--radius", "8",
                     "--device", "cpu", "--upsample", "0", "-o", str(out)]) == 0
    data, attrs, _ = read(out)
    frames = calibrated["frames"].astype(np.float64)
    cy, cx = attrs["maps/vbf"]["center"]
    radius = attrs["maps/vbf"]["radius"]
    yy, xx = np.mgrid[0:frames.shape[2], 0:frames.shape[3]]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    np.testing.assert_allclose(data["maps/vbf"], (frames * disk).sum(axis=(2, 3)))
    # the central disk: the (0, 0) lattice point among the sum-frame peaks
    zero = np.flatnonzero((data["indices"] == 0).all(axis=1))[0]
    np.testing.assert_array_equal([cy, cx], data["peaks"][zero])
    np.testing.assert_allclose(data["maps/elevation"], data["elevations"].mean(axis=-1),
                               rtol=1e-6)
    assert attrs["maps/vbf"]["axes"] == "scan_y, scan_x"
    np.testing.assert_allclose(data["sum_frame"], frames.sum(axis=(0, 1)))
    # no region given: the median lattice of the scan
    assert "median lattice of the whole scan" in attrs["strain/exx"]["description"]


def test_command_line_calibration_wins_over_the_file(calibrated, capsys):
    out = calibrated["dir"] / "override.h5"
    assert cli.main(["refine", calibrated["path"] + ":/entry/data", "--radius", "8",
                     "--device", "cpu", "--upsample", "0", "--scan-step", "15 Å",
                     "--pixel-size", "0.4mrad", "-o", str(out)]) == 0
    assert "calibration: pixel 0.4 mrad, scan step 1.5 nm" in capsys.readouterr().out
    data, attrs, file_attrs = read(out)
    assert file_attrs["pixel_unit"] == "mrad" and file_attrs["scan_step"] == 1.5
    assert attrs["lattice/a_calibrated"]["units"] == "mrad"
    np.testing.assert_allclose(data["lattice/a_calibrated"], data["lattice/a"] * 0.4)


def test_rosettasciio_reads_the_maps_as_calibrated_signals(calibrated):
    nexus = pytest.importorskip("rsciio.nexus")
    out = calibrated["dir"] / "signals.h5"
    assert cli.main(["refine", calibrated["path"] + ":/entry/data", "--radius", "8",
                     "--device", "cpu", "--upsample", "0", "-o", str(out)]) == 0
    signals = {s["metadata"]["General"]["title"]: s
               for s in nexus.file_reader(str(out), nxdata_only=True)}
    assert {"strain_exx", "strain_eyy", "strain_exy", "strain_rotation", "maps_vbf",
            "maps_elevation", "lattice_residual"} <= set(signals)
    exx = signals["strain_exx"]
    data, _, _ = read(out)
    np.testing.assert_array_equal(exx["data"], data["strain/exx"])
    assert [(a["name"], float(a["scale"]), a["units"]) for a in exx["axes"]] == [
        ("scan_y", 2.0, "nm"), ("scan_x", 2.0, "nm")]


def test_uncalibrated_npy_and_a_stack_of_frames(tmp_path, capsys):
    """A 1-D stack of frames: no scan coordinates, no NeXus signals; axes say 'frame';
    one frame says 'refined 1 frame'."""
    frames, _, _ = demo.make_scan((1, 3), seed=2)
    np.save(tmp_path / "stack.npy", frames[0])
    assert cli.main(["refine", str(tmp_path / "stack.npy"), "--radius", "8", "--device", "cpu",
                     "--upsample", "0"]) == 0
    printed = capsys.readouterr().out
    assert "refined 3 frames in" in printed
    assert "calibration: pixel size unknown (px), scan step unknown" in printed
    data, attrs, file_attrs = read(tmp_path / "stack_npy-gpucorr.h5")
    assert attrs["refineds"]["axes"] == "frame, peak, yx"
    assert "scan_x" not in data and "lattice/a_calibrated" not in data
    assert "pixel_size" not in file_attrs
    np.save(tmp_path / "one.npy", frames[0, 0])
    assert cli.main(["refine", str(tmp_path / "one.npy"), "--radius", "8", "--device", "cpu",
                     "--upsample", "0"]) == 0
    assert "refined 1 frame in" in capsys.readouterr().out
    data, attrs, _ = read(tmp_path / "one_npy-gpucorr.h5")
    assert attrs["refineds"]["axes"] == "peak, yx" and data["maps/vbf"].shape == ()


def test_default_output_names_differ_by_extension_and_dataset(tmp_path, capsys):
    frames, _, _ = demo.make_scan((1, 2), seed=4)
    np.save(tmp_path / "scan.npy", frames[0])
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["entry/data"] = frames[0]
        f["entry/other"] = frames[0]
    inputs = [str(tmp_path / "scan.npy"), str(tmp_path / "scan.h5") + ":/entry/data",
              str(tmp_path / "scan.h5") + ":/entry/other"]
    for spec in inputs:
        assert cli.main(["refine", spec, "--radius", "8", "--device", "cpu",
                         "--upsample", "0"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith("-gpucorr.h5")) == [
        "scan_h5_entry_data-gpucorr.h5", "scan_h5_entry_other-gpucorr.h5",
        "scan_npy-gpucorr.h5"]


def test_radius_auto_measures_the_disks(calibrated, capsys):
    out = calibrated["dir"] / "auto.h5"
    assert cli.main(["refine", calibrated["path"] + ":/entry/data", "--radius", "auto",
                     "--device", "cpu", "--upsample", "0", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "--radius auto: 8.0" in printed, printed
    _, _, file_attrs = read(out)
    assert file_attrs["radius"] == pytest.approx(8.0, abs=0.1)
    assert file_attrs["radius_source"] == "estimated from the sum frame (estimate_radius)"
    # in any case, as the option reads it
    assert cli.main(["refine", calibrated["path"] + ":/entry/data", "--radius", " AUTO",
                     "--device", "cpu", "--upsample", "0", "-o", str(out), "--force"]) == 0
    assert read(out)[2]["radius_source"] == "estimated from the sum frame (estimate_radius)"
    assert cli.main(["refine", calibrated["path"] + ":/entry/data", "--radius", "8",
                     "--device", "cpu", "--upsample", "0", "-o", str(out), "--force"]) == 0
    assert read(out)[2]["radius_source"] == "given"


def test_radius_auto_with_disk_edge_fits_the_edges(calibrated, capsys):
    out = calibrated["dir"] / "edge.h5"
    assert cli.main(["refine", calibrated["path"] + ":/entry/data", "--radius", "auto",
                     "--pattern", "disk-edge", "--device", "cpu", "--upsample", "0",
                     "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "for disk-edge (fit_edge_radius" in printed, printed
    _, _, file_attrs = read(out)
    # a ring's heights peak about width**2 / radius (0.06 px) outside a sharp edge
    assert 8.0 < file_attrs["radius"] < 8.15
    assert file_attrs["pattern"] == "DiskEdge"
    assert file_attrs["radius_source"] == ("estimated from the sum frame, then fitted to the "
                                           "disks' edges (fit_edge_radius)")


def test_plots(calibrated, capsys):
    if importlib.util.find_spec("gpucorr.plots") is None:
        pytest.skip("gpucorr.plots is not there yet (written by another change)")
    out = calibrated["dir"] / "plots.h5"
    pictures = calibrated["dir"] / "pictures"
    argv = ["refine", calibrated["path"] + ":/entry/data", "--radius", "8", "--device", "cpu",
            "--upsample", "0", "--reference", ":,0:2", "-o", str(out), "--plots", str(pictures)]
    assert cli.main(argv) == 0
    names = sorted(os.listdir(pictures))
    assert {"strain_maps.png", "context.png", "frame_overlay.png"} <= set(names), names
    for name in names:
        with open(pictures / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "wrote " + str(pictures / "strain_maps.png") in capsys.readouterr().out
    # the pictures are not overwritten without --force, and nothing is computed first
    os.remove(out)
    assert cli.main(argv) == 2
    assert "exist; pass --force to overwrite them" in capsys.readouterr().err
    assert not out.exists()


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["refine", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 20)", "(default: fast)", "(default: auto)", "(default: 100)",
                  "(default: circular)", "--pixel-size", "--reference", "--plots",
                  "'auto' (measured on the sum frame)"):
        assert shown in text, shown
