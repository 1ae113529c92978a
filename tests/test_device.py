"""Choosing the device (``device=``, :func:`gpucorr.use_device`), streaming host frames
to a GPU, and arrays of other libraries (DLPack, ``__cuda_array_interface__``).

The CPU tests run everywhere; the ``gpu`` tests skip with the reason shown where
no GPU is usable (``pytest --gpu`` refuses to run there).
"""
import threading

import numpy as np
import pytest

import gpucorr
from gpucorr import patterns
from gpucorr.backends import devices as _device
from gpucorr.backends.devices import cuda_unusable_reason
from gpucorr.execution import Job, as_source, streaming
from gpucorr.execution.sources import ArraySource, ScanSource, Source

from helpers import assert_results_match, jittered_peaks, random_lattice_frames

PATTERN = patterns.RadialGradient(radius=4)


@pytest.fixture
def data(rng):
    frames, true = random_lattice_frames(rng, 6, shape=(96, 88), radius=4, dtype=np.uint16)
    return frames, jittered_peaks(rng, true, (96, 88))


class DLPackOnly:
    """An array of a foreign library that offers nothing but the DLPack protocol."""

    def __init__(self, arr, device=None):
        self.arr = arr
        self.device_type = device

    def __dlpack__(self, **kwargs):
        return self.arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        if self.device_type is not None:
            return (self.device_type, 0)
        return self.arr.__dlpack_device__()


# ---------------------------------------------------------------- names and use_device

@pytest.mark.parametrize("bad", ["nvidia", "cuda:", "cuda:x", "cuda:-1", "CPU", 0, 1.5, "cuda:1:2"])
def test_malformed_device_is_a_value_error(data, bad):
    frames, peaks = data
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'cuda:N', 'auto'"):
        gpucorr.refine(frames, peaks, PATTERN, device=bad)
    with pytest.raises(ValueError, match="got " + repr(bad).replace("[", r"\[")):
        with gpucorr.use_device(bad):
            pass


@pytest.mark.parametrize("device", [None, "cpu", "auto"])
def test_cpu_and_auto_without_gpu_give_numpy(data, device):
    if device == "auto" and cuda_unusable_reason() is None:
        pytest.skip("a GPU is usable here: auto picks it (see the gpu tests)")
    frames, peaks = data
    expected = gpucorr.refine(frames, peaks, PATTERN)
    got = gpucorr.refine(frames, peaks, PATTERN, device=device)
    for a, b in zip(got, expected):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(cuda_unusable_reason() is None, reason="a GPU is usable here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu_says_why(data, device):
    frames, peaks = data
    with pytest.raises(ValueError, match=f"device='{device}' asked for, but no GPU is usable: "
                                         f"{cuda_unusable_reason()[:20]}"):
        gpucorr.refine(frames, peaks, PATTERN, device=device)
    with gpucorr.use_device(device):
        with pytest.raises(ValueError, match="no GPU is usable"):
            gpucorr.refine(frames, peaks, PATTERN)
        # an explicit argument wins over the block
        gpucorr.refine(frames, peaks, PATTERN, device="cpu")


def test_use_device_nests_and_restores():
    assert gpucorr.get_device() is None
    with gpucorr.use_device("cpu"):
        assert gpucorr.get_device() == "cpu"
        with gpucorr.use_device("cuda:1"):
            assert gpucorr.get_device() == "cuda:1"
        assert gpucorr.get_device() == "cpu"
    assert gpucorr.get_device() is None
    with pytest.raises(RuntimeError):
        with gpucorr.use_device("auto"):
            raise RuntimeError
    assert gpucorr.get_device() is None


def test_use_device_is_per_thread():
    seen = {}

    def other():
        seen["other"] = gpucorr.get_device()

    with gpucorr.use_device("cpu"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        seen["here"] = gpucorr.get_device()
    assert seen == {"other": None, "here": "cpu"}


# ---------------------------------------------------------------- foreign arrays

def test_dlpack_frames_and_peaks_on_the_cpu(data):
    frames, peaks = data
    expected = gpucorr.refine(frames, peaks, PATTERN, upsample=True)
    got = gpucorr.refine(DLPackOnly(frames), DLPackOnly(peaks), PATTERN, upsample=True)
    for a, b in zip(got, expected):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b)


def test_dlpack_input_is_taken_without_a_copy(data):
    frames, _ = data
    view = _device.as_native(DLPackOnly(frames), "frames")
    assert np.shares_memory(view, frames)


def test_dlpack_on_an_unknown_device_is_a_type_error(data):
    frames, peaks = data
    with pytest.raises(TypeError, match="frames: .*DLPackOnly lives on DLPack device type 4"):
        gpucorr.refine(DLPackOnly(frames, device=4), peaks, PATTERN)


def test_foreign_array_that_cannot_export_is_a_type_error(data):
    frames, peaks = data

    class Refuses(DLPackOnly):
        def __dlpack__(self, **kwargs):
            raise BufferError("Can't export tensors that require gradient, use tensor.detach()")

    with pytest.raises(TypeError, match="cannot take .*Refuses zero-copy.*detach"):
        gpucorr.refine(Refuses(frames), peaks, PATTERN)


def test_torch_cpu_tensors(data):
    torch = pytest.importorskip("torch")
    frames, peaks = data
    expected = gpucorr.refine(frames, peaks, PATTERN)
    got = gpucorr.refine(torch.from_numpy(frames.astype(np.float32)), torch.from_numpy(peaks),
                         PATTERN)
    assert_results_match(got, expected)
    # results go back to torch zero-copy
    back = torch.from_dlpack(got.refineds)
    assert back.data_ptr() == got.refineds.ctypes.data


# ---------------------------------------------------------------- chunking of the stream

def test_staging_chunks_respect_the_budget_and_the_staging_size(data):
    frames, peaks = data
    job = Job(np, as_source(frames)[0], peaks, PATTERN, "fast", 1, PATTERN.get_crop_size(), None)
    frame_nbytes = frames[0].nbytes
    per = job.per_frame + 2 * frame_nbytes
    assert job.chunk_frames(10 * per, 1, 1000, extra_per_frame=2 * frame_nbytes) == 6
    assert job.chunk_frames(3 * per, 1, 1000, extra_per_frame=2 * frame_nbytes) == 3
    assert job.chunk_frames(1, 1, 1000, extra_per_frame=2 * frame_nbytes) == 1
    assert job.chunk_frames(10 * per, 1, 2, extra_per_frame=2 * frame_nbytes) == 2


def test_read_into_converts_byte_order_and_float16(data):
    frames, _ = data
    out = np.empty((3,) + frames.shape[1:], np.uint16)
    as_source(frames.astype(">u2")[::2])[0].read_into(0, 3, out)
    np.testing.assert_array_equal(out, frames[::2][:3])
    out32 = np.empty((2,) + frames.shape[1:], np.float32)
    ScanSource(frames.astype(np.float16).reshape(2, 3, 96, 88)).read_into(1, 3, out32)
    np.testing.assert_array_equal(out32, frames[1:3].astype(np.float16).astype(np.float32))


def test_contiguous_4d_numpy_frames_are_a_view_not_read_by_runs(data, tmp_path):
    frames, _ = data
    four = frames.reshape(2, 3, 96, 88)
    source, lead = as_source(four)
    assert lead == (2, 3) and source.shape == (6, 96, 88)
    assert isinstance(source, ArraySource) and np.shares_memory(source.stack, four)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.uint16, four.shape)
    source, _ = as_source(mm)
    assert isinstance(source.stack, np.memmap) and np.shares_memory(source.stack, mm)
    source, _ = as_source(four[:, ::-1])  # not C-contiguous: read by runs, never whole
    assert isinstance(source, ScanSource)


@pytest.mark.parametrize("dtype", [np.uint16, ">u2"])
def test_read_into_copies_runs_of_strided_4d_numpy_frames_straight_into_the_buffer(
        data, monkeypatch, dtype):
    frames, _ = data
    four = frames.reshape(2, 3, 96, 88).astype(dtype)[:, ::-1]
    flat = ScanSource(four)
    monkeypatch.setattr(ScanSource, "read", lambda *a: pytest.fail("joined runs"))
    out = np.full((5,) + frames.shape[1:], 7, np.uint16)
    flat.read_into(1, 5, out[1:])  # frames 1..4 span both scan rows
    np.testing.assert_array_equal(out[1:], np.asarray(four).reshape(6, 96, 88)[1:5])
    assert (out[0] == 7).all()


# ---------------------------------------------------------------- on a GPU

@pytest.fixture
def cupy():
    import cupy
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("mode,upsample", [("fast", False), ("fast", 20), ("full", 20)])
def test_host_frames_on_cuda_come_back_as_numpy(cupy, data, mode, upsample):
    frames, peaks = data
    expected = gpucorr.refine(frames, peaks, PATTERN, mode=mode, upsample=upsample)
    got = gpucorr.refine(frames, peaks, PATTERN, mode=mode, upsample=upsample, device="cuda")
    assert all(isinstance(a, np.ndarray) for a in got)
    assert_results_match(got, expected)
    with gpucorr.use_device("cuda:0"):
        again = gpucorr.refine(frames, peaks, PATTERN, mode=mode, upsample=upsample)
    for a, b in zip(again, got):
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("piece", [1, 3, 4])
def test_streaming_many_chunks_in_their_order(cupy, rng, monkeypatch, tmp_path, workers, piece):
    """Small staging buffers: many chunks through both slots, each copied in pieces of
    ``piece`` frames, from a strided memmap; progress."""
    frames, true = random_lattice_frames(rng, 23, shape=(64, 72), radius=3, dtype=np.uint16)
    path = tmp_path / "frames.npy"
    np.save(path, frames)
    mm = np.load(path, mmap_mode="r")[::-1]
    peaks = jittered_peaks(rng, true, (64, 72))
    pattern = patterns.Circular(radius=3)
    monkeypatch.setattr(streaming, "STAGING_BYTES", 4 * frames[0].nbytes)
    monkeypatch.setattr(streaming, "STAGING_PIECE_BYTES", piece * frames[0].nbytes)
    calls = []
    got = gpucorr.refine(mm, peaks, pattern, device="cuda", workers=workers,
                         progress=lambda done, total: calls.append((done, total)))
    expected = gpucorr.refine(np.ascontiguousarray(mm), peaks, pattern)
    assert_results_match(got, expected)
    assert calls == [(min(d, 23), 23) for d in range(4, 24 + 3, 4)]


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["pinned", "pinned-4d", "pinned-strided", "pinned-float16",
                                  "pageable"])
def test_streaming_copies_pinned_frames_straight_from_the_callers_memory(cupy, rng, monkeypatch,
                                                                         case):
    """Frames in page-locked memory (cupyx.empty_pinned) skip the staging buffers; views
    that are not C-contiguous, dtypes the staging converts and pageable frames do not."""
    import cupyx
    frames, true = random_lattice_frames(rng, 11, shape=(64, 72), radius=3, dtype=np.uint16)
    peaks = jittered_peaks(rng, true, (64, 72))
    pattern = patterns.Circular(radius=3)
    dtype = np.float16 if case == "pinned-float16" else np.uint16
    if case == "pageable":
        given = frames.copy()
    else:
        buffer = cupyx.empty_pinned((22,) + frames.shape[1:], dtype=dtype)
        buffer[...] = 7
        given = buffer[::2] if case == "pinned-strided" else buffer[:11]
        given[...] = frames
        if case == "pinned-4d":
            given = given.reshape(1, 11, 64, 72)
    before = given.copy()
    monkeypatch.setattr(streaming, "STAGING_BYTES", 4 * frames[0].nbytes)  # three chunks
    used = []
    for name in ("load", "upload"):
        real = getattr(streaming.Slot, name)
        monkeypatch.setattr(streaming.Slot, name, lambda self, *a, _r=real, _n=name: (
            used.append(_n), _r(self, *a)))
    got = gpucorr.refine(given, peaks, pattern, device="cuda")
    expected = gpucorr.refine(np.asarray(before).reshape(frames.shape), peaks, pattern)
    assert_results_match([np.asarray(a).reshape(e.shape) for a, e in zip(got, expected)],
                         expected)
    assert got.refineds.shape == given.shape[:-2] + (len(peaks), 2)
    direct = case in ("pinned", "pinned-4d")
    assert set(used) == {"upload" if direct else "load"} and len(used) >= 3  # every chunk
    np.testing.assert_array_equal(given, before)


@pytest.mark.gpu
def test_streaming_4d_hdf5(cupy, rng, tmp_path):
    h5py = pytest.importorskip("h5py")
    frames, true = random_lattice_frames(rng, 12, shape=(64, 64), radius=3, dtype=np.uint16)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["data"] = frames.reshape(3, 4, 64, 64)
    peaks = np.rint(true).astype(np.int64)
    pattern = patterns.Circular(radius=3)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        got = gpucorr.refine(f["data"], peaks, pattern, device="cuda", upsample=True)
    expected = gpucorr.refine(frames, peaks, pattern, upsample=True)
    assert got.refineds.shape == (3, 4, len(peaks), 2)
    assert_results_match([a.reshape(e.shape) for a, e in zip(got, expected)], expected)


@pytest.mark.parametrize("layout", ["3d", "4d", "4d-chunked", "big-endian"])
def test_staging_reads_hdf5_straight_into_the_buffer(rng, tmp_path, monkeypatch, layout):
    """Streaming reads h5py frames into the pinned buffer with read_direct (no temporary);
    where the dtype differs (big-endian on disk) it reads and converts as before."""
    h5py = pytest.importorskip("h5py")
    frames = rng.integers(0, 4000, (3, 5, 12, 10)).astype(np.uint16)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        if layout == "3d":
            f["data"] = frames.reshape(15, 12, 10)
        elif layout == "big-endian":
            f.create_dataset("data", data=frames.astype(">u2"))
        else:
            f.create_dataset("data", data=frames,
                             chunks=(1, 2, 12, 10) if layout == "4d-chunked" else None)
    direct = layout != "big-endian"
    if direct:  # the fallback is not used
        monkeypatch.setattr(Source, "chunk", lambda *a: pytest.fail("read a temporary"))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        stack, lead = as_source(f["data"])
        assert lead == ((15,) if layout == "3d" else (3, 5))
        for start, stop in ((0, 15), (3, 12), (4, 6), (7, 8)):
            out = np.zeros((16, 12, 10), np.uint16)
            stack.read_into(start, stop, out)
            np.testing.assert_array_equal(out[:stop - start],
                                          frames.reshape(15, 12, 10)[start:stop])
            assert not out[stop - start:].any()


@pytest.mark.gpu
def test_streaming_recovers_from_out_of_memory(cupy, data, monkeypatch):
    frames, peaks = data
    real = Job.compute
    failures = []

    def flaky(self, chunk, out, start, stop):
        if stop - start > 2 and len(failures) < 2:
            failures.append(stop - start)
            raise cupy.cuda.memory.OutOfMemoryError(1 << 40, 0)
        return real(self, chunk, out, start, stop)

    monkeypatch.setattr(Job, "compute", flaky)
    got = gpucorr.refine(frames, peaks, PATTERN, device="cuda")
    monkeypatch.setattr(Job, "compute", real)
    assert failures == [6, 3]
    assert_results_match(got, gpucorr.refine(frames, peaks, PATTERN))


@pytest.mark.gpu
def test_streaming_slots_shrink_when_out_of_memory(cupy, data, monkeypatch):
    frames, peaks = data
    real = streaming.Slot.__init__
    sizes = []

    def tight(self, cupy_, cupyx, job, chunk, dtype, **kwargs):
        sizes.append(chunk)
        if chunk > 2:
            raise cupy.cuda.memory.OutOfMemoryError(1 << 40, 0)
        real(self, cupy_, cupyx, job, chunk, dtype, **kwargs)

    monkeypatch.setattr(streaming.Slot, "__init__", tight)
    got = gpucorr.refine(frames, peaks, PATTERN, device="cuda")
    assert sizes == [6, 3, 1, 1]
    assert_results_match(got, gpucorr.refine(frames, peaks, PATTERN))


@pytest.mark.gpu
def test_cupy_frames_on_the_cpu_come_back_as_cupy(cupy, data):
    frames, peaks = data
    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), PATTERN, device="cpu")
    assert all(isinstance(a, cupy.ndarray) for a in got)
    expected = gpucorr.refine(frames, peaks, PATTERN)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(cupy.asnumpy(a), b)


@pytest.mark.gpu
def test_auto_picks_the_gpu(cupy, data):
    frames, peaks = data
    got = gpucorr.refine(frames, peaks, PATTERN, device="auto")
    assert all(isinstance(a, np.ndarray) for a in got)
    assert_results_match(got, gpucorr.refine(frames, peaks, PATTERN))


@pytest.mark.gpu
def test_missing_gpu_index_and_other_gpu(cupy, data):
    frames, peaks = data
    count = cupy.cuda.runtime.getDeviceCount()
    with pytest.raises(ValueError, match=f"there are {count} GPU"):
        gpucorr.refine(frames, peaks, PATTERN, device=f"cuda:{count}")
    if count < 2:
        pytest.skip("one GPU: frames cannot be on another")
    with cupy.cuda.Device(1):
        on_1 = cupy.asarray(frames)
        peaks_1 = cupy.asarray(peaks)
    with pytest.raises(ValueError, match="frames are on cuda:1 but device='cuda:0'"):
        gpucorr.refine(on_1, peaks_1, PATTERN, device="cuda:0")


@pytest.mark.gpu
def test_dlpack_and_cuda_array_interface_on_the_gpu(cupy, data):
    frames, peaks = data
    expected = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), PATTERN)

    class CAI:
        def __init__(self, a):
            self.__cuda_array_interface__ = a.__cuda_array_interface__
            self.keep = a

    for wrap in (DLPackOnly, CAI):
        got = gpucorr.refine(wrap(cupy.asarray(frames)), wrap(cupy.asarray(peaks)), PATTERN)
        for a, b in zip(got, expected):
            assert isinstance(a, cupy.ndarray)
            cupy.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_torch_cuda_tensors_zero_copy(cupy, data):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA")
    frames, peaks = data
    t_frames = torch.from_numpy(frames.astype(np.float32)).cuda()
    t_peaks = torch.from_numpy(peaks).cuda()
    got = gpucorr.refine(t_frames, t_peaks, PATTERN)
    assert isinstance(got.refineds, cupy.ndarray)
    back = torch.from_dlpack(got.refineds)
    assert back.device.type == "cuda" and back.data_ptr() == got.refineds.data.ptr
    assert_results_match([cupy.asnumpy(a) for a in got], gpucorr.refine(frames, peaks, PATTERN))


# ---------------------------------------------------------------- Dask

def test_dask_takes_the_device_at_graph_construction(data):
    da = pytest.importorskip("dask.array")
    import gpucorr.dask
    frames, peaks = data
    darr = da.from_array(frames, chunks=(2, -1, -1))
    with pytest.raises(ValueError, match="device must be"):
        gpucorr.dask.refine(darr, peaks, PATTERN, device="gpu0")
    with gpucorr.use_device("cpu"):
        on_cpu = gpucorr.dask.refine(darr, peaks, PATTERN)
    expected = gpucorr.refine(frames, peaks, PATTERN)
    for a, b in zip(on_cpu.compute(scheduler="threads"), expected):
        np.testing.assert_array_equal(a, b)
    if cuda_unusable_reason() is None:
        return
    with gpucorr.use_device("cuda"):
        res = gpucorr.dask.refine(darr, peaks, PATTERN)
    # computed outside the block, in other threads: the block still applies
    with pytest.raises(ValueError, match="no GPU is usable"):
        res.compute(scheduler="threads")


@pytest.mark.gpu
def test_dask_numpy_chunks_on_the_gpu(cupy, data):
    da = pytest.importorskip("dask.array")
    import gpucorr.dask
    frames, peaks = data
    res = gpucorr.dask.refine(da.from_array(frames, chunks=(4, -1, -1)), peaks, PATTERN,
                              device="cuda").compute(scheduler="threads")
    assert all(isinstance(a, np.ndarray) for a in res)
    assert_results_match(res, gpucorr.refine(frames, peaks, PATTERN))


def test_get_peaks_takes_dlpack_frames(data):
    frames, _ = data
    frame = frames[0].astype(np.float64)
    expected = gpucorr.get_peaks(frame, PATTERN, 10)
    np.testing.assert_array_equal(gpucorr.get_peaks(DLPackOnly(frame), PATTERN, 10), expected)
    np.testing.assert_array_equal(gpucorr.get_correlation(DLPackOnly(frame), PATTERN),
                                  gpucorr.get_correlation(frame, PATTERN))


@pytest.mark.gpu
def test_get_peaks_on_cupy_frames_gives_cupy_peaks(cupy, data):
    frames, _ = data
    frame = frames.sum(axis=0).astype(np.float64)
    peaks = gpucorr.get_peaks(cupy.asarray(frame), PATTERN, 12)
    assert isinstance(peaks, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(peaks), gpucorr.get_peaks(frame, PATTERN, 12))
    # straight into refine on the GPU
    res = gpucorr.refine(cupy.asarray(frames), peaks, PATTERN)
    assert isinstance(res.centers, cupy.ndarray)
