"""``gpucorr find``: disks found per frame, indexed, fitted and mapped, into a results file.

The scan is synthetic: every frame's lattice is moved (a descan that sweeps the
pattern across the detector), turned and stretched by known amounts, so the
frames gain and lose disks at the border. The command is tested twice: with a
stand-in for :func:`gpucorr.find_disks` that returns the true disks of each
frame (what the command does with them: indexing, fits, strain, the file), and
end to end with the real one where it exists.
"""
from dataclasses import dataclass

import numpy as np
import pytest

import gpucorr
from gpucorr import cli
from gpucorr.synthetic import cbed_frame

SCAN = (3, 4)
FRAME = 128
RADIUS = 4
A0 = np.array([1.5, 19.0])      # (y, x) px
B0 = np.array([20.0, -2.0])
ZERO0 = np.array([63.0, 62.0])
GRID = np.mgrid[-6:7, -6:7].reshape(2, -1).T
K = 40


def rotate(v, angle):
    """(y, x) vectors turned by ``angle`` from +x towards +y."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([s * v[..., 1] + c * v[..., 0], c * v[..., 1] - s * v[..., 0]], axis=-1)


def truth():
    """Per scan position: origin, a, b, rotation (rad) and isotropic stretch."""
    y, x = np.meshgrid(np.linspace(-1, 1, SCAN[0]), np.linspace(-1, 1, SCAN[1]),
                       indexing="ij")
    shift = np.stack([5.0 * x, -4.0 * y + 1.5 * x], axis=-1)        # the pattern moves
    angle = 0.08 * x                                                 # and turns
    stretch = 1.0 + 0.01 * (y + 1) / 2                               # and stretches
    a = stretch[..., None] * rotate(A0, angle)
    b = stretch[..., None] * rotate(B0, angle)
    return ZERO0 + shift, a, b, angle, stretch


def inside(zero, a, b, margin=RADIUS + 2):
    """The lattice points of one frame whose disk lies in the frame; their indices."""
    pos = zero + GRID[:, :1] * a + GRID[:, 1:] * b
    keep = np.all((pos >= margin) & (pos < FRAME - margin), axis=1)
    return pos[keep], GRID[keep]


@pytest.fixture(scope="module")
def scan():
    zero, a, b, _angle, _stretch = truth()
    frames = np.zeros(SCAN + (FRAME, FRAME), dtype=np.float32)
    for iy, ix in np.ndindex(SCAN):
        _, ij = inside(zero[iy, ix], a[iy, ix], b[iy, ix])
        frames[iy, ix] = cbed_frame(FRAME, FRAME, zero[iy, ix], a[iy, ix], b[iy, ix],
                                    indices=ij, radius=RADIUS, all_equal=True)[0]
    return frames


@dataclass
class Disks:
    """What gpucorr.find_disks returns (its contract): a stand-in."""
    positions: np.ndarray
    centers: np.ndarray
    heights: np.ndarray
    elevations: np.ndarray
    counts: np.ndarray

    @property
    def mask(self):
        return np.arange(self.positions.shape[-2]) < self.counts[..., None]


def true_disks(lead, max_disks, keep=None):
    """The true disks of every frame, in a scrambled order, NaN-padded to ``max_disks``."""
    zero, a, b, _, _ = truth()
    rng = np.random.default_rng(5)
    positions = np.full(lead + (max_disks, 2), np.nan, dtype=np.float32)
    counts = np.zeros(lead, dtype=np.int32)
    for at in np.ndindex(lead):
        of = at if lead else (1, 2)          # a single frame: the scan's frame (1, 2)
        pos, _ = inside(zero[of], a[of], b[of])
        pos = pos[rng.permutation(len(pos))][:max_disks if keep is None else keep]
        positions[at][:len(pos)], counts[at] = pos, len(pos)
    mask = np.arange(max_disks) < counts[..., None]
    heights = np.where(mask, np.linspace(2.0, 1.0, max_disks), np.nan).astype(np.float32)
    return Disks(positions=positions,
                 centers=np.where(mask[..., None], np.rint(np.nan_to_num(positions)),
                                  -1).astype(np.int32),
                 heights=heights, elevations=np.where(mask, 1.0, np.nan).astype(np.float32),
                 counts=counts)


@pytest.fixture
def fake_find(monkeypatch):
    """gpucorr.find_disks replaced by the true disks; the calls it got."""
    calls = []

    def find_disks(frames, pattern, *, max_disks, min_spacing, keep=None, **kwargs):
        calls.append(dict(shape=frames.shape, pattern=pattern, max_disks=max_disks,
                          min_spacing=min_spacing, **kwargs))
        return true_disks(tuple(frames.shape[:-2]), max_disks, keep=find_disks.keep)

    find_disks.keep = None
    monkeypatch.setattr(gpucorr, "find_disks", find_disks, raising=False)
    return find_disks, calls


@pytest.fixture
def h5py():
    return pytest.importorskip("h5py")


def read(path):
    import h5py
    data, attrs = {}, {}

    def visit(name, obj):   # returns None: visititems goes on
        if isinstance(obj, h5py.Dataset):
            data[name], attrs[name] = obj[()], dict(obj.attrs)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        return data, attrs, dict(f.attrs)


def save_inputs(tmp_path, frames, h5py):
    np.save(tmp_path / "scan.npy", frames)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("entry/data", data=frames, chunks=(1, 1, FRAME, FRAME))
    return {"npy": str(tmp_path / "scan.npy"), "h5": str(tmp_path / "scan.h5") + ":/entry/data"}


LATTICE = f"--reference-lattice={A0[0]},{A0[1]},{B0[0]},{B0[1]}"


def test_find_writes_the_per_frame_layout(tmp_path, scan, fake_find, h5py, capsys):
    _, calls = fake_find
    path = save_inputs(tmp_path, scan, h5py)["h5"]
    out = tmp_path / "found.h5"
    assert cli.main(["find", path, "--radius", "4", "--max-disks", str(K), LATTICE,
                     "--edge", "6", "--min-relative-height", "0.1", "--min-elevation", "0.5",
                     "--upsample", "10", "--power", "0.5", "--device", "cpu",
                     "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "indexed 12 of 12 frames" in printed and f"wrote {out}" in printed
    (call,) = calls
    assert call["shape"] == SCAN + (FRAME, FRAME) and call["max_disks"] == K
    assert call["min_spacing"] == 8.0 and call["edge"] == 6 and call["upsample"] == 10
    assert call["min_relative_height"] == 0.1 and call["min_elevation"] == 0.5
    assert call["device"] == "cpu" and call["power"] == 0.5 and call["scaling"] is None
    assert type(call["pattern"]).__name__ == "Circular"

    data, attrs, file_attrs = read(out)
    want = true_disks(SCAN, K)
    for name, units, axes in [("positions", "px", "scan_y, scan_x, disk, yx"),
                              ("centers", "px", "scan_y, scan_x, disk, yx"),
                              ("heights", "a.u.", "scan_y, scan_x, disk"),
                              ("elevations", "a.u.", "scan_y, scan_x, disk"),
                              ("counts", "dimensionless", "scan_y, scan_x"),
                              ("indices", "dimensionless", "scan_y, scan_x, disk, ij"),
                              ("indexed", "dimensionless", "scan_y, scan_x, disk"),
                              ("lattice/a", "px", "scan_y, scan_x, yx"),
                              ("strain/exx", "dimensionless", "scan_y, scan_x"),
                              ("strain/rotation", "rad", "scan_y, scan_x")]:
        assert attrs[name]["units"] == units and attrs[name]["axes"] == axes, name
        assert attrs[name]["description"], name
    np.testing.assert_array_equal(data["positions"], want.positions)
    np.testing.assert_array_equal(data["counts"], want.counts)
    assert 20 < want.counts.min() < want.counts.max() <= K      # disks come and go
    np.testing.assert_array_equal(data["indexed"].astype(bool), want.mask)

    zero, a, b, angle, stretch = truth()
    np.testing.assert_allclose(data["lattice/a"], a, atol=1e-4)
    np.testing.assert_allclose(data["lattice/b"], b, atol=1e-4)
    # (0, 0) is one lattice point in every frame (not necessarily the synthetic origin)
    n = np.linalg.solve(np.stack([a, b], axis=-1), (data["lattice/zero"] - zero)[..., None])
    np.testing.assert_allclose(n, np.rint(n[0, 0]) + 0 * n, atol=1e-4)
    # the diffraction pattern stretched by s: the crystal by 1 / s
    np.testing.assert_allclose(data["strain/exx"], 1 / stretch - 1, atol=1e-6)
    np.testing.assert_allclose(data["strain/eyy"], 1 / stretch - 1, atol=1e-6)
    np.testing.assert_allclose(data["strain/exy"], 0.0, atol=1e-6)
    np.testing.assert_allclose(data["strain/rotation"], angle, atol=1e-6)
    np.testing.assert_allclose(data["strain/reference"], [A0, B0])
    # indices agree with the fit: position = zero + i a + j b where indexed
    fitted = (data["lattice/zero"][..., None, :]
              + data["indices"][..., :1] * data["lattice/a"][..., None, :]
              + data["indices"][..., 1:] * data["lattice/b"][..., None, :])
    np.testing.assert_allclose(fitted[want.mask], want.positions[want.mask], atol=1e-3)
    assert file_attrs["max_disks"] == K and file_attrs["min_spacing"] == 8.0
    assert "given lattice" in file_attrs["strain_reference"]
    with h5py.File(out, "r") as f:        # the scan maps are NeXus signals too
        assert {"counts", "strain_exx", "maps_elevation"} <= set(f["signals"])


def test_find_reference_region_and_default_output(tmp_path, scan, fake_find, h5py,
                                                  monkeypatch):
    paths = save_inputs(tmp_path, scan, h5py)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["find", "scan.npy", "--radius", "4", "--max-disks", str(K),
                     "--reference", ":,0:1", "--device", "cpu"]) == 0
    assert fake_find[1][0]["edge"] == RADIUS      # the radius: no disk cut by the border
    data, _, file_attrs = read(tmp_path / "scan_npy-gpucorr-find.h5")
    _, _, _, angle, stretch = truth()
    # the reference: the median lattice of the first column (its rotation, the median
    # stretch of the column)
    np.testing.assert_allclose(data["strain/rotation"], angle - angle[:, :1], atol=1e-6)
    np.testing.assert_allclose(data["strain/exx"], np.median(stretch[:, 0]) / stretch - 1,
                               atol=1e-6)
    assert "scan positions [:,0:1]" in file_attrs["strain_reference"]
    assert paths  # the .h5 input is there too, unused here


def test_find_single_frame_has_a_lattice_and_no_strain(tmp_path, scan, fake_find, h5py):
    np.save(tmp_path / "one.npy", scan[1, 2])
    out = tmp_path / "one.h5"
    assert cli.main(["find", str(tmp_path / "one.npy"), "--radius", "4", "--max-disks", "30",
                     "--device", "cpu", "-o", str(out)]) == 0
    data, attrs, _ = read(out)
    assert data["positions"].shape == (30, 2) and attrs["positions"]["axes"] == "disk, yx"
    _zero, a, b, _, _ = truth()
    fit_a = data["lattice/a"]
    # one frame: its reduced basis (any equivalent one), zero at a lattice point
    m = np.linalg.solve(np.stack([a[1, 2], b[1, 2]]).T, np.stack([fit_a, data["lattice/b"]]).T)
    np.testing.assert_allclose(m, np.rint(m), atol=1e-4)
    assert not any(name.startswith("strain/") for name in data)


def test_find_without_a_lattice_warns_and_writes_the_disks(tmp_path, scan, fake_find, h5py,
                                                          capsys):
    find_disks, _ = fake_find
    find_disks.keep = 2                                      # two disks a frame
    np.save(tmp_path / "scan.npy", scan)
    out = tmp_path / "few.h5"
    assert cli.main(["find", str(tmp_path / "scan.npy"), "--radius", "4", "--max-disks", "5",
                     "--device", "cpu", "-o", str(out)]) == 0
    assert "no frame's disks could be indexed" in capsys.readouterr().err
    data, _, _file_attrs = read(out)
    assert data["counts"].tolist() == [[2] * 4] * 3
    assert "lattice/a" not in data and "indices" not in data and "strain/exx" not in data


def test_find_on_one_flat_disk_warns_and_writes_the_disks(tmp_path, h5py, capsys):
    """A flat disk in each frame: the maxima found are flat (elevation 0), so the lattice
    fit has no weights: a warning and the disks written, no NaN warnings, no error."""
    import warnings
    one = np.zeros((2, 2, 64, 64), np.float32)
    yy, xx = np.mgrid[:64, :64]
    one[:] = (yy - 32) ** 2 + (xx - 30) ** 2 < 36
    np.save(tmp_path / "one.npy", one)
    out = tmp_path / "one.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert cli.main(["find", str(tmp_path / "one.npy"), "--radius", "auto", "--max-disks",
                         "5", "--edge", "0", "--min-relative-elevation", "0", "--device",
                         "cpu", "-o", str(out)]) == 0
    assert "no frame's lattice could be fitted" in capsys.readouterr().err
    data, _, _ = read(out)
    assert "counts" in data and "lattice/a" not in data and "strain/exx" not in data


def test_find_plots(tmp_path, scan, fake_find, h5py):
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "scan.npy", scan)
    pictures = tmp_path / "pictures"
    assert cli.main(["find", str(tmp_path / "scan.npy"), "--radius", "4", "--max-disks",
                     str(K), "--device", "cpu", "-o", str(tmp_path / "r.h5"),
                     "--plots", str(pictures)]) == 0
    for name in ("strain_maps.png", "context.png", "frame_overlay.png"):
        with open(pictures / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, match", [
    (["--radius", "4"], "the following arguments are required: --max-disks"),
    (["--max-disks", "5"], "the following arguments are required: --radius"),
    (["--radius", "4", "--max-disks", "0"], "--max-disks: must be a finite number > 0"),
    (["--radius", "4", "--max-disks", "5", "--min-spacing", "-1"],
     "--min-spacing: must be a finite number >= 1 px"),
    (["--radius", "4", "--max-disks", "5", "--min-relative-height", "1.5"],
     r"--min-relative-height: must be a number in \[0, 1\]; got 1.5"),
    (["--radius", "4", "--max-disks", "5", "--min-elevation", "nan"],
     "--min-elevation: must be a finite number >= 0; got nan"),
    (["--radius", "4", "--max-disks", "5", "--min-height", "inf"],
     "--min-height: must be a finite number; got inf"),
    (["--radius", "4", "--max-disks", "5", "--edge", "-2"],
     "--edge: must be an integer from 0 to 2147483647; got -2"),
    (["--radius", "4", "--max-disks", "5", "--edge", "99999999999999999999"],
     "--edge: must be an integer from 0 to 2147483647; got 99999999999999999999"),
    (["--radius", "4", "--max-disks", "5", "--min-spacing", "0.5"],
     "--min-spacing: must be a finite number >= 1 px; got 0.5"),
    (["--radius", "1e308", "--max-disks", "5"],
     r"--radius 1e\+308: no circular pattern of that radius \(search must be finite"),
    (["--radius", "0", "--max-disks", "5"], "--radius must be a number > 0"),
    (["--radius", "4", "--max-disks", "5", "--reference", "0:1,x"],
     "--reference must be start:stop per scan axis"),
    (["--radius", "4", "--max-disks", "5", "--reference", "0:1", LATTICE],
     "--reference and --reference-lattice: give one of them, not both"),
    (["--radius", "4", "--max-disks", "5", "--reference", "5:9,0:1"],
     "--reference 5:9,0:1: region '5:9,0:1' selects no scan position"),
    (["--radius", "40", "--max-disks", "5"], "crop is larger than the 128x128 frames"),
])
def test_find_errors(tmp_path, scan, fake_find, capsys, argv, match):
    import re
    np.save(tmp_path / "scan.npy", scan)
    assert cli.main(["find", str(tmp_path / "scan.npy"), "--device", "cpu",
                     "-o", str(tmp_path / "r.h5")] + argv) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not (tmp_path / "r.h5").exists() and not fake_find[1]    # nothing computed


def test_find_refuses_to_overwrite(tmp_path, scan, fake_find, h5py, capsys):
    np.save(tmp_path / "scan.npy", scan)
    out = tmp_path / "r.h5"
    argv = ["find", str(tmp_path / "scan.npy"), "--radius", "4", "--max-disks", str(K),
            "--device", "cpu", "-o", str(out)]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 2 and "exists; pass --force" in capsys.readouterr().err
    assert cli.main(argv + ["--force"]) == 0


# ---------------------------------------------------------------------------
# end to end, with gpucorr.find_disks
# ---------------------------------------------------------------------------

needs_find_disks = pytest.mark.skipif(
    not hasattr(gpucorr, "find_disks"),
    reason="gpucorr.find_disks (issue 18, gpucorr/disks/) is not in this checkout yet")


@needs_find_disks
@pytest.mark.parametrize("kind", ["npy", "h5"])
def test_find_end_to_end(tmp_path, scan, h5py, kind, capsys):
    path = save_inputs(tmp_path, scan, h5py)[kind]
    out = tmp_path / f"{kind}.h5"
    assert cli.main(["find", path, "--radius", "auto", "--max-disks", str(K), "--edge", "6",
                     "--min-relative-height", "0.3", LATTICE, "--device", "cpu",
                     "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "indexed 12 of 12 frames" in printed, printed
    data, _, _ = read(out)
    _zero, a, b, angle, stretch = truth()
    want = true_disks(SCAN, K)
    # every frame found its disks (those well inside the frame at least) and no others
    assert np.all(data["counts"] >= want.counts - 4) and np.all(data["counts"] <= want.counts)
    mask = np.arange(K) < data["counts"][..., None]
    for at in np.ndindex(SCAN):
        found = data["positions"][at][mask[at]]
        nearest = np.min(np.linalg.norm(found[:, None] - want.positions[at][None], axis=-1),
                         axis=1, initial=np.inf, where=want.mask[at][None])
        assert nearest.max() < 0.3, (at, nearest.max())
    np.testing.assert_allclose(data["lattice/a"], a, atol=0.05)
    np.testing.assert_allclose(data["lattice/b"], b, atol=0.05)
    np.testing.assert_allclose(data["strain/rotation"], angle, atol=3e-3)
    np.testing.assert_allclose(data["strain/exx"], 1 / stretch - 1, atol=3e-3)
    np.testing.assert_allclose(data["strain/eyy"], 1 / stretch - 1, atol=3e-3)


def test_find_subpixel_quadratic(tmp_path, scan, h5py, capsys):
    path = save_inputs(tmp_path, scan, h5py)["npy"]
    out = tmp_path / "quadratic.h5"
    assert cli.main(["find", path, "--radius", "4", "--max-disks", str(K), "--edge", "6",
                     "--min-relative-height", "0.3", "--upsample", "0", "--subpixel",
                     "quadratic", "--device", "cpu", "-o", str(out)]) == 0
    data, _, file_attrs = read(out)
    assert file_attrs["subpixel"] == "quadratic"
    frames = np.load(path)
    expected = gpucorr.find_disks(frames, gpucorr.patterns.Circular(radius=4), max_disks=K,
                                  edge=6, min_relative_height=0.3, subpixel="quadratic")
    np.testing.assert_array_equal(data["positions"], expected.positions)
    capsys.readouterr()
    assert cli.main(["find", path, "--radius", "4", "--max-disks", str(K), "--subpixel",
                     "quadratic", "--device", "cpu", "-o", str(tmp_path / "x.h5")]) == 2
    assert "--subpixel quadratic refines without upsampling" in capsys.readouterr().err


@needs_find_disks
def test_find_min_height_with_disk_edge(tmp_path, scan, h5py, capsys):
    """--min-height reaches find_disks and the file: with DiskEdge it leaves out the maxima
    between the disks that --max-disks would otherwise fill up with."""
    path = save_inputs(tmp_path, scan, h5py)["npy"]
    frames = np.load(path)
    edge = gpucorr.patterns.DiskEdge(radius=RADIUS)
    every = gpucorr.find_disks(frames, edge, max_disks=K, edge=6, min_relative_elevation=0)
    expected = gpucorr.find_disks(frames, edge, max_disks=K, edge=6, min_height=1.0,
                                  upsample=20)          # the command's default
    assert np.all(every.counts > expected.counts)     # the maxima between the disks
    assert np.all(np.nanmin(expected.heights, axis=-1) > 1.0)
    out = tmp_path / "edge.h5"
    capsys.readouterr()
    assert cli.main(["find", path, "--pattern", "disk-edge", "--radius", str(RADIUS),
                     "--max-disks", str(K), "--device", "cpu", "-o", str(out)]) == 0
    assert "pass --min-height 0" in capsys.readouterr().err
    assert cli.main(["find", path, "--pattern", "disk-edge", "--radius", str(RADIUS),
                     "--max-disks", str(K), "--edge", "6", "--min-height", "1", "--device",
                     "cpu", "-o", str(out), "--force"]) == 0
    assert "--min-height" not in capsys.readouterr().err
    data, _, file_attrs = read(out)
    assert file_attrs["min_height"] == 1.0
    np.testing.assert_array_equal(data["counts"], expected.counts)
    np.testing.assert_array_equal(data["positions"], expected.positions)
    want = true_disks(SCAN, K)
    assert np.all(data["counts"] >= want.counts - 4) and np.all(data["counts"] <= want.counts)


@needs_find_disks
def test_find_radius_auto_with_disk_edge_warns_and_records_its_source(tmp_path, scan, h5py,
                                                                      capsys):
    path = save_inputs(tmp_path, scan, h5py)["npy"]
    out = tmp_path / "auto.h5"
    assert cli.main(["find", path, "--pattern", "disk-edge", "--radius", "auto",
                     "--max-disks", str(K), "--edge", "6", "--min-height", "1",
                     "--device", "cpu", "-o", str(out)]) == 0
    assert "find measures it on the sum frame only" in capsys.readouterr().err
    assert read(out)[2]["radius_source"] == "estimated from the sum frame (estimate_radius)"


def test_find_more_disks_than_pixels_is_refused(tmp_path, scan, capsys):
    np.save(tmp_path / "scan.npy", scan)
    assert cli.main(["find", str(tmp_path / "scan.npy"), "--radius", "4", "--max-disks",
                     str(FRAME * FRAME + 1), "--device", "cpu",
                     "-o", str(tmp_path / "r.h5")]) == 2
    assert (f"--max-disks {FRAME * FRAME + 1}: more than the {FRAME}x{FRAME} = "
            f"{FRAME * FRAME} pixels of a frame") in capsys.readouterr().err
    assert not (tmp_path / "r.h5").exists()
