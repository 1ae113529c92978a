"""gpucorr.dask.refine: lazy results equal to gpucorr.refine, on local schedulers and a
two-process distributed LocalCluster, errors at graph construction, a worker that dies."""
import os
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import gpucorr  # noqa: E402
import gpucorr.api  # noqa: E402
import gpucorr.dask  # noqa: E402
from gpucorr import patterns  # noqa: E402

from helpers import assert_results_match, jittered_peaks, random_lattice_frames  # noqa: E402

SHAPE = (64, 72)


@pytest.fixture(scope="module")
def data():
    """12 noisy frames (uint16) and peaks, some at and beyond the frame edges."""
    rng = np.random.default_rng(20261201)
    frames, true = random_lattice_frames(rng, 12, shape=SHAPE, radius=3, dtype=np.uint16)
    return frames, jittered_peaks(rng, true, SHAPE)


def assert_same(got, expected):
    """Bit-identical results, same dtypes and shapes."""
    for name, a, b in zip(("centers", "refineds", "heights", "elevations"), got, expected):
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


# --- equality with the in-memory call --------------------------------------------------

@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("upsample", [False, 7], ids=["com", "up7"])
@pytest.mark.parametrize("layout", ["3d", "4d"])
def test_equals_in_memory_refine(data, layout, mode, upsample):
    frames, peaks = data
    pattern = patterns.RadialGradient(radius=3)
    if layout == "3d":
        chunks = ((5, 0, 3, 4), -1, -1)  # uneven, with an empty chunk
    else:
        frames = frames.reshape(3, 4, *SHAPE)
        chunks = ((2, 1), (1, 3), -1, -1)
    expected = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=upsample)
    darr = da.from_array(frames, chunks=chunks)
    res = gpucorr.dask.refine(darr, peaks, pattern, mode=mode, upsample=upsample)
    assert isinstance(res, gpucorr.RefineResult)
    p = len(peaks)
    scan = darr.chunks[:-2]
    assert res.centers.chunks == scan + ((p,), (2,))
    assert res.refineds.chunks == scan + ((p,), (2,))
    assert res.heights.chunks == scan + ((p,),)
    assert res.elevations.chunks == scan + ((p,),)
    assert [a.dtype for a in res] == [np.int32, np.float32, np.float32, np.float32]
    assert all(isinstance(a._meta, np.ndarray) for a in res)
    assert_same(res.compute(scheduler="sync"), expected)
    assert_same(dask.compute(*res, scheduler="threads"), expected)


def test_single_outputs_and_slices(data):
    frames, peaks = data
    pattern = patterns.Circular(radius=3)
    expected = gpucorr.refine(frames, peaks, pattern, upsample=True)
    res = gpucorr.dask.refine(da.from_array(frames, chunks=(5, -1, -1)), peaks, pattern,
                              upsample=True)
    np.testing.assert_array_equal(res.heights.compute(scheduler="sync"), expected.heights)
    np.testing.assert_array_equal(res.refineds[3:9].compute(scheduler="sync"),
                                  expected.refineds[3:9])
    centers, refineds, heights, elevations = res  # unpacks like the in-memory result
    np.testing.assert_array_equal(elevations.compute(scheduler="sync"), expected.elevations)


def test_options_reach_every_chunk(data):
    frames, peaks = data
    pattern = patterns.BackgroundSubtraction(radius=3)
    kwargs = dict(mode="full", upsample=3, memory_limit=1, workers=2)
    expected = gpucorr.refine(frames, peaks, pattern, **kwargs)
    got = gpucorr.dask.refine(da.from_array(frames, chunks=(7, -1, -1)), peaks, pattern,
                              **kwargs).compute(scheduler="sync")
    assert_same(got, expected)


def test_compute_persist_and_replaced_fields(data):
    frames, peaks = data
    pattern = patterns.Circular(radius=3)
    expected = gpucorr.refine(frames, peaks, pattern)
    res = gpucorr.dask.refine(da.from_array(frames, chunks=(5, -1, -1)), peaks, pattern)
    kept = res.persist(scheduler="sync")
    assert isinstance(kept, gpucorr.dask.DaskRefineResult)
    assert all(len(a.dask) < len(b.dask) for a, b in zip(kept, res))  # holds data now
    assert_same(kept.compute(scheduler="sync"), expected)
    # a field replaced by the user is honoured (compute falls back to dask.compute)
    res.heights = res.heights[2:5]
    got = res.compute(scheduler="sync")
    assert type(got) is gpucorr.RefineResult
    np.testing.assert_array_equal(got.heights, expected.heights[2:5])
    np.testing.assert_array_equal(got.centers, expected.centers)


# --- one refine per chunk, nothing at construction --------------------------------------

def test_refine_runs_once_per_chunk(data, monkeypatch):
    frames, peaks = data
    calls = []
    real = gpucorr.api.refine

    def counting(block, *args, **kwargs):
        calls.append(block.shape)
        return real(block, *args, **kwargs)

    monkeypatch.setattr(gpucorr.api, "refine", counting)
    darr = da.from_array(frames.reshape(3, 4, *SHAPE), chunks=(1, 2, -1, -1))
    res = gpucorr.dask.refine(darr, peaks, patterns.RadialGradient(radius=3))
    assert calls == []  # nothing runs at graph construction
    layers = [k for k in res.centers.dask.layers if k.startswith("gpucorr-refine-")]
    assert len(layers) == 1
    # the four outputs share the one refine layer
    assert all(layers[0] in a.dask.layers for a in res)
    assert len(res.centers.dask.layers[layers[0]]) == darr.npartitions == 6
    res.compute(scheduler="sync")
    assert sorted(calls) == [(1, 2) + SHAPE] * 6
    calls.clear()
    dask.compute(*res, scheduler="threads")
    assert len(calls) == 6


def test_nothing_is_computed_at_construction(data):
    frames, peaks = data

    def explode(block):
        raise RuntimeError("a block was computed")

    darr = da.from_array(frames, chunks=(4, -1, -1)).map_blocks(explode, dtype=frames.dtype)
    res = gpucorr.dask.refine(darr, peaks, patterns.Circular(radius=3))
    assert res.heights.shape == (len(frames), len(peaks))
    with pytest.raises(RuntimeError, match="a block was computed"):
        res.compute(scheduler="sync")


# --- errors surface at graph construction ------------------------------------------------

@pytest.fixture
def darr(data):
    return da.from_array(data[0], chunks=(4, -1, -1))


def test_frame_axes_chunked_is_an_error(data, darr):
    frames, peaks = data
    pattern = patterns.Circular(radius=3)
    for chunks in [(4, 32, -1), (4, -1, 36), ((6, 6), (10, 54), (36, 36))]:
        with pytest.raises(ValueError, match=r"one chunk along each frame axis.*"
                                             r"rechunk\(\{-2: -1, -1: -1\}\)"):
            gpucorr.dask.refine(da.from_array(frames, chunks=chunks), peaks, pattern)
    # the advice works
    bad = da.from_array(frames, chunks=(4, 32, 36))
    good = gpucorr.dask.refine(bad.rechunk({-2: -1, -1: -1}), peaks, pattern)
    assert good.centers.chunks[0] == (4, 4, 4)


def test_unknown_frame_chunk_sizes_are_an_error(data, darr):
    frames, peaks = data
    unknown = darr[darr[:, 0, 0] >= 0]  # unknown (nan) scan chunks are fine
    res = gpucorr.dask.refine(unknown, peaks, patterns.Circular(radius=3))
    assert_same(res.compute(scheduler="sync"),
                gpucorr.refine(frames, peaks, patterns.Circular(radius=3)))
    frames_unknown = da.from_array(frames, chunks=(4, -1, -1)).map_blocks(
        lambda b: b, chunks=((4, 4, 4), (np.nan,), (np.nan,)), dtype=frames.dtype)
    with pytest.raises(ValueError, match="one chunk along each frame axis"):
        gpucorr.dask.refine(frames_unknown, peaks, patterns.Circular(radius=3))


def test_bad_arguments_raise_at_construction(data, darr):
    frames, peaks = data
    pattern = patterns.Circular(radius=3)
    with pytest.raises(TypeError, match=r"darr must be a dask.array.Array.*numpy.ndarray"):
        gpucorr.dask.refine(frames, peaks, pattern)
    with pytest.raises(ValueError, match=r"at least one scan axis.*got shape \(64, 72\)"):
        gpucorr.dask.refine(darr[0], peaks, pattern)
    with pytest.raises(TypeError, match="darr must have a real integer or floating dtype"):
        gpucorr.dask.refine(darr.astype(np.complex64), peaks, pattern)
    with pytest.raises(ValueError, match=r"peaks must have shape \(P, 2\).*got \(5, 3\)"):
        gpucorr.dask.refine(darr, np.zeros((5, 3), int), pattern)
    with pytest.raises(ValueError, match="peaks must be integer"):
        gpucorr.dask.refine(darr, peaks + 0.5, pattern)
    with pytest.raises(TypeError, match="pattern must be a match pattern"):
        gpucorr.dask.refine(darr, peaks, "circle")
    with pytest.raises(ValueError, match="mode must be 'fast' or 'full'; got 'slow'"):
        gpucorr.dask.refine(darr, peaks, pattern, mode="slow")
    with pytest.raises(ValueError, match="upsample must be"):
        gpucorr.dask.refine(darr, peaks, pattern, upsample=5000)
    with pytest.raises(ValueError, match="larger than the frame"):
        gpucorr.dask.refine(darr, peaks, patterns.Circular(radius=3, search=40))
    with pytest.raises(ValueError, match="workers must be an int >= 1; got 0"):
        gpucorr.dask.refine(darr, peaks, pattern, workers=0)
    with pytest.raises(ValueError, match="memory_limit must be a positive int"):
        gpucorr.dask.refine(darr, peaks, pattern, memory_limit=-1)


# --- CuPy chunks (meta follows the input type) ---------------------------------------------

@pytest.mark.gpu
def test_cupy_chunks_give_cupy_meta(data):
    cupy = pytest.importorskip("cupy")
    frames, peaks = data
    darr = da.from_array(frames, chunks=(4, -1, -1)).map_blocks(cupy.asarray)
    res = gpucorr.dask.refine(darr, peaks, patterns.Circular(radius=3))
    assert all(isinstance(a._meta, cupy.ndarray) for a in res)


@pytest.mark.gpu
def test_cupy_chunks_equal_cpu(data):
    cupy = pytest.importorskip("cupy")
    frames, peaks = data
    pattern = patterns.Circular(radius=3)
    darr = da.from_array(frames, chunks=(4, -1, -1)).map_blocks(cupy.asarray)
    got = gpucorr.dask.refine(darr, peaks, pattern).compute(scheduler="sync")
    assert isinstance(got.centers, cupy.ndarray)
    # GPU against CPU: the parity tolerances of DESIGN.md (cuFFT is not scipy.fft)
    assert_results_match([cupy.asnumpy(a) for a in got], gpucorr.refine(frames, peaks, pattern))


# --- dask.distributed: two worker processes ------------------------------------------------

@pytest.fixture(scope="module")
def client():
    """A client on two worker processes (one thread each), with gpucorr's worker config."""
    distributed = pytest.importorskip("distributed")
    saved = dict(os.environ)  # the nanny writes the worker environment into ours
    try:
        with dask.config.set(gpucorr.dask.worker_config()), \
                distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         dashboard_address=None,
                                         worker_dashboard_address=None) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_worker_config_reaches_the_worker_processes(client):
    names = list(gpucorr.dask.WORKER_ENVIRON)

    def malloc_environ():  # local: pickled by value, the workers import nothing of ours
        import os
        return {k: os.environ.get(k) for k in names}

    expected = {k: str(v) for k, v in gpucorr.dask.WORKER_ENVIRON.items()}
    assert list(client.run(malloc_environ).values()) == [expected, expected]


def test_local_cluster_gets_exactly_the_in_memory_results(data, client, tmp_path):
    zarr = pytest.importorskip("zarr")
    frames, peaks = data
    frames = frames.reshape(3, 4, *SHAPE)
    store = str(tmp_path / "scan.zarr")
    z = zarr.open_array(store, mode="w", shape=frames.shape, dtype=frames.dtype,
                        chunks=(1, 2) + SHAPE)
    z[...] = frames
    pattern = patterns.RadialGradient(radius=3)
    for mode, upsample in [("fast", False), ("full", True)]:
        expected = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=upsample)
        darr = da.from_zarr(store, chunks=(2, 3, -1, -1))
        res = gpucorr.dask.refine(darr, peaks, pattern, mode=mode, upsample=upsample)
        assert_same(res.compute(scheduler=client), expected)
    assert len(client.scheduler_info()["workers"]) == 2  # two worker processes ran it


def _die_once_pattern(marker, parent_pid, **kwargs):
    """A Circular pattern that kills the first worker process that draws its template.

    The class is defined inside a function, so plain pickle cannot pickle it by
    reference and distributed falls back to cloudpickle, which ships the class by
    value: the worker processes need not (and do not) import this test module.
    (``cloudpickle.register_pickle_by_value`` alone is not enough: distributed
    pickles the graph with plain pickle first, which would pickle a module-level
    class by reference.)
    """

    class DieOnce(patterns.Circular):
        def get_template(self, sig_shape):
            if os.getpid() != parent_pid:
                try:  # atomic: exactly one process creates the marker, and dies
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    os._exit(1)
            return super().get_template(sig_shape)

    return DieOnce(**kwargs)


def test_a_worker_that_dies_mid_run_never_gives_partial_results(data, client, tmp_path):
    from distributed import KilledWorker
    frames, peaks = data
    marker = str(tmp_path / "died")
    pattern = _die_once_pattern(marker, os.getpid(), radius=3)
    expected = gpucorr.refine(frames, peaks, pattern)  # in this process: does not die
    assert not os.path.exists(marker)
    res = gpucorr.dask.refine(da.from_array(frames, chunks=(2, -1, -1)), peaks, pattern)
    try:
        got = res.compute(scheduler=client)
    except KilledWorker:
        pass  # acceptable: Dask gave up on the task and said so
    else:
        # Dask retried the lost task on a live (or restarted) worker: all of it, exactly
        assert_same(got, expected)
    with open(marker) as f:
        died = int(f.read())
    assert died != os.getpid()  # a worker process really died mid-run
    # the cluster recovers (the nanny restarts the worker) and keeps giving exact results
    client.wait_for_workers(2, timeout=60)
    assert_same(res.compute(scheduler=client), expected)
    # the pattern class travelled by value: no worker imported this test module
    module = __name__

    def imported_tests():
        import sys
        return module in sys.modules

    assert not any(client.run(imported_tests).values())


def _mmapped_bytes_of_an_allocation(nbytes=8 * 2**20):
    """Bytes glibc serves from fresh mmaps (mallinfo2().hblkhd) for one ``nbytes`` array."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    base = libc.mallinfo2().hblkhd
    a = np.empty(nbytes, np.uint8)
    held = libc.mallinfo2().hblkhd - base
    del a
    return held


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_tune_workers_lets_running_workers_reuse_freed_memory():
    """On a cluster started with Dask's defaults, an 8 MiB array is a fresh mmap (its pages
    fault in on every allocation); after tune_workers it comes from the reusable heap, as
    with worker_config for new workers."""
    distributed = pytest.importorskip("distributed")
    saved = dict(os.environ)
    try:
        for k in gpucorr.dask.WORKER_ENVIRON:
            os.environ.pop(k, None)
        # Dask's default worker environment (whatever another test's cluster set up)
        defaults = {"distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 65536}}
        with dask.config.set(defaults), \
                distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                         dashboard_address=":0",
                                         worker_dashboard_address=None) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            (before,) = client.run(_mmapped_bytes_of_an_allocation).values()
            assert set(gpucorr.dask.tune_workers(client).values()) == {True}
            (after,) = client.run(_mmapped_bytes_of_an_allocation).values()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert before >= 8 * 2**20, before
    assert after == 0, after
