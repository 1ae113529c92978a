"""Dask benchmarks: gpucorr.dask.refine on a LocalCluster against the direct call.

Not part of the normal test run (``testpaths`` are ``tests`` and ``gpucorr``).
Run explicitly, with benchmarking switched on (pyproject's addopts disable it)::

    python -m pytest bench/test_bench_dask.py --benchmark-enable

Group "dask-overhead" times, on the same zarr store (2048 frames 256x256
uint16, zarr chunks of 64 frames, 49 peaks, RadialGradient(radius=8)):

- ``test_direct``: ``gpucorr.refine(zarr_array, ...)``, default threads;
- ``test_dask_local_cluster[tuned]``: ``gpucorr.dask.refine(da.from_zarr(...,
  chunks=(256, -1, -1)), ...).compute()`` on a ``LocalCluster`` of one worker
  process per core, one thread each, started with ``gpucorr.dask.worker_config()``;
- ``test_dask_local_cluster[dask-defaults]``: the same with Dask's default worker
  environment (``MALLOC_TRIM_THRESHOLD_=65536``).

Cluster start-up and a warm-up call are not timed. Compare within one run only;
``bench/dask_overhead.py`` interleaves the two sides round by round and prints
the overhead in percent, which is the steadier figure on a shared machine.
"""
import os

import numpy as np
import pytest

import dask_overhead
import workload

pytest.importorskip("distributed")
pytest.importorskip("zarr")

ROUNDS = 5
GROUP = "dask-overhead"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("dask-bench") / "frames.zarr"
    peaks = dask_overhead.write_store(path, dask_overhead.N_FRAMES, dask_overhead.ZARR_CHUNK)
    return path, peaks


@pytest.fixture(scope="module")
def expected(store):
    path, peaks = store
    return dask_overhead.direct_call(path, peaks)()


@pytest.fixture(scope="module", params=["tuned", "dask-defaults"])
def client(request):
    malloc = "tuned" if request.param == "tuned" else "dask"
    with dask_overhead.local_cluster(malloc=malloc) as client:
        yield client, malloc


def _run(benchmark, call, backend, **info):
    call()  # JIT compilation / numba cache loading in every worker, page faults: not timed
    benchmark.group = GROUP
    benchmark.extra_info.update(backend=backend, device=workload.device(),
                                frames_per_call=dask_overhead.N_FRAMES,
                                frame_shape="x".join(map(str, workload.FRAME_SHAPE)),
                                dtype="uint16", n_peaks=workload.PEAKS,
                                pattern=f"RadialGradient(radius={workload.RADIUS})",
                                zarr_chunk=dask_overhead.ZARR_CHUNK, **info)
    result = benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["frames_per_s_best"] = round(
            dask_overhead.N_FRAMES / benchmark.stats.stats.min, 1)
    return result


def _assert_same(got, expected):
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_direct(benchmark, store, expected):
    path, peaks = store
    res = _run(benchmark, dask_overhead.direct_call(path, peaks),
               "gpucorr.refine on the zarr array (numba CPU, default workers)",
               threads=os.cpu_count())
    _assert_same(res, expected)


def test_dask_local_cluster(benchmark, store, expected, client):
    path, peaks = store
    client, malloc = client
    n_workers = len(client.scheduler_info()["workers"])
    res = _run(benchmark, dask_overhead.dask_call(path, peaks, client, dask_overhead.CHUNK),
               "gpucorr.dask.refine on da.from_zarr, distributed.LocalCluster",
               dask_workers=n_workers, threads_per_worker=1,
               dask_chunk=dask_overhead.CHUNK,
               worker_environ="gpucorr.dask.worker_config()" if malloc == "tuned"
               else "Dask defaults")
    _assert_same(res, expected)
