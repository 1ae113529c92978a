"""The gpucorr command: demo, refine on .npy/.npz/HDF5/zarr, bench, info, and its errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gpucorr
from gpucorr import cli, demo
from gpucorr.backends.devices import cuda_unusable_reason
from gpucorr.cli.progress import Progress
from gpucorr.patterns import Circular


@pytest.fixture
def h5py():
    """h5py, for the tests that read or write HDF5 files (results files are HDF5): they
    skip where it is missing; the tests of errors found before any file is written run."""
    return pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def scan():
    frames, reference, field = demo.make_scan((3, 4), seed=3)
    return frames


def read(path):
    """Datasets and attributes of an HDF5 results file (the caller asks for h5py)."""
    import h5py
    with h5py.File(path, "r") as f:
        data = {}
        f.visititems(lambda name, obj: data.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        return data, dict(f.attrs)


def test_demo_end_to_end(tmp_path, capsys, h5py):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--scan", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "strain error vs the known field" in printed and "frames/s" in printed
    data, attrs = read(out / "results.h5")
    assert data["refineds"].shape[:2] == (8, 8) and data["strain/exx"].shape == (8, 8)
    assert attrs["gpucorr_version"] == gpucorr.__version__
    for name in ("frame_overlay.png", "strain_maps.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the measured strain matches the known field (measured: RMS about 3e-5)
    for name in ("exx", "eyy", "exy", "rotation"):
        error = np.sqrt(np.mean((data[f"strain/{name}"] - data[f"known/{name}"]) ** 2))
        assert error < 2e-4, (name, error)
    # an existing result is not overwritten without --force
    assert cli.main(["demo", "--scan", "2", "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert cli.main(["demo", "--scan", "2", "--out", str(out), "--force"]) == 0


def write_inputs(tmp_path, frames, h5py):
    zarr = pytest.importorskip("zarr")
    paths = {}
    np.save(tmp_path / "scan.npy", frames)
    paths["npy"] = str(tmp_path / "scan.npy")
    np.savez(tmp_path / "scan.npz", frames=frames, other=np.zeros(3))
    paths["npz"] = str(tmp_path / "scan.npz") + ":frames"
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("entry/data/frames", data=frames, chunks=(1, 1) + frames.shape[2:])
    paths["h5"] = str(tmp_path / "scan.h5") + ":/entry/data/frames"
    z = zarr.open(str(tmp_path / "scan.zarr"), mode="w", shape=frames.shape,
                  chunks=(1, 2) + frames.shape[2:], dtype=frames.dtype)
    z[...] = frames
    paths["zarr"] = str(tmp_path / "scan.zarr")
    return paths


def test_refine_inputs_give_the_python_api_numbers(tmp_path, scan, h5py):
    paths = write_inputs(tmp_path, scan, h5py)
    results = {}
    for kind, path in paths.items():
        out = tmp_path / f"out-{kind}.h5"
        assert cli.main(["refine", path, "--radius", "8", "-o", str(out), "--device", "cpu"]) == 0
        results[kind] = read(out)
    data, attrs = results["npy"]
    expected = gpucorr.refine(scan, data["peaks"], Circular(radius=8), upsample=20)
    for kind, (got, got_attrs) in results.items():
        for name in ("centers", "refineds", "heights", "elevations"):
            np.testing.assert_array_equal(got[name], getattr(expected, name), err_msg=kind)
        assert got["strain/exx"].shape == scan.shape[:2]
        assert got_attrs["pattern"] == "Circular" and got_attrs["upsample"] == 20
        assert got_attrs["gpucorr_version"] == gpucorr.__version__


def test_refine_with_a_peaks_file(tmp_path, scan, h5py):
    path = tmp_path / "scan.npy"
    np.save(path, scan)
    peaks = np.array([[128, 128], [135, 161], [159, 118]])
    np.savetxt(tmp_path / "peaks.txt", peaks, fmt="%d")
    out = tmp_path / "out.h5"
    assert cli.main(["refine", str(path), "--radius", "8", "--device", "cpu",
                     "--peaks", str(tmp_path / "peaks.txt"),
                     "--upsample", "0", "--mode", "full", "-o", str(out)]) == 0
    data, _ = read(out)
    expected = gpucorr.refine(scan, peaks, Circular(radius=8), mode="full")
    np.testing.assert_array_equal(data["refineds"], expected.refineds)
    assert "strain/exx" not in data  # no lattice indices given


@pytest.mark.gpu
def test_refine_on_the_gpu_matches_the_cpu(tmp_path, scan, h5py):
    from helpers import assert_results_match
    path = tmp_path / "scan.npy"
    np.save(path, scan)
    for device in ("cpu", "cuda"):
        assert cli.main(["refine", str(path), "--radius", "8", "--device", device,
                         "-o", str(tmp_path / f"{device}.h5")]) == 0
    (cpu, _), (gpu, attrs) = read(tmp_path / "cpu.h5"), read(tmp_path / "cuda.h5")
    assert attrs["device"] == "cuda:0"
    assert_results_match([gpu[k] for k in ("centers", "refineds", "heights", "elevations")],
                         [cpu[k] for k in ("centers", "refineds", "heights", "elevations")])


@pytest.mark.parametrize("argv, message", [
    (["refine", "missing.npy", "--radius", "8"], "no such file: missing.npy"),
    (["refine", "{h5}:/no/such", "--radius", "8"], "no dataset '/no/such'"),
    (["refine", "{h5}", "--radius", "8"], "name the dataset as"),
    (["refine", "{flat}", "--radius", "8"], r"expected frames \(\.\.\., H, W\); got shape \(10,\)"),
    (["refine", "{npy}", "--radius", "8", "--pattern", "square"], "--pattern must be one of"),
    (["refine", "{npy}", "--radius", "200"], "crop is larger than the 256x256 frames"),
    pytest.param(["refine", "{npy}", "--radius", "8", "--device", "cuda"],
                 "--device cuda: device=.cuda. asked for, but no GPU is usable",
                 marks=pytest.mark.skipif(cuda_unusable_reason() is None,
                                          reason="a GPU is usable here")),
    (["refine", "{npy}", "--radius", "8", "--device", "cuda:x"], "--device must be auto, cpu"),
    (["refine", "{npy}", "--radius", "8", "--device", "tpu"], "--device must be auto, cpu"),
    (["refine", "{npy}", "--radius", "8", "--upsample", "-4"], "--upsample: must be 0"),
    (["refine", "{npy}"], "the following arguments are required: --radius"),
    (["refine", "{txt}", "--radius", "8"], "unknown format"),
    (["demo", "--scan", "0"], "--scan: must be a finite number > 0; got 0"),
    (["refine", "{npy}", "--radius", "8", "--workers", "0"], "--workers: must be a finite"),
    (["refine", "{npy}", "--radius", "8", "--memory-limit", "-5"],
     "--memory-limit: must be a finite number > 0 MiB; got -5"),
    (["refine", "{npy}", "--radius", "8", "--memory-limit", "inf"], "--memory-limit: must be"),
    (["refine", "{npy}", "--radius", "8", "--num-peaks", "1.5"],
     "--num-peaks: must be an integer; got '1.5'"),
    (["bench", "--rounds", "0"], "--rounds: must be a finite number > 0"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_errors_are_one_line_and_non_zero(tmp_path, capsys, argv, message):
    np.save(tmp_path / "scan.npy", np.zeros((2, 256, 256), np.uint16))
    np.save(tmp_path / "flat.npy", np.zeros(10))
    (tmp_path / "notes.txt").write_text("hello")
    if any("{h5}" in a for a in argv):
        h5py = pytest.importorskip("h5py")
        with h5py.File(tmp_path / "two.h5", "w") as f:
            f["a"] = np.zeros((2, 8, 8))
            f["b"] = np.zeros((2, 8, 8))
    names = dict(h5=str(tmp_path / "two.h5"), npy=str(tmp_path / "scan.npy"),
                 flat=str(tmp_path / "flat.npy"), txt=str(tmp_path / "notes.txt"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        status = cli.main([a.format(**names) for a in argv])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert status != 0
    assert err.count("\n") == 1 and err.startswith("gpucorr: error: ")
    assert "Traceback" not in err
    import re
    assert re.search(message, err), err


def test_existing_output_needs_force(tmp_path, scan, capsys, h5py):
    path = tmp_path / "scan.npy"
    np.save(path, scan[:1, :2])
    out = tmp_path / "r.h5"
    out.write_bytes(b"keep me")
    assert cli.main(["refine", str(path), "--radius", "8", "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert cli.main(["refine", str(path), "--radius", "8", "-o", str(out), "--force"]) == 0


def test_info_and_bench(capsys):
    assert cli.main(["info"]) == 0
    printed = capsys.readouterr().out
    gpu_state = "cuda: unusable" if cuda_unusable_reason() else "cuda: usable - cuda:0"
    assert "cpu: usable" in printed and gpu_state in printed
    assert cli.main(["bench", "--frames", "2", "--rounds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| fast |" in printed and "| full |" in printed and "CPU:" in printed
    # the workload docs/cli.md describes
    assert "bench: 2 frames 256x256 float32, 49 peaks, RadialGradient(radius=8)" in printed


def test_command_runs_as_a_module_without_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "gpucorr", "refine", "missing.npy",
                          "--radius", "4"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr == "gpucorr: error: no such file: missing.npy\n"


def test_progress_bar_shows_frames_per_second():
    import io
    import re
    stream = io.StringIO()
    bar = Progress("refine", stream=stream, enabled=True, mininterval=0)
    bar(5, 10)
    bar(10, 10)
    text = stream.getvalue()
    assert "\rrefine [###############...............] 5/10 frames, " in text
    # (tqdm pads a redrawn line with spaces where the rate came out shorter than before)
    assert re.search(r"\rrefine \[#{30}\] 10/10 frames, [0-9.]+ frames/s *\n$", text), text
    # redrawn at most every 0.1 s by default, but the last state always shows
    throttled = io.StringIO()
    bar = Progress("refine", stream=throttled, enabled=True)
    for done in range(1, 101):
        bar(done, 100)
    assert throttled.getvalue().count("\r") < 10
    assert re.search(r"100/100 frames, [0-9.]+ frames/s *\n$", throttled.getvalue())
    # quiet where stderr is not a terminal (enabled=None asks the stream)
    quiet = io.StringIO()
    Progress("refine", stream=quiet)(1, 2)
    Progress("refine", stream=quiet, enabled=False)(2, 2)
    assert quiet.getvalue() == ""


def test_refine_reads_detector_formats_through_rosettasciio(tmp_path, scan, h5py):
    pytest.importorskip("rsciio")
    tifffile = pytest.importorskip("tifffile")
    stack = scan[0]  # (4, 256, 256)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    out = tmp_path / "out.h5"
    assert cli.main(["refine", str(tmp_path / "stack.tif"), "--radius", "8", "-o", str(out),
                     "--upsample", "0", "--device", "cpu"]) == 0
    data, _ = read(out)
    expected = gpucorr.refine(stack, data["peaks"], Circular(radius=8))
    np.testing.assert_array_equal(data["refineds"], expected.refineds)


def test_truncated_files_fail_cleanly(tmp_path, scan, capsys, h5py):
    frames = scan[0]
    np.save(tmp_path / "scan.npy", frames)
    with open(tmp_path / "scan.npy", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "scan.npy") // 2)
    assert cli.main(["refine", str(tmp_path / "scan.npy"), "--radius", "8"]) == 2
    assert "not a readable .npy file" in capsys.readouterr().err

    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    assert cli.main(["refine", str(tmp_path / "junk.h5") + ":/x", "--radius", "8"]) == 2
    assert "not a readable HDF5 file" in capsys.readouterr().err

    # an HDF5 file cut short: HDF5 notices at open
    with h5py.File(tmp_path / "cut.h5", "w") as f:
        f.create_dataset("frames", data=frames, chunks=(1,) + frames.shape[1:])
    size = os.path.getsize(tmp_path / "cut.h5")
    with open(tmp_path / "cut.h5", "r+b") as f:
        f.truncate(size - frames[0].nbytes * 2)
    assert cli.main(["refine", str(tmp_path / "cut.h5") + ":/frames", "--radius", "8"]) == 2
    assert "truncated file" in capsys.readouterr().err

    # a damaged compressed chunk in the middle: the read fails mid-run, refine
    # raises (no partial results) and the command reports it without writing results
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        ds = f.create_dataset("frames", data=frames, chunks=(1,) + frames.shape[1:],
                              compression="gzip")
        offset = ds.id.get_chunk_info(2).byte_offset
    with open(tmp_path / "bad.h5", "r+b") as f:
        f.seek(offset + 16)
        f.write(b"\xff" * 64)
    with h5py.File(tmp_path / "bad.h5", "r") as f:
        with pytest.raises(OSError):
            gpucorr.refine(f["frames"], np.array([[128, 128]]), Circular(radius=8),
                           memory_limit=1)
    out = tmp_path / "bad-results.h5"
    status = cli.main(["refine", str(tmp_path / "bad.h5") + ":/frames", "--radius", "8",
                       "--peaks", str(write_peaks(tmp_path)), "-o", str(out)])
    err = capsys.readouterr().err
    assert status != 0 and err.startswith("gpucorr: error: ") and err.count("\n") == 1
    assert not out.exists()


def write_peaks(tmp_path):
    path = tmp_path / "peaks.txt"
    np.savetxt(path, np.array([[128, 128], [135, 161]]), fmt="%d")
    return path


# ------------------------------------------------------------ input checks (issue 13)

@pytest.fixture
def small(tmp_path):
    """A (2, 32, 32) float32 scan as .npy and a peaks file: paths by name."""
    frames = np.random.default_rng(13).random((2, 32, 32)).astype(np.float32)
    np.save(tmp_path / "scan.npy", frames)
    np.savetxt(tmp_path / "peaks.txt", np.array([[10, 10], [22, 20]]), fmt="%d")
    return dict(frames=frames, npy=str(tmp_path / "scan.npy"),
                peaks=str(tmp_path / "peaks.txt"), dir=tmp_path)


def small_h5(small):
    """The first frame of ``small`` as a 2-D HDF5 dataset, ``image.h5:/entry/data``: its
    path (the test skips without h5py)."""
    h5py = pytest.importorskip("h5py")
    path = small["dir"] / "image.h5"
    with h5py.File(path, "w") as f:
        f["entry/data"] = small["frames"][0]
    return str(path)


def refine_argv(input_path, out, peaks, *extra):
    return ["refine", input_path, "--radius", "3", "--peaks", peaks, "--upsample", "0",
            "--device", "cpu", "-o", str(out), *extra]


def one_error_line(capsys, start="gpucorr: error: "):
    """The error printed: exactly one line, with one prefix and no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(start), err
    assert "Traceback" not in err and err.count("gpucorr: error:") <= 1, err
    assert "gpucorr refine:" not in err, err
    return err[:-1]


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if the command reads the frames or refines anything."""
    import gpucorr.io

    def called(*args, **kwargs):
        raise AssertionError("computed before the paths were checked")
    monkeypatch.setattr(gpucorr, "refine", called)
    monkeypatch.setattr(gpucorr.io, "open_frames", called)


@pytest.mark.parametrize("text, row", [
    ("10 10\nnan 5\n", r"row 2 \(nan 5\) holds NaN or infinite values; expected finite numbers"),
    ("10 10\n5 inf\n", r"row 2 \(5 inf\) holds NaN or infinite values"),
    ("10 10\n5 -inf\n", r"row 2 \(5 -inf\) holds NaN or infinite values"),
    ("10 10\n1e30 5\n", r"row 2 \(1e\+30 5\) holds a position beyond \+-2\*\*30 \(centres are "
                        r"int32\); positions y x \(columns 1 and 2\) must lie within \+-2\*\*30"),
    ("10 10\n5 -1e30\n", r"row 2 \(5 -1e\+30\) holds a position beyond \+-2\*\*30"),
    ("# y x\n10 10\n\n  # a comment\n1e30 5\n",
     r"row 2 \(line 5\) \(1e\+30 5\) holds a position beyond"),
    ("10 10 0 0\n12 12 1e30 1\n", r"row 2 \(12 12 1e\+30 1\) holds a lattice index beyond "
                                  r"\+-2\*\*30; lattice indices i j \(columns 3 and 4\)"),
], ids=["nan", "inf", "minus-inf", "1e30", "minus-1e30", "comment-lines", "index-1e30"])
def test_peaks_file_with_non_finite_or_huge_values(small, capsys, text, row):
    """NaN and inf were cast to int64's minimum and 1e30 wrapped: the run 'succeeded' with
    garbage rows. Now: exit 2, one line naming the file and the row, no results file."""
    import re
    peaks = small["dir"] / "bad-peaks.txt"
    peaks.write_text(text)
    out = small["dir"] / "out.h5"
    assert cli.main(refine_argv(small["npy"], out, str(peaks))) == 2
    err = one_error_line(capsys)
    assert re.match(rf"gpucorr: error: --peaks {re.escape(str(peaks))}: {row}", err), err
    assert not out.exists() and not os.path.exists(f"{out}.partial")


def test_refine_a_single_frame_hdf5_dataset(small, capsys):
    """A 2-D dataset is one frame (it failed with h5py's "Indexing with None")."""
    image = small_h5(small)
    out = small["dir"] / "out.h5"
    assert cli.main(refine_argv(image + ":/entry/data", out, small["peaks"])) == 0
    data, attrs = read(out)
    peaks = np.loadtxt(small["peaks"], dtype=np.int64)
    expected = gpucorr.refine(small["frames"][0], peaks, Circular(radius=3))
    for name in ("centers", "refineds", "heights", "elevations"):
        np.testing.assert_array_equal(data[name], getattr(expected, name))
    assert data["refineds"].shape == (2, 2) and attrs["input"] == image + ":/entry/data"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_frames_the_log_scaling_cannot_hold_are_a_user_error(small, capsys):
    """Frames whose log scaling overflows are the user's input, not a bug: exit 2 (it was
    exit 1, "ValueError: ...")."""
    frames = small["frames"].copy()
    frames[1, 9, 9], frames[1, 11, 11] = 3e38, -3e38
    np.save(small["dir"] / "huge.npy", frames)
    out = small["dir"] / "out.h5"
    assert cli.main(refine_argv(str(small["dir"] / "huge.npy"), out, small["peaks"])) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"gpucorr: error: {small['dir'] / 'huge.npy'}: frames must span at "
                          "most 3.4028235e+38"), err
    assert "in frame 1 in the crop around peak (10, 10)" in err
    assert not out.exists()


@pytest.mark.parametrize("where, exc", [
    ("create_dataset", OSError(28, "No space left on device")),
    ("close", RuntimeError("Can't decrement id ref count (file write failed)")),
], ids=["oserror-on-write", "runtimeerror-on-close"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "force-over-existing"])
def test_write_failures_are_one_line_and_leave_no_partial_file(small, capsys, monkeypatch, h5py,
                                                               where, exc, existing):
    """h5py's OSError (a full disk) or RuntimeError (on close) while writing the results:
    exit 2, one line, no OUT.partial left behind, and an existing OUT (--force) kept."""
    out = small["dir"] / "out.h5"
    if existing:
        out.write_bytes(b"earlier results")
    if where == "create_dataset":
        def create_dataset(self, *args, **kwargs):
            raise exc
        monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    else:
        close = h5py.File.close

        def failing_close(self):
            close(self)
            raise exc
        monkeypatch.setattr(h5py.File, "close", failing_close)
    status = cli.main(refine_argv(small["npy"], out, small["peaks"], "--force"))
    monkeypatch.undo()
    assert status == 2
    err = one_error_line(capsys)
    detail = " ".join(str(exc).split())
    assert err == f"gpucorr: error: {out}: could not write the results ({detail})"
    assert not os.path.exists(f"{out}.partial")
    assert out.read_bytes() == b"earlier results" if existing else not out.exists()
    assert sorted(p.name for p in small["dir"].iterdir()) == sorted(
        ["scan.npy", "peaks.txt"] + (["out.h5"] if existing else []))


@pytest.mark.parametrize("existing", [False, True], ids=["new", "force-over-existing"])
def test_interrupt_while_writing_removes_the_partial_file(small, capsys, monkeypatch, h5py,
                                                          existing):
    out = small["dir"] / "out.h5"
    if existing:
        out.write_bytes(b"earlier results")
    created = []

    def create_dataset(self, *args, **kwargs):
        created.append(self.file.filename)
        raise KeyboardInterrupt
    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    assert cli.main(refine_argv(small["npy"], out, small["peaks"], "--force")) == 130
    monkeypatch.undo()
    assert capsys.readouterr().err == "gpucorr: interrupted\n"
    assert len(created) == 1                      # it did get as far as writing, into a
    name = os.path.basename(created[0])           # file of its own beside the results
    assert os.path.dirname(created[0]) == str(small["dir"])
    assert name.startswith(".out.h5.") and name.endswith(".partial")
    assert not os.path.exists(created[0])
    assert out.read_bytes() == b"earlier results" if existing else not out.exists()


def test_missing_output_folder_fails_before_computing(small, capsys, no_compute):
    out = small["dir"] / "no-such-folder" / "out.h5"
    # --peaks auto: not even the sum frame is computed
    assert cli.main(["refine", small["npy"], "--radius", "3", "-o", str(out)]) == 2
    assert one_error_line(capsys) == (f"gpucorr: error: -o {out}: no such folder: "
                                      f"{small['dir'] / 'no-such-folder'}")
    assert not (small["dir"] / "no-such-folder").exists()


def test_unwritable_output_folder_fails_before_computing(small, capsys, no_compute):
    folder = small["dir"] / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        try:  # the probe: root (and some file systems) ignore the mode
            (folder / "probe").write_bytes(b"")
        except OSError:
            pass
        else:
            (folder / "probe").unlink()
            pytest.skip("chmod 0o500 does not stop writes here (running as root, or a file "
                        "system that ignores permissions)")
        out = folder / "out.h5"
        assert cli.main(refine_argv(small["npy"], out, small["peaks"])) == 2
        assert one_error_line(capsys) == (f"gpucorr: error: -o {out}: cannot write in "
                                          f"{folder} (Permission denied)")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("kind", ["same-path", "relative-path", "symlink", "hardlink",
                                  "hdf5-input"])
def test_output_that_is_the_input_is_refused(small, capsys, monkeypatch, no_compute, kind):
    """-o naming the input (by any path or a link), even with --force: exit 2 before
    anything is computed, the input's bytes unchanged."""
    d = small["dir"]
    input_path, out = small["npy"], small["npy"]
    if kind == "relative-path":
        monkeypatch.chdir(d)
        out = os.path.join(".", "sub", "..", "scan.npy")
        (d / "sub").mkdir()
    elif kind == "symlink":
        out = str(d / "link.h5")
        os.symlink(input_path, out)
    elif kind == "hardlink":
        out = str(d / "hard.npy")
        os.link(input_path, out)
    elif kind == "hdf5-input":
        image = small_h5(small)
        input_path, out = image + ":/entry/data", image
    path = input_path.split(":")[0]
    before = open(path, "rb").read()
    assert cli.main(refine_argv(input_path, out, small["peaks"], "--force")) == 2
    err = one_error_line(capsys)
    assert err == f"gpucorr: error: -o {out}: that is the input {path}; name another results file"
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(d)) == sorted(
        {"relative-path": ["scan.npy", "sub"], "symlink": ["scan.npy", "link.h5"],
         "hardlink": ["scan.npy", "hard.npy"]}.get(
            kind, ["scan.npy"]) + ["peaks.txt"] + (["image.h5"] if kind == "hdf5-input" else []))


def test_a_file_named_like_partial_results_is_left_alone(small):
    """The results are written under a name of their own first: a user's OUT.partial (or
    an input of that name) is never touched."""
    d = small["dir"]
    (d / "r.h5.partial").write_bytes(b"the user's own file")
    assert cli.main(refine_argv(small["npy"], d / "r.h5", small["peaks"])) == 0
    assert (d / "r.h5.partial").read_bytes() == b"the user's own file"
    assert (d / "r.h5").exists()
    assert sorted(os.listdir(d)) == ["peaks.txt", "r.h5", "r.h5.partial", "scan.npy"]


@pytest.mark.parametrize("kind", ["peaks", "reference-lattice", "zarr-inside", "plots-file",
                                  "plots-folder"])
def test_output_over_another_file_the_command_uses_is_refused(small, capsys, no_compute,
                                                              kind):
    """-o naming the --peaks file, the --reference-lattice file, a file inside a zarr
    input, or a picture --plots writes (or the --plots folder): exit 2 before anything is
    computed, even with --force."""
    d = small["dir"]
    extra, input_path, out = [], small["npy"], None
    if kind == "peaks":
        out = small["peaks"]
        match = f"-o {out}: that is --peaks {out}; name another results file"
    elif kind == "reference-lattice":
        np.savetxt(d / "lattice.txt", np.array([[0.0, 10.0], [10.0, 0.0]]))
        out = str(d / "lattice.txt")
        extra = ["--reference-lattice", out]
        match = f"-o {out}: that is --reference-lattice {out}; name another results file"
    elif kind == "zarr-inside":
        (d / "scan.zarr").mkdir()
        (d / "scan.zarr" / ".zarray").write_text("{}")
        input_path, out = str(d / "scan.zarr"), str(d / "scan.zarr" / ".zarray")
        match = (f"-o {out}: that is inside the input {input_path}; name a results file "
                 "outside it")
    elif kind == "plots-file":
        (d / "pics").mkdir()
        out = str(d / "pics" / "strain_maps.png")
        extra = ["--plots", str(d / "pics")]
        match = (f"--plots {d / 'pics'}: a picture would overwrite the results file -o {out}; "
                 "name another folder or results file")
    else:
        out = str(d / "same")
        extra = ["--plots", out]
        match = (f"--plots {out}: that is the results file (-o {out}); name another folder "
                 "for the pictures")
    before = {p.name: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    assert cli.main(refine_argv(input_path, out, small["peaks"], "--force", *extra)) == 2
    assert one_error_line(capsys) == f"gpucorr: error: {match}"
    assert {p.name: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before


def test_usage_errors_have_one_prefix(small, capsys):
    """argparse's errors came out as "gpucorr: error: gpucorr refine: ..."."""
    assert cli.main(["refine", small["npy"]]) == 2
    assert one_error_line(capsys) == ("gpucorr: error: the following arguments are required: "
                                      "--radius")
    assert cli.main(["refine", small["npy"], "--radius", "3", "--mode", "slow"]) == 2
    assert one_error_line(capsys).startswith(
        "gpucorr: error: argument --mode: invalid choice: 'slow'")


def test_internal_errors_are_one_line_with_status_1(small, capsys, monkeypatch):
    """An unexpected exception (a bug) is reported on one line with exit status 1, and an
    interrupt while computing exits with 130; neither leaves results behind."""
    out = small["dir"] / "out.h5"

    def broken(*args, **kwargs):
        raise ZeroDivisionError("first line\n  second line")
    monkeypatch.setattr(gpucorr, "refine", broken)
    assert cli.main(refine_argv(small["npy"], out, small["peaks"])) == 1
    assert one_error_line(capsys) == ("gpucorr: error: internal error: ZeroDivisionError: "
                                      "first line second line")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(gpucorr, "refine", interrupted)
    assert cli.main(refine_argv(small["npy"], out, small["peaks"])) == 130
    assert capsys.readouterr().err == "gpucorr: interrupted\n"
    assert not out.exists() and not os.path.exists(f"{out}.partial")
