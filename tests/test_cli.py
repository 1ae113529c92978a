"""The gpucorr command: demo, refine on .npy/.npz/HDF5/zarr, bench, info, and its errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gpucorr
from gpucorr import cli, demo
from gpucorr._backend import cuda_unusable_reason
from gpucorr.patterns import Circular

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def scan():
    frames, reference, field = demo.make_scan((3, 4), seed=3)
    return frames


def read(path):
    with h5py.File(path, "r") as f:
        data = {}
        f.visititems(lambda name, obj: data.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        return data, dict(f.attrs)


def test_demo_end_to_end(tmp_path, capsys):
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


def write_inputs(tmp_path, frames):
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


def test_refine_inputs_give_the_python_api_numbers(tmp_path, scan):
    paths = write_inputs(tmp_path, scan)
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


def test_refine_with_a_peaks_file(tmp_path, scan):
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
def test_refine_on_the_gpu_matches_the_cpu(tmp_path, scan):
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


def test_existing_output_needs_force(tmp_path, scan, capsys):
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


def test_command_runs_as_a_module_without_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "gpucorr", "refine", "missing.npy",
                          "--radius", "4"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr == "gpucorr: error: no such file: missing.npy\n"


def test_progress_bar_shows_frames_per_second():
    import io
    stream = io.StringIO()
    bar = cli.Progress("refine", stream=stream, enabled=True)
    bar(5, 10)
    bar(10, 10)
    text = stream.getvalue()
    assert "\rrefine [###############...............] 5/10 frames" in text
    assert "frames/s" in text and text.endswith("\n")
    quiet = io.StringIO()
    cli.Progress("refine", stream=quiet, enabled=False)(1, 2)
    assert quiet.getvalue() == ""


def test_refine_reads_detector_formats_through_rosettasciio(tmp_path, scan):
    pytest.importorskip("rsciio")
    tifffile = pytest.importorskip("tifffile")
    stack = scan[0]  # (4, 256, 256)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    out = tmp_path / "out.h5"
    assert cli.main(["refine", str(tmp_path / "stack.tif"), "--radius", "8", "-o", str(out),
                     "--upsample", "0"]) == 0
    data, _ = read(out)
    expected = gpucorr.refine(stack, data["peaks"], Circular(radius=8))
    np.testing.assert_array_equal(data["refineds"], expected.refineds)


def test_truncated_files_fail_cleanly(tmp_path, scan, capsys):
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
