"""What Dask costs: ``gpucorr.dask.refine`` on a LocalCluster against the direct call.

Both sides refine the same frames, read from the same zarr store, on the same
machine, in one run:

- **direct**: ``gpucorr.refine(zarr_array, peaks, pattern)`` with its default
  threads (one per core);
- **dask**: ``gpucorr.dask.refine(da.from_zarr(store, chunks=(chunk, -1, -1)), ...)``
  computed (all four outputs together, gathered to the client) on a
  ``distributed.LocalCluster(n_workers=<cores>, threads_per_worker=1,
  processes=True)`` started beforehand.

Cluster start-up and the first (warm-up) call of each side are not timed: numba
loads its cached kernels in every worker process once. Then the two sides are
interleaved for ``--rounds`` rounds; the best time of each gives the overhead
``dask / direct - 1`` in percent (the issue's target: at most 15 %).

The cluster runs twice, with two worker environments (``--malloc``):

- ``dask``: Dask's defaults. The nanny starts workers with
  ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``), which
  switches off glibc's dynamic mmap threshold: every allocation above 128 KiB is a
  fresh mmap, paid for in page faults. ``refine`` keeps its scratch buffers per
  thread from one chunk to the next (``gpucorr.pipeline.Workspace``), so its own
  chunks fault only once; what still faults is the reading of the frames (zarr's
  decompressed chunks, the Dask block), measured separately by a read-only pass.
- ``tuned``: ``gpucorr.dask.worker_config()``, i.e. the environment
  ``gpucorr.dask.WORKER_ENVIRON`` (glibc keeps freed memory for reuse), as
  docs/dask.md recommends.
- ``runtime`` (with ``--malloc all`` or ``runtime``): Dask's defaults, then
  ``gpucorr.dask.tune_workers(client)`` sets the same thresholds in the running
  workers with ``mallopt``.

Besides the wall times, the page faults and CPU seconds per call are printed for
this process during the direct calls, for the workers during the Dask calls, and for
the workers during a read-only pass (``da.from_zarr(...).max(axis=(1, 2))`` in the
same chunks); the CPU-time overhead is the steadier figure on a shared machine.

Run::

    python bench/dask_overhead.py                # 2048 frames, chunks of 256
    python bench/dask_overhead.py --chunk 512 --rounds 7 --json out.json

The workload is bench/workload.py's (256x256 frames, 49 disks of radius 8,
Poisson noise, ``RadialGradient(radius=8)``), cast to uint16 and tiled to
``--frames`` frames. The zarr store uses zarr's default codec; its chunks
(``--zarr-chunk`` frames, default 64) are what the direct call reads per
thread, so neither side decompresses a zarr chunk twice.
"""
import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402

N_FRAMES = 2048
CHUNK = 256
ZARR_CHUNK = 64


def write_store(path, n_frames=N_FRAMES, zarr_chunk=ZARR_CHUNK, seed=workload.SEED):
    """Write the workload (uint16, tiled to ``n_frames``) to a zarr store; return the peaks."""
    import zarr
    w = workload.make_workload(n_frames=min(64, n_frames), seed=seed, dtype=np.uint16)
    frames = w.frames
    z = zarr.open_array(str(path), mode="w", shape=(n_frames,) + workload.FRAME_SHAPE,
                        chunks=(zarr_chunk,) + workload.FRAME_SHAPE, dtype=np.uint16)
    for start in range(0, n_frames, len(frames)):
        stop = min(start + len(frames), n_frames)
        z[start:stop] = frames[:stop - start]
    return w.peaks


def direct_call(store, peaks, mode="fast", upsample=False, workers=None):
    """A no-argument callable: ``gpucorr.refine`` on the zarr array."""
    import zarr
    import gpucorr
    pat = workload.pattern()

    def call():
        return gpucorr.refine(zarr.open_array(str(store), mode="r"), peaks, pat, mode=mode,
                              upsample=upsample, workers=workers)
    return call


def dask_call(store, peaks, client, chunk=CHUNK, mode="fast", upsample=False):
    """A no-argument callable: ``gpucorr.dask.refine`` on ``da.from_zarr``, computed
    on ``client`` (graph construction included in the time)."""
    import dask.array as da
    import gpucorr.dask
    pat = workload.pattern()

    def call():
        darr = da.from_zarr(str(store), chunks=(chunk, -1, -1))
        return gpucorr.dask.refine(darr, peaks, pat, mode=mode,
                                   upsample=upsample).compute(scheduler=client)
    return call


@contextlib.contextmanager
def local_cluster(n_workers=None, malloc="tuned"):
    """A client on a ``LocalCluster`` of worker processes, one thread each.

    ``malloc="tuned"`` starts the workers with ``gpucorr.dask.worker_config()``,
    ``"dask"`` with Dask's default environment, ``"runtime"`` with Dask's default
    environment and then ``gpucorr.dask.tune_workers(client)``. The nanny writes the worker environment into
    ``os.environ`` of this process; it is restored on exit.
    """
    import dask
    import distributed
    import gpucorr.dask
    n_workers = n_workers or os.cpu_count() or 1
    saved = dict(os.environ)
    extra = gpucorr.dask.worker_config() if malloc == "tuned" else {}
    for k in gpucorr.dask.WORKER_ENVIRON:  # left behind by an earlier nanny
        os.environ.pop(k, None)
    try:
        with dask.config.set(extra), \
                distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                         processes=True, dashboard_address=None,
                                         worker_dashboard_address=None) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            if malloc == "runtime":
                assert all(gpucorr.dask.tune_workers(client).values())
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _rusage():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_utime, r.ru_stime


def worker_rusage(client):
    """Page faults, user and system CPU seconds, summed over the workers."""
    return np.sum(list(client.run(_rusage).values()), axis=0)


def _timed(call):
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


def dask_read_call(store, client, chunk=CHUNK):
    """A no-argument callable: only read the frames on the cluster, as ``dask_call`` does
    (``da.from_zarr`` in the same chunks), reduced to one number per frame."""
    import dask.array as da

    def call():
        darr = da.from_zarr(str(store), chunks=(chunk, -1, -1))
        return darr.max(axis=(1, 2)).compute(scheduler=client)
    return call


def measure(store, peaks, client, rounds=5, chunk=CHUNK, mode="fast", upsample=False):
    """Warm both sides up, then time them interleaved; returns a dict of times (s) and
    a dict of CPU seconds and page faults per call.

    CPU time is the steadier figure on a shared machine: ``direct_*`` counts this
    process (the direct call's threads), ``worker_*`` the Dask workers during the
    Dask calls. ``read_*``: the Dask workers only reading the frames
    (:func:`dask_read_call`), timed after the interleaved rounds.
    """
    direct = direct_call(store, peaks, mode, upsample)
    dask_ = dask_call(store, peaks, client, chunk, mode, upsample)
    read = dask_read_call(store, client, chunk)
    expected = direct()
    got = dask_()
    read()
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)  # same answers, so the times compare
    times = {"direct": [], "dask": []}
    usage = {"direct": np.zeros(3), "dask": np.zeros(3), "read": np.zeros(3)}
    for _ in range(rounds):
        before = np.array(_rusage())
        times["direct"].append(_timed(direct)[0])
        usage["direct"] += np.array(_rusage()) - before
        before = worker_rusage(client)
        times["dask"].append(_timed(dask_)[0])
        usage["dask"] += worker_rusage(client) - before
    read_times = []
    for _ in range(rounds):
        before = worker_rusage(client)
        read_times.append(_timed(read)[0])
        usage["read"] += worker_rusage(client) - before
    out = {"dask_read_only_best_s": min(read_times),
           "dask_read_only_median_s": statistics.median(read_times)}
    for key, prefix in (("dask", "worker"), ("direct", "direct"), ("read", "read_worker")):
        faults, user, system = usage[key] / rounds
        out.update({f"{prefix}_page_faults_per_call": float(faults),
                    f"{prefix}_user_s_per_call": float(user),
                    f"{prefix}_sys_s_per_call": float(system)})
    out["cpu_overhead_pct"] = 100 * (
        (out["worker_user_s_per_call"] + out["worker_sys_s_per_call"])
        / (out["direct_user_s_per_call"] + out["direct_sys_s_per_call"]) - 1)
    return times, out


def summary(times, n_frames):
    """Best and median times, throughput and the overhead of Dask in percent."""
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "best_s": best, "median_s": med,
        "frames_per_s_best": {k: n_frames / v for k, v in best.items()},
        "overhead_best_pct": 100 * (best["dask"] / best["direct"] - 1),
        "overhead_median_pct": 100 * (med["dask"] / med["direct"] - 1),
        "rounds_s": times,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=N_FRAMES)
    ap.add_argument("--chunk", type=int, default=CHUNK, help="frames per Dask chunk")
    ap.add_argument("--zarr-chunk", type=int, default=ZARR_CHUNK,
                    help="frames per zarr chunk")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None,
                    help="Dask worker processes (default: one per core)")
    ap.add_argument("--mode", default="fast", choices=["fast", "full"])
    ap.add_argument("--upsample", type=int, default=0)
    ap.add_argument("--malloc", default="both", choices=["dask", "tuned", "runtime", "both", "all"],
                    help="worker environment(s) to measure (see the module docstring)")
    ap.add_argument("--store", default=None, help="zarr path (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    import gpucorr.dask

    tmp = None
    store = args.store
    if store is None:
        tmp = tempfile.mkdtemp(prefix="gpucorr-dask-bench-")
        store = os.path.join(tmp, "frames.zarr")
    variants = {"both": ["dask", "tuned"], "all": ["dask", "tuned", "runtime"]}.get(
        args.malloc, [args.malloc])
    out = {"frames": args.frames, "chunk": args.chunk, "zarr_chunk": args.zarr_chunk,
           "direct_threads": os.cpu_count(), "mode": args.mode, "upsample": args.upsample,
           "device": workload.device(), "commit": workload.commit(),
           "load_average": os.getloadavg(), "variants": {}}
    print(f"{args.frames} frames 256x256 uint16, {workload.PEAKS} peaks, "
          f"RadialGradient(radius={workload.RADIUS}), "
          f"mode={args.mode}, upsample={args.upsample}; zarr chunks of {args.zarr_chunk}, "
          f"Dask chunks of {args.chunk}; {workload.device()}, load average "
          f"{os.getloadavg()[0]:.2f}")
    try:
        peaks = write_store(store, args.frames, args.zarr_chunk)
        for malloc in variants:
            t0 = time.perf_counter()
            with local_cluster(args.workers, malloc) as client:
                startup = time.perf_counter() - t0
                n_workers = len(client.scheduler_info()["workers"])
                times, usage = measure(store, peaks, client, args.rounds, args.chunk,
                                       args.mode, args.upsample)
            res = summary(times, args.frames)
            res.update(usage, dask_workers=n_workers, cluster_startup_s=startup,
                       worker_environ={"dask": "Dask defaults",
                                       "runtime": "Dask defaults + tune_workers(client)"}.get(
                                           malloc, gpucorr.dask.WORKER_ENVIRON))
            out["variants"][malloc] = res
            print(f"\nworker environment: {res['worker_environ']}")
            print(f"cluster: {n_workers} worker processes x 1 thread (start-up {startup:.1f} s,"
                  f" not timed); direct: gpucorr.refine with its default threads")
            for k in ("direct", "dask"):
                print(f"  {k:6s}  best {res['best_s'][k]:.3f} s  "
                      f"median {res['median_s'][k]:.3f} s  "
                      f"({res['frames_per_s_best'][k]:.0f} frames/s best)")
            for label, prefix in (("direct (this process)", "direct"),
                                  ("dask workers", "worker"),
                                  ("dask workers, reading only", "read_worker")):
                print(f"  {label}: page faults per call "
                      f"{usage[prefix + '_page_faults_per_call']:.0f}, CPU per call "
                      f"{usage[prefix + '_user_s_per_call']:.2f} s user + "
                      f"{usage[prefix + '_sys_s_per_call']:.2f} s system")
            print(f"  dask reading only: best {usage['dask_read_only_best_s']:.3f} s, "
                  f"median {usage['dask_read_only_median_s']:.3f} s")
            print(f"  CPU time of the Dask workers over the direct call: "
                  f"{usage['cpu_overhead_pct']:+.1f} %")
            print(f"  Dask overhead: {res['overhead_best_pct']:+.1f} % (best), "
                  f"{res['overhead_median_pct']:+.1f} % (median); target <= 15 %")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
