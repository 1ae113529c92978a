"""The batched API: dtypes, layouts, chunking, sparse and memmap input, dispatch."""
import numpy as np
import pytest

import gpucorr.backends.devices
import gpucorr
from gpucorr import patterns
from gpucorr import backends as _backend
from gpucorr import pipeline as _pipeline
from gpucorr.synthetic import cbed_frame

from helpers import assert_results_match, jittered_peaks, random_lattice_frames


@pytest.fixture
def stack(rng):
    frames, true = random_lattice_frames(rng, 6, shape=(96, 80), radius=4, dtype=np.float64)
    return frames, jittered_peaks(rng, true, (96, 80))


@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64,
                                   np.dtype(">u2"), np.float16], ids=str)
def test_frame_dtypes_give_the_float_result(stack, dtype, mode):
    frames, peaks = stack
    frames = np.clip(frames, 0, 250)  # representable in every dtype
    pattern = patterns.RadialGradient(radius=4)
    typed = frames.astype(dtype)
    expected = gpucorr.refine(typed.astype(np.float32), peaks, pattern, mode=mode)
    got = gpucorr.refine(typed, peaks, pattern, mode=mode)
    assert got.centers.dtype == np.int32 and got.refineds.dtype == np.float32
    assert got.heights.dtype == np.float32 and got.elevations.dtype == np.float32
    if np.dtype(dtype) == np.float64:
        assert_results_match(got, expected)
    else:
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("dtype", [">f8", ">f4", ">f2", ">u2", ">i4"])
def test_big_endian_frames_compute_as_native(stack, dtype, mode):
    """Big-endian frames (HDF5 files can hold them) give the native dtype's results bit for
    bit: '>f8' computes in float64 like float64, not in float32."""
    frames, peaks = stack
    frames = np.clip(frames, 0, 250)
    pattern = patterns.RadialGradient(radius=4)
    big = frames.astype(dtype)
    native = big.astype(_pipeline.native(dtype))
    assert _pipeline.compute_dtype(big.dtype) == _pipeline.compute_dtype(native.dtype)
    for a, b in zip(gpucorr.refine(big, peaks, pattern, mode=mode),
                    gpucorr.refine(native, peaks, pattern, mode=mode)):
        np.testing.assert_array_equal(a, b)
    fn = gpucorr.process_frames_fast if mode == "fast" else gpucorr.process_frames_full
    for a, b in zip(fn(pattern, big, peaks), fn(pattern, native, peaks)):
        np.testing.assert_array_equal(a, b)
    assert big.dtype == np.dtype(dtype)   # the input is not modified


def test_single_frame_and_views(stack):
    frames, peaks = stack
    pattern = patterns.Circular(radius=4)
    full = gpucorr.refine(frames, peaks, pattern)
    single = gpucorr.refine(frames[2], peaks, pattern)
    assert single.centers.shape == (len(peaks), 2) and single.heights.shape == (len(peaks),)
    for a, b in zip(single, full):
        np.testing.assert_array_equal(a, b[2])
    # a non-contiguous view (every other frame, transposed memory layout)
    fortran = np.asfortranarray(frames)[::2]
    for a, b in zip(gpucorr.refine(fortran, peaks, pattern), full):
        np.testing.assert_array_equal(a, b[::2])


@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("upsample", [False, 7])
def test_chunking_and_threads_do_not_change_results(stack, mode, upsample):
    frames, peaks = stack
    pattern = patterns.BackgroundSubtraction(radius=4)
    one = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=upsample, workers=1)
    tiny = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=upsample, workers=3,
                          memory_limit=1)  # one frame per chunk
    for a, b in zip(one, tiny):
        np.testing.assert_array_equal(a, b)


def test_compatible_per_frame_api_equals_batched(stack):
    frames, peaks = stack
    pattern = patterns.RadialGradient(radius=4)
    cs = pattern.get_crop_size()
    template = pattern.get_template((2 * cs, 2 * cs))
    batched = gpucorr.refine(frames, peaks, pattern, upsample=True, scaling="log")
    n = len(peaks)
    for i, frame in enumerate(frames):
        outs = (np.zeros((n, 2), np.int64), np.zeros((n, 2), np.float32),
                np.zeros(n, np.float32), np.zeros(n, np.float32))
        gpucorr.process_frame_fast(template, cs, frame, peaks, *outs,
                                   crop_bufs=gpucorr.allocate_crop_bufs(cs, 5, np.float64),
                                   upsample=True)
        assert_results_match(outs, [a[i] for a in batched])


def test_upsample_true_means_20(stack):
    frames, peaks = stack
    pattern = patterns.Circular(radius=4)
    for mode in ("fast", "full"):
        a = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=True).refineds
        b = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=20).refineds
        c = gpucorr.refine(frames, peaks, pattern, mode=mode).refineds
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        # within the upsampled search square around the integer centre:
        # 30 x 30 points 1/20 px apart, refined by at most half a point
        centers = gpucorr.refine(frames, peaks, pattern, mode=mode).centers
        assert np.all(np.abs(a - centers) <= (15 + 0.5) / 20 + 1e-6)
        assert not np.allclose((a - centers) * 20, np.rint((a - centers) * 20))


def test_memmap_stack_is_read_in_chunks(tmp_path, rng):
    clean, _, true = cbed_frame(64, 64, radius=3)
    frames = rng.poisson(clean[0] * 50 + 2, size=(40, 64, 64)).astype(np.uint16)
    path = tmp_path / "frames.npy"
    np.save(path, frames)
    mm = np.load(path, mmap_mode="r")
    peaks = np.rint(true).astype(int)
    pattern = patterns.Circular(radius=3)
    got = gpucorr.refine(mm, peaks, pattern, memory_limit=200_000)
    expected = gpucorr.refine(frames, peaks, pattern)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_sparse_frames(stack):
    sparse = pytest.importorskip("sparse")
    import scipy.sparse
    frames, peaks = stack
    frames = np.where(frames > 40, frames, 0)
    pattern = patterns.Circular(radius=4)
    expected = gpucorr.refine(frames, peaks, pattern)
    for a, b in zip(gpucorr.refine(sparse.COO.from_numpy(frames), peaks, pattern), expected):
        np.testing.assert_array_equal(a, b)
    one = gpucorr.refine(scipy.sparse.csr_matrix(frames[1]), peaks, pattern)
    for a, b in zip(one, expected):
        np.testing.assert_array_equal(a, b[1])


def test_asymmetric_user_template_is_correlated_not_mirrored():
    # an L-shaped template and a frame containing the same L: the match lands on it
    template = np.zeros((7, 7))
    template[1:6, 2] = 1
    template[5, 2:6] = 1
    frame = np.zeros((64, 64))
    frame[30 - 3:30 + 4, 40 - 3:40 + 4] = template * 100
    res = gpucorr.refine(frame, np.array([[31, 38]]), patterns.UserTemplate(template, search=8))
    np.testing.assert_array_equal(res.centers, [[30, 40]])
    mirrored = gpucorr.refine(frame, np.array([[31, 38]]),
                              patterns.UserTemplate(template[::-1, ::-1], search=8))
    assert mirrored.heights[0] < res.heights[0]


@pytest.mark.parametrize("shape", [(63, 64), (65, 67)])
@pytest.mark.parametrize("size", [5, 6])
def test_odd_sizes_are_centred(shape, size):
    # a disk at an integer position is found there in full mode (odd frame sizes)
    # and in fast mode with odd-sized user templates
    from gpucorr.masks import circular
    frame = circular(centerX=29, centerY=33, imageSizeX=shape[1], imageSizeY=shape[0],
                     radius=2.5, antialiased=True) * 50
    template = circular(centerX=size // 2, centerY=size // 2, imageSizeX=size,
                        imageSizeY=size, radius=2.5, antialiased=True)
    for mode in ("fast", "full"):
        res = gpucorr.refine(frame, np.array([[32, 30]]), patterns.UserTemplate(template),
                             mode=mode, upsample=10)
        np.testing.assert_array_equal(res.centers, [[33, 29]])
        np.testing.assert_allclose(res.refineds, [[33, 29]], atol=0.051)


def test_inputs_are_not_modified(stack):
    frames, peaks = stack
    frames = frames.astype(np.float32)
    f0, p0 = frames.copy(), peaks.copy()
    pattern = patterns.Circular(radius=4)
    gpucorr.refine(frames, peaks, pattern, mode="full", upsample=True)
    gpucorr.refine(frames, peaks, pattern, upsample=True)
    cs = pattern.get_crop_size()
    n = len(peaks)
    gpucorr.process_frame_full(pattern.get_template(frames.shape[1:]), cs, frames[0], peaks,
                               frame_buf=np.zeros(frames.shape[1:], np.float32))
    gpucorr.process_frame_fast(pattern.get_template((2 * cs, 2 * cs)), cs, frames[0], peaks,
                               np.zeros((n, 2), int), np.zeros((n, 2)), np.zeros(n),
                               np.zeros(n), crop_bufs=np.zeros((4, 2 * cs, 2 * cs)))
    np.testing.assert_array_equal(frames, f0)
    np.testing.assert_array_equal(peaks, p0)


def test_result_unpacks_like_the_reference_tuple(stack):
    frames, peaks = stack
    centers, refineds, heights, elevations = gpucorr.refine(frames, peaks,
                                                            patterns.Circular(radius=4))
    assert centers.shape == (len(frames), len(peaks), 2)
    assert elevations.shape == (len(frames), len(peaks))


def test_cpu_backend_goes_through_the_dispatch_point(stack, monkeypatch):
    frames, peaks = stack
    calls = []
    real = _backend.get_backend

    def spy(xp):
        calls.append(xp)
        return real(xp)

    monkeypatch.setattr("gpucorr.execution.job.get_backend", spy)
    gpucorr.refine(frames, peaks, patterns.Circular(radius=4))
    assert calls == [np]
    assert real(np).name == "cpu"


def test_xp_dispatch(xp, stack):
    """NumPy input runs on the CPU, CuPy input on its GPU; results stay in that library."""
    frames, peaks = stack
    res = gpucorr.refine(xp.asarray(frames), xp.asarray(peaks), patterns.Circular(radius=4))
    assert isinstance(res.centers, type(xp.asarray(frames)))


def test_mixed_array_libraries_are_refused(any_cupy, stack):
    """NumPy and CuPy arrays in one call raise TypeError before any work: gpucorr never
    copies between host and device behind the caller's back (on the CPU stand-in for CuPy
    where no GPU is usable; the refusal comes before any GPU work)."""
    frames, peaks = stack
    pattern = patterns.Circular(radius=4)
    mix = "arguments mix array libraries"
    with pytest.raises(TypeError, match=mix):
        _backend.array_namespace(np.zeros(3), any_cupy.zeros(3))
    with pytest.raises(TypeError, match=mix):
        gpucorr.refine(any_cupy.asarray(frames), peaks, pattern)
    with pytest.raises(TypeError, match=mix):
        gpucorr.refine(frames, any_cupy.asarray(peaks), pattern)
    with pytest.raises(TypeError, match=mix):
        gpucorr.refine([any_cupy.asarray(frames[0]), frames[1]], any_cupy.asarray(peaks),
                       pattern)


def test_unsupported_array_types_are_refused():
    """An object that only says it is CuPy's (its class's module) is neither taken for a
    CuPy array nor converted: TypeError naming its type."""
    class FakeCupyArray:
        __module__ = "cupy"
    with pytest.raises(TypeError, match="unsupported array type cupy.*FakeCupyArray"):
        _backend.array_namespace(np.zeros(3), FakeCupyArray())
    with pytest.raises(TypeError, match="unsupported array type"):
        _backend.array_namespace(FakeCupyArray())


def test_scan_axes_are_kept(stack):
    frames, peaks = stack
    pattern = patterns.Circular(radius=4)
    flat = gpucorr.refine(frames, peaks, pattern)
    scan = frames.reshape(2, 3, *frames.shape[1:])
    for a, b in zip(gpucorr.refine(scan, peaks, pattern, memory_limit=1), flat):
        assert a.shape == (2, 3) + b.shape[1:]
        np.testing.assert_array_equal(a.reshape(b.shape), b)
    # a non-contiguous 4-D view, five leading axes
    view = np.asfortranarray(frames).reshape(1, 2, 1, 3, 1, *frames.shape[1:])
    for a, b in zip(gpucorr.refine(view, peaks, pattern, memory_limit=1), flat):
        np.testing.assert_array_equal(a.reshape(b.shape), b)


def test_hdf5_and_zarr_datasets_are_read_in_chunks(stack, tmp_path):
    h5py = pytest.importorskip("h5py")
    zarr = pytest.importorskip("zarr")
    frames, peaks = stack
    frames = frames.astype(np.uint16).reshape(2, 3, *frames.shape[1:])
    pattern = patterns.RadialGradient(radius=4)
    expected = gpucorr.refine(frames, peaks, pattern)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("data/frames", data=frames, chunks=(1, 1) + frames.shape[2:])
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        got = gpucorr.refine(f["data/frames"], peaks, pattern, memory_limit=1)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    z = zarr.open(str(tmp_path / "scan.zarr"), mode="w", shape=frames.shape,
                  chunks=(1, 2) + frames.shape[2:], dtype=frames.dtype)
    z[...] = frames
    got = gpucorr.refine(zarr.open(str(tmp_path / "scan.zarr"), mode="r"), peaks, pattern)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_progress_is_reported_per_chunk(stack):
    frames, peaks = stack
    calls = []
    gpucorr.refine(frames, peaks, patterns.Circular(radius=4), memory_limit=1, workers=2,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, len(frames)) for i in range(1, len(frames) + 1)]


def test_devices_lists_the_cpu_and_why_a_gpu_is_not_usable():
    found = gpucorr.devices()
    assert found[0].name == "cpu" and found[0].usable and "cores" in found[0].description
    gpus = found[1:]
    assert gpus, "the CUDA backend is always listed"
    if gpucorr.backends.devices.cuda_available():
        assert all(d.name.startswith("cuda:") and d.usable for d in gpus)
    else:
        assert [(d.name, d.usable) for d in gpus] == [("cuda", False)]
        assert gpus[0].description == gpucorr.backends.devices.cuda_unusable_reason()


# --- scratch buffers reused between chunks (gpucorr.pipeline.Workspace) ----------------

def _run_chunk(mode, frames, peaks, pattern, upsample, ws):
    """One chunk through run_fast / run_full with the workspace ``ws``; the four outputs."""
    backend = _backend.get_backend(np)
    cs = pattern.get_crop_size()
    rdtype = _pipeline.compute_dtype(frames.dtype)
    shape = (2 * cs, 2 * cs) if mode == "fast" else frames.shape[-2:]
    filt = _pipeline.correlation_filter(np, pattern.get_template(shape), shape, rdtype)
    n = len(frames) * len(peaks)
    out = (np.empty((n, 2), np.int32), np.empty((n, 2), np.float32),
           np.empty(n, np.float32), np.empty(n, np.float32))
    run = _pipeline.run_fast if mode == "fast" else _pipeline.run_full
    run(backend, frames, np.asarray(peaks, np.int64), cs, filt, int(upsample), out, ws=ws)
    return out


@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("upsample", [0, 7])
def test_reused_scratch_gives_the_bits_of_fresh_arrays(stack, mode, upsample):
    """Chunks of changing size and dtype through one kept workspace: each gives exactly
    what fresh arrays give, so nothing left in a buffer by an earlier chunk leaks in."""
    frames, peaks = stack
    pattern = patterns.RadialGradient(radius=4)
    ws = _pipeline.Workspace(np)
    for chunk in (frames[:4], frames[4:5], frames[:6].astype(np.float32), frames[1:3]):
        fresh = _run_chunk(mode, chunk, peaks, pattern, upsample,
                           _pipeline.Workspace(np, keep=False))
        for _ in range(2):
            kept = _run_chunk(mode, chunk, peaks, pattern, upsample, ws)
            for a, b in zip(kept, fresh):
                np.testing.assert_array_equal(a, b)
    assert ws.nbytes > 0


@pytest.mark.parametrize("shape", [(32, 32), (30, 30), (12, 14), (37, 41), (1, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_fft_into_buffers_gives_scipy_fft_bits(shape, dtype):
    """rfft2/irfft2 with out= (and the inverse in place) equal scipy.fft bit for bit."""
    import scipy.fft
    backend = _backend.get_backend(np)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4,) + shape).astype(dtype)
    want = scipy.fft.rfft2(x, axes=(-2, -1))
    spec = backend.rfft2(x, out=np.empty_like(want))
    np.testing.assert_array_equal(spec, want)
    assert spec.dtype == want.dtype
    want_back = scipy.fft.irfft2(want, s=shape, axes=(-2, -1))
    back = backend.irfft2(spec.copy(), shape, out=np.empty_like(x))
    np.testing.assert_array_equal(back, want_back)
    back = backend.irfft2(spec, shape, out=np.empty_like(x), overwrite_x=True)
    np.testing.assert_array_equal(back, want_back)
    assert back.dtype == np.dtype(dtype)


def test_correlate_keeps_the_spectra_when_asked(stack):
    """The spectra come back with keep_specs (the compatible functions), else the inverse
    FFT may overwrite them; the maps are the same either way."""
    backend = _backend.get_backend(np)
    crops = np.random.default_rng(4).random((5, 16, 16)).astype(np.float32)
    template = patterns.RadialGradient(radius=4).get_template((16, 16))
    filt = _pipeline.correlation_filter(np, template, (16, 16), np.float32)
    maps, specs, offsets = _pipeline.correlate(backend, crops, filt, keep_specs=True)
    kept_maps, kept_specs, kept_offsets = _pipeline.correlate(backend, crops, filt,
                                                              ws=_pipeline.Workspace(np))
    assert kept_specs is None and specs.shape == (5, 16, 9)
    assert _pipeline.correlate(backend, crops, filt)[1] is None
    np.testing.assert_array_equal(kept_maps, maps)
    np.testing.assert_array_equal(kept_offsets, offsets)


@pytest.mark.parametrize("shape", [(16, 16), (15, 22)])
def test_correlate_folds_the_inverse_scaling_into_the_filter(xp, shape):
    """correlate scales the filter instead of the maps (the inverse FFT's 1 / (h w)): maps
    and offsets are those of the scaled inverse (keep_specs, which returns the spectra
    unscaled, takes the plain path) to float32 rounding."""
    backend = _backend.get_backend(xp)
    crops = xp.asarray(np.random.default_rng(4).random((5,) + shape).astype(np.float32))
    template = patterns.RadialGradient(radius=4).get_template(shape)
    filt = _pipeline.correlation_filter(xp, xp.asarray(template), shape, np.float32)
    maps, _, offsets = _pipeline.correlate(backend, crops, filt)
    plain_maps, _, plain_offsets = _pipeline.correlate(backend, crops, filt, keep_specs=True)
    host = (lambda a: a) if xp is np else xp.asnumpy
    maps, plain_maps = host(maps), host(plain_maps)
    scale = np.abs(plain_maps).max()
    np.testing.assert_allclose(maps, plain_maps, rtol=0, atol=2e-6 * scale)
    np.testing.assert_allclose(host(offsets), host(plain_offsets), rtol=1e-6)


@pytest.mark.parametrize("how", ["public", "out", "overwrite"])
def test_cpu_irfft2_unscaled_gives_scipy_fft_bits(how):
    """irfft2(scaled=False) on every path of the CPU backend equals scipy.fft's
    norm="forward" inverse (no 1 / n) bit for bit."""
    import scipy.fft
    backend = _backend.get_backend(np)
    x = np.random.default_rng(5).standard_normal((3, 12, 14)).astype(np.float32)
    spec = scipy.fft.rfft2(x, axes=(-2, -1))
    want = scipy.fft.irfft2(spec, s=(12, 14), axes=(-2, -1), norm="forward")
    out = None if how == "public" else np.empty_like(x)
    got = backend.irfft2(spec.copy(), (12, 14), out=out, overwrite_x=how == "overwrite",
                         scaled=False)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got / (12 * 14), backend.irfft2(spec, (12, 14)), rtol=1e-6,
                               atol=1e-7)


def test_steady_state_chunks_allocate_nothing_large(stack):
    """After a first call, refine's chunks reuse the thread's scratch buffers: numpy
    allocates far less than one chunk's scratch (under Dask's nanny every large
    allocation is fresh pages from the kernel, see gpucorr.pipeline.workspace)."""
    import tracemalloc
    frames, peaks = stack
    frames = np.tile(frames, (4, 1, 1)).astype(np.float32)  # 24 frames, one chunk
    pattern = patterns.RadialGradient(radius=4)
    scratch = _pipeline.frame_bytes("fast", frames.shape[1:], len(peaks),
                                    pattern.get_crop_size(), np.float32, 7) * len(frames)
    gpucorr.refine(frames, peaks, pattern, upsample=7, workers=1)
    tracemalloc.start()
    try:
        gpucorr.refine(frames, peaks, pattern, upsample=7, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scratch > 2**20
    assert peak < scratch / 10, (peak, scratch)


def test_each_thread_has_its_own_workspace():
    """Threads running at the same time never share a workspace; a nested use in one
    thread gets a fresh one; CuPy-style modules get workspaces that keep nothing."""
    import threading
    barrier = threading.Barrier(3)
    seen = []

    def work():
        with _pipeline.thread_workspace(np) as ws:
            barrier.wait()  # all three hold their workspace at once
            seen.append(ws)
            barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(ws) for ws in seen}) == 3 and all(ws.keep for ws in seen)
    with _pipeline.thread_workspace(np) as outer:
        with _pipeline.thread_workspace(np) as inner:
            assert inner is not outer and outer.keep and not inner.keep
    with _pipeline.thread_workspace(np) as again:
        assert again is outer
    assert not _pipeline.Workspace(object(), keep=True).keep


def test_concurrent_refine_calls_equal_serial_ones(stack):
    """refine from several threads at once (each with its pool): the serial results."""
    from concurrent.futures import ThreadPoolExecutor
    frames, peaks = stack
    pattern = patterns.RadialGradient(radius=4)
    cases = [("fast", False, frames), ("full", 7, frames[::-1]),
             ("fast", 5, frames[:3].astype(np.float32)), ("full", False, frames[1:])]
    expected = [gpucorr.refine(f, peaks, pattern, mode=m, upsample=u, workers=1)
                for m, u, f in cases]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda c: gpucorr.refine(c[2], peaks, pattern, mode=c[0],
                                                         upsample=c[1], workers=2,
                                                         memory_limit=1), cases))
            for g, e in zip(got, expected):
                for a, b in zip(g, e):
                    np.testing.assert_array_equal(a, b)


def test_release_workspaces_frees_the_kept_buffers(stack):
    frames, peaks = stack
    gpucorr.refine(frames, peaks, patterns.Circular(radius=4), workers=1)
    with _pipeline.thread_workspace(np) as ws:
        kept = ws.nbytes
    assert kept > 0
    assert _pipeline.release_workspaces() >= kept
    assert ws.nbytes == 0
