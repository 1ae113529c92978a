"""GPU throughput: gpucorr on a GPU against gpucorr-CPU and libertem-blobfinder (NumPy and CuPy).

Issue targets, all measured side by side in one run:

- GPU-resident float32 input, the benchmark workload of ``gpucorr bench``
  (:mod:`gpucorr.cli.workload`: 256x256 frames, 49 peaks, RadialGradient(radius=8),
  32-px crops; 64 distinct noisy frames, repeated): fast, fast with upsample=20,
  and full mode, in frames/s;
  against libertem-blobfinder 0.6.1's CuPy path (its ``process_frame_*`` per
  frame on CuPy frames, as its UDFs call them on the CuPy backend) and its
  NumPy path, and gpucorr on the CPU.
- Fast mode as one fused kernel (kernels/fast.cu, the default for crops up to
  32 px) against the crop.cu -> cuFFT -> evaluate.cu pipeline, in the
  same run; and by crop edge (16, 32, 64 px), to place ``FAST_MAX_SIZE``.
- Where the time goes in fast mode: crop+log, FFT correlation, evaluate and
  upsampling of one chunk, and the fused kernel, each timed with CUDA events.
- Host-resident uint16 frames streamed to the GPU (``device="cuda"``), fast
  mode: end-to-end bytes/s against the measured pinned host-to-device copy
  bandwidth for the same bytes (and the pageable one); the staging fill by
  non-temporal stores (the default) and by ``numpy.copyto``, interleaved; and
  the same frames already in page-locked memory (no staging).

By default only the figures of issue 15 (``bench/gpu_check.sh``'s ``bench``
stage, about a minute on an H100): the three GPU-resident cases (fused and
multi-launch fast mode), gpucorr on the CPU, the reference's CuPy and NumPy
paths, and host uint16 streaming (non-temporal staging stores) against the
pinned and pageable copy rates. ``--extras`` adds the slower studies: the
fast-mode stages, crop edges and thread counts, the staging fill rates,
``numpy.copyto`` staging, page-locked input and the staging settings.

Times GPU work with CUDA events (best of ``--rounds`` after a warm-up) and
host-driven work with ``time.perf_counter``. Writes JSON with ``--out``. On
the CPU stand-in (``python tests/fake_cupy.py bench/gpu_bench.py ...``) the
JSON says ``"emulated": true`` and its times are CPU times of the emulation.
"""
import argparse
import ctypes
import json
import os
import platform
import time

import numpy as np

import cupy
import cupyx

import gpucorr
from gpucorr.execution import streaming as staging
from gpucorr import backends as _backend
from gpucorr.backends import _cuda
from gpucorr import pipeline as _pipeline
from gpucorr.cli import workload
from gpucorr.patterns import RadialGradient

SHAPE = workload.FRAME_SHAPE


def gpu_seconds(fn, rounds):
    """Best time of ``fn`` over ``rounds`` runs on the current stream, after a warm-up."""
    fn()
    cupy.cuda.get_current_stream().synchronize()
    best = np.inf
    for _ in range(rounds):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def host_seconds(fn, rounds):
    fn()
    cupy.cuda.runtime.deviceSynchronize()
    best = np.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        cupy.cuda.runtime.deviceSynchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def device_copy_bandwidth(nbytes=2**30):
    a = cupy.empty(nbytes // 4, dtype=np.float32)
    b = cupy.empty_like(a)
    return 2 * nbytes / gpu_seconds(lambda: b.__setitem__(Ellipsis, a), 5)  # read + write


def host_fill_bandwidth(frames, workers, nbytes=128 * 2**20, copy=np.copyto):
    """Bytes/s of ``workers`` threads copying ``frames`` into a pinned buffer of ``nbytes``
    with ``copy`` (what streaming does on the host before each host-to-device copy)."""
    from concurrent.futures import ThreadPoolExecutor
    per = max(1, nbytes // frames[0].nbytes)
    host = cupyx.empty_pinned((per,) + frames.shape[1:], dtype=frames.dtype)
    step = -(-per // workers)

    def one(start):
        n = min(per, len(frames) - start)
        parts = [(a, min(a + step, n)) for a in range(0, n, step)]
        for f in [pool.submit(copy, host[a:b], frames[start + a:start + b])
                  for a, b in parts]:
            f.result()

    with ThreadPoolExecutor(workers) as pool:
        one(0)
        t0 = time.perf_counter()
        for start in range(0, len(frames), per):
            one(start)
        return frames.nbytes / (time.perf_counter() - t0)


def h2d_bandwidth(nbytes, pinned):
    """Host-to-device copy bandwidth from a pinned (or pageable) buffer of ``nbytes``."""
    host = cupyx.empty_pinned(nbytes, dtype=np.uint8) if pinned else np.empty(nbytes, np.uint8)
    host[...] = 1
    dev = cupy.empty(nbytes, dtype=np.uint8)
    stream = cupy.cuda.get_current_stream()
    return nbytes / gpu_seconds(
        lambda: dev.data.copy_from_host_async(ctypes.c_void_p(host.ctypes.data), nbytes,
                                              stream=stream), 5)


def reference_cupy(mode, up, frames_gpu, peaks, n):
    """libertem-blobfinder's CuPy path: its per-frame functions on CuPy frames (seconds/frame)."""
    from libertem_blobfinder.base import correlation as lbc
    from libertem_blobfinder.common import patterns as lbf_patterns
    pattern = lbf_patterns.RadialGradient(radius=workload.RADIUS)
    cs = pattern.get_crop_size()
    peaks32 = peaks.astype(np.int32)
    out = (np.zeros((len(peaks), 2), np.uint16), np.zeros((len(peaks), 2), np.float32),
           np.zeros(len(peaks), np.float32), np.zeros(len(peaks), np.float32))
    if mode == "fast":
        template = cupy.asarray(pattern.get_template(sig_shape=(2 * cs, 2 * cs)))
        bufs = lbc.allocate_crop_bufs(cs, len(peaks), dtype=np.float32, xp=cupy)

        def one(frame):
            lbc.process_frame_fast(template, cs, frame, peaks32, *out, crop_bufs=bufs,
                                   upsample=up, crop_function=lbc.crop_disks_from_frame_slicing)
    else:
        template = cupy.asarray(pattern.get_template(sig_shape=SHAPE))
        frame_buf = cupy.zeros(SHAPE, dtype=np.float32)
        buf_count = lbc.get_buf_count(cs, len(peaks), np.float32)

        def one(frame):
            lbc.process_frame_full(template, cs, frame, peaks32, *out, frame_buf=frame_buf,
                                   buf_count=buf_count,
                                   upsample=up, crop_function=lbc.crop_disks_from_frame_slicing)

    def run():
        for frame in frames_gpu[:n]:
            one(frame)
    return host_seconds(run, 1) / n


def reference_numpy(mode, up, frames, peaks):
    from libertem_blobfinder.common import correlation as lbf
    from libertem_blobfinder.common import patterns as lbf_patterns
    fn = lbf.process_frames_fast if mode == "fast" else lbf.process_frames_full
    pattern = lbf_patterns.RadialGradient(radius=workload.RADIUS)
    fn(pattern, frames[:2], peaks, upsample=up)
    t0 = time.perf_counter()
    fn(pattern, frames, peaks, upsample=up)
    return (time.perf_counter() - t0) / len(frames)


def stage_times(frames_gpu, peaks, pattern, rounds):
    """Seconds per frame of each fast-mode stage on one chunk (CUDA events)."""
    backend = _backend.get_backend(cupy)
    cs = pattern.get_crop_size()
    template = cupy.asarray(pattern.get_template(sig_shape=(2 * cs, 2 * cs)))
    filt = _pipeline.correlation_filter(cupy, template, (2 * cs, 2 * cs), np.float32)
    n, p = len(frames_gpu), len(peaks)
    out = (cupy.empty((n * p, 2), np.int32), cupy.empty((n * p, 2), np.float32),
           cupy.empty(n * p, np.float32), cupy.empty(n * p, np.float32))
    crops = _pipeline.crop_frames(backend, frames_gpu, peaks, cs, np.float32)
    corrs, _, offsets = _pipeline.correlate(backend, crops, filt)
    origin = cupy.tile(peaks - cs, (n, 1))
    bad = cupy.empty(n * p, np.bool_)
    maps = cupy.empty_like(corrs)
    stages = {
        "fused": lambda: _cuda.fast_correlate(frames_gpu, peaks, cs, filt, None, *out, bad),
        "fused_with_maps": lambda: _cuda.fast_correlate(frames_gpu, peaks, cs, filt, maps, *out,
                                                        bad),
        "crop_log": lambda: _pipeline.crop_frames(backend, frames_gpu, peaks, cs, np.float32),
        "fft_correlate": lambda: _pipeline.correlate(backend, crops, filt),
        "evaluate": lambda: backend.evaluate(corrs, peaks, cs, offsets, *out),
        "upsample20": lambda: _pipeline.upsample_positions(
            backend, corrs, (out[0] - origin)[:, None, :], 20),
    }
    return {name: gpu_seconds(fn, rounds) / n for name, fn in stages.items()}


def unfused(fn):
    """``fn()`` with fast mode as the multi-launch pipeline (no fast.cu)."""
    saved = _cuda.FUSED_FAST
    _cuda.FUSED_FAST = False
    try:
        return fn()
    finally:
        _cuda.FUSED_FAST = saved


def by_crop_edge(frames, peaks, rounds):
    """Fast mode, fused and not, for 16-, 24-, 32- and 64-px crops: frames/s of each, and
    of the fused kernel with 64 and 256 threads a block."""
    rows = []
    saved = _cuda.FAST_MAX_SIZE, _cuda.FAST_THREADS
    n = len(frames)
    try:
        _cuda.FAST_MAX_SIZE = max(_cuda.FAST_SIZES)
        for edge in (16, 24, 32, 64):
            pattern = RadialGradient(radius=edge / 4, search=edge // 2)

            def run():
                gpucorr.refine(frames, peaks, pattern)
            fused = gpu_seconds(run, rounds) / n
            plain = unfused(lambda: gpu_seconds(run, rounds)) / n
            row = dict(crop_edge=edge, fused_frames_per_s=1 / fused,
                       unfused_frames_per_s=1 / plain, fused_speedup=plain / fused)
            # threads per block of fast.cu (FAST_THREADS, default 128)
            for threads in (64, 256):
                _cuda.FAST_THREADS = threads
                row[f"fused_{threads}_threads_frames_per_s"] = n / gpu_seconds(run, rounds)
            _cuda.FAST_THREADS = saved[1]
            rows.append(row)
    finally:
        _cuda.FAST_MAX_SIZE, _cuda.FAST_THREADS = saved
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16384, help="GPU-resident frames")
    parser.add_argument("--stream-frames", type=int, default=32768,
                        help="host uint16 frames streamed to the GPU")
    parser.add_argument("--cpu-frames", type=int, default=128)
    parser.add_argument("--ref-frames", type=int, default=64,
                        help="frames of the reference's CuPy path")
    parser.add_argument("--ref-numpy-frames", type=int, default=32,
                        help="frames of the reference's NumPy path (0: not run)")
    parser.add_argument("--copy-mib", type=int, default=1024,
                        help="MiB copied to measure the device copy bandwidth")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--extras", action="store_true",
                        help="also the slower studies (stages, crop edges, staging variants)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    emulated = cupy.__file__.endswith("fake_cupy.py")
    pattern = workload.pattern()
    resident = workload.make_workload(args.frames)
    host, peaks_host = resident.frames, resident.peaks.astype(np.int64)
    frames = cupy.asarray(host)
    peaks = cupy.asarray(peaks_host)
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    bandwidth = device_copy_bandwidth(args.copy_mib * 2**20)
    print(f"{device}: device copy {bandwidth / 1e9:.0f} GB/s")
    rows = []
    for name, (mode, up) in workload.CASES.items():
        t_gpu = gpu_seconds(lambda: gpucorr.refine(frames, peaks, pattern, mode=mode,
                                                   upsample=up), args.rounds) / args.frames
        cpu_frames = host[: args.cpu_frames]
        gpucorr.refine(cpu_frames[:4], peaks_host, pattern, mode=mode, upsample=up)
        t0 = time.perf_counter()
        gpucorr.refine(cpu_frames, peaks_host, pattern, mode=mode, upsample=up)
        t_cpu = (time.perf_counter() - t0) / args.cpu_frames
        row = dict(case=name, gpu_frames_per_s=1 / t_gpu, cpu_frames_per_s=1 / t_cpu,
                   gpu_frame_read_fraction_of_copy_bw=SHAPE[0] * SHAPE[1] * 4 / t_gpu / bandwidth,
                   fused=mode == "fast" and _cuda.fast_correlate_applies(
                       pattern.get_crop_size(), np.float32))
        if row["fused"]:
            t_plain = unfused(lambda: gpu_seconds(
                lambda: gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=up),
                args.rounds)) / args.frames
            row.update(gpu_unfused_frames_per_s=1 / t_plain, fused_speedup=t_plain / t_gpu)
        for key, fn in (("reference_cupy", lambda: reference_cupy(mode, up, frames, peaks_host,
                                                                  args.ref_frames)),
                        ("reference_numpy", lambda: reference_numpy(
                            mode, up, cpu_frames[:args.ref_numpy_frames], peaks_host))):
            if key == "reference_numpy" and args.ref_numpy_frames == 0:
                continue
            try:
                t_ref = fn()
                row[f"{key}_frames_per_s"] = 1 / t_ref
                row[f"gpu_vs_{key}"] = t_ref / t_gpu
            except Exception as exc:  # report, do not hide, a reference path that fails
                row[f"{key}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        print(json.dumps(row))

    stages = edges = None
    if args.extras:
        chunk = frames[:2048]
        stages = stage_times(chunk, peaks, pattern, args.rounds)
        print("fast-mode stages, us/frame:", {k: round(v * 1e6, 3) for k, v in stages.items()})
        edges = by_crop_edge(frames[:4096], peaks, args.rounds)
        for row in edges:
            print(json.dumps(row))

    # host-resident uint16 frames streamed to the GPU
    frames = chunk = None  # free the resident frames before streaming
    cupy.get_default_memory_pool().free_all_blocks()
    stream_host = workload.make_workload(args.stream_frames, dtype=np.uint16).frames
    nbytes = stream_host.nbytes
    pinned_bw = h2d_bandwidth(min(nbytes, 2**31), pinned=True)
    pageable_bw = h2d_bandwidth(min(nbytes, 2**31), pinned=False)

    def refine_streamed(frames=stream_host, **kwargs):
        return gpucorr.refine(frames, peaks_host, pattern, device="cuda", **kwargs)

    t_stream = host_seconds(refine_streamed, 3)  # non-temporal staging stores (the default)
    streaming = dict(frames=args.stream_frames, dtype="uint16", bytes=nbytes,
                     seconds=t_stream, frames_per_s=args.stream_frames / t_stream,
                     bytes_per_s=nbytes / t_stream, pinned_h2d_bytes_per_s=pinned_bw,
                     pageable_h2d_bytes_per_s=pageable_bw,
                     fraction_of_pinned_h2d=nbytes / t_stream / pinned_bw,
                     host_cpus=os.cpu_count(), staging_bytes=staging.STAGING_BYTES,
                     staging_piece_bytes=staging.STAGING_PIECE_BYTES)
    print(json.dumps(streaming))
    if args.extras:
        streaming.update(streaming_extras(stream_host, peaks_host, pattern, pinned_bw,
                                          refine_streamed))
    stream_host = None

    result = dict(device=device, emulated=emulated, cupy=cupy.__version__,
                  workload=resident.description,
                  cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                  driver=cupy.cuda.runtime.driverGetVersion(), python=platform.python_version(),
                  numpy=np.__version__, launch_sizes=dict(BLOCK=_cuda.BLOCK,
                                                          FAST_THREADS=_cuda.FAST_THREADS),
                  copy_bandwidth_gb_s=bandwidth / 1e9, frames=args.frames, rounds=args.rounds,
                  extras=args.extras, rows=rows, fast_stage_seconds_per_frame=stages,
                  fast_by_crop_edge=edges, streaming=streaming,
                  gpucorr=gpucorr.__version__, date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  commit=os.environ.get("GPUCORR_COMMIT")
                  or os.popen("git rev-parse --short HEAD 2>/dev/null").read().strip())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


def streaming_extras(stream_host, peaks_host, pattern, pinned_bw, refine_streamed):
    """The slower streaming studies (``--extras``): staging fill rates, page-locked input,
    staging settings."""
    nbytes = stream_host.nbytes
    fill_bw = {w: host_fill_bandwidth(stream_host, w) for w in (4, 8, 16)}
    t_fill = host_seconds(refine_streamed, 3)
    # the caller's frames already page-locked (cupyx.empty_pinned): no staging at all
    pinned_frames = cupyx.empty_pinned(stream_host.shape, dtype=stream_host.dtype)
    pinned_frames[...] = stream_host
    t_pinned = host_seconds(lambda: refine_streamed(pinned_frames), 3)
    pinned_frames = None
    extras = dict(host_to_pinned_fill_bytes_per_s=fill_bw,
                  staged_bytes_per_s=nbytes / t_fill,
                  staged_fraction_of_pinned_h2d=nbytes / t_fill / pinned_bw,
                  pinned_input_bytes_per_s=nbytes / t_pinned,
                  pinned_input_fraction_of_pinned_h2d=nbytes / t_pinned / pinned_bw)
    print(json.dumps(extras))
    # the staging settings side by side (one copy per chunk = the piece as big as the chunk)
    saved = staging.STAGING_BYTES, staging.STAGING_PIECE_BYTES
    variants = []
    try:
        for workers, staging_mib, piece_mib in ((4, 128, 128), (8, 128, 128), (16, 128, 128),
                                                (8, 128, 32), (8, 256, 64), (16, 256, 64),
                                                (8, 64, 64)):
            staging.STAGING_BYTES, staging.STAGING_PIECE_BYTES = staging_mib * 2**20, piece_mib * 2**20
            t = host_seconds(lambda: refine_streamed(workers=workers), 3)
            variants.append(dict(workers=workers, staging_mib=staging_mib, piece_mib=piece_mib,
                                 bytes_per_s=nbytes / t,
                                 fraction_of_pinned_h2d=nbytes / t / pinned_bw))
            print(json.dumps(variants[-1]))
    finally:
        staging.STAGING_BYTES, staging.STAGING_PIECE_BYTES = saved
    extras["variants"] = variants
    return extras


if __name__ == "__main__":
    main()
