"""GPU kernel set (CuPy + RawKernels from ``kernels/*.cu``) for the correlation pipeline.

The sibling of :mod:`gpucorr.backends._numba`: the same functions with the same
signatures, on CuPy arrays. CuPy itself is imported inside the
functions, so this module (its C-type table and kernel names) imports on a
CPU-only install, and gpucorr imports it only for CuPy input. Kernels are compiled by NVRTC from the
sources shipped in the package (``gpucorr/kernels``), once per device and
type combination.

Fast mode has a fused kernel as well (:func:`fast_correlate`, kernels/fast.cu):
crop, log, FFT correlation and evaluation of a crop in one launch, in shared
memory, used by :func:`gpucorr.pipeline.run_fast` where
:func:`fast_correlate_applies`.

Per-frame disk detection (:func:`find_maxima`, :func:`evaluate_at`, kernels/maxima.cu)
has its launchers in :mod:`gpucorr.backends._cuda_disks`, imported here.

Verified on an NVIDIA H100 (``pytest --gpu``, compute-sanitizer, bench/gpu_bench.py;
docs/benchmarks.md); where no GPU is at hand, tests/cuda_emulator.py runs the
kernels on the CPU.
"""
import functools
import importlib.resources
import re

import numpy as np

__all__ = ["crop_log", "log_scale_frames", "evaluate", "upsample", "fast_correlate",
           "fast_correlate_applies", "load_kernel", "kernel_source", "crop_expressions",
           "evaluate_expressions", "upsample_expressions", "fast_expressions",
           "kernel_expressions", "upsample_scratch", "C_TYPES", "find_maxima", "evaluate_at",
           "maxima_expressions"]

#: NumPy dtype -> C type of the kernel templates
C_TYPES = {
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int8): "signed char",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.int16): "short",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.int32): "int",
    np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.int64): "long long",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}

#: threads per block of every kernel
BLOCK = 256
#: blocks at most of the block-stride kernels (upsample.cu): enough to fill an H100
MAX_GRID = 1024
#: device scratch upsample.cu may take, all its blocks together (bytes)
UPSAMPLE_SCRATCH_BYTES = 256 * 2**20
#: candidates upsample.cu can rank (GPUCORR_MAX_CANDIDATES)
UPSAMPLE_MAX_CANDIDATES = 16

#: crop edges (2 * crop_size) that kernels/fast.cu is instantiated for: every even
#: edge up to 32, and 64
FAST_SIZES = tuple(range(4, 33, 2)) + (64,)
#: frame dtypes fast.cu reads (float64 frames compute in float64: never fused)
FAST_FRAME_DTYPES = tuple(d for d in C_TYPES if d != np.float64)
#: fast mode runs as the one fused launch of kernels/fast.cu where it applies (float32
#: compute, crop edge in FAST_SIZES and at most FAST_MAX_SIZE); False: always the
#: crop.cu -> cuFFT -> evaluate.cu pipeline
FUSED_FAST = True
#: largest crop edge fused by default. At 64 one thread's two rows of 64 complex values
#: take all 255 registers, and still the fused kernel ran 1.7x faster than the pipeline
#: on an H100 (docs/benchmarks.md), so every edge in FAST_SIZES is fused.
FAST_MAX_SIZE = 64
#: threads per block of fast.cu (blockDim.x / n crops per block)
FAST_THREADS = 128
#: shared memory per block fast.cu may use (the default limit, no opt-in needed)
FAST_SHARED_BYTES = 48 * 1024


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([\w.]+)"[ \t]*$', re.M)


def kernel_source(name):
    """Text of ``kernels/<name>`` shipped inside the package, as one self-contained source.

    A line ``#include "x.cuh"`` (a header beside the sources; nvcc resolves it
    itself) is replaced by the header's text, each header once, so that NVRTC
    (given only the text) and the CPU emulator see a source with no includes.
    """
    kernels = importlib.resources.files("gpucorr") / "kernels"
    seen = set()

    def paste(m):
        header = m.group(1)
        if header in seen:
            return ""
        seen.add(header)
        return _LOCAL_INCLUDE.sub(paste, (kernels / header).read_text())

    return _LOCAL_INCLUDE.sub(paste, (kernels / name).read_text())


@functools.lru_cache(maxsize=None)
def _module(device_id, name, expressions):
    import cupy
    return cupy.RawModule(code=kernel_source(name), options=("-std=c++17",),
                          name_expressions=list(expressions))


def load_kernel(name, expression, all_expressions):
    """The kernel ``expression`` (e.g. ``crop_log<float, float>``) of source ``name``.

    Each source is compiled once per device, for all of ``all_expressions``.
    """
    import cupy
    module = _module(cupy.cuda.Device().id, name, tuple(all_expressions))
    return module.get_function(expression)


def crop_expressions():
    """Name expressions of every ``crop_log`` instantiation the launcher uses."""
    return [f"crop_log<{c}, {r}>" for c in C_TYPES.values() for r in ("float", "double")]


def evaluate_expressions():
    """Name expressions of every ``evaluate`` instantiation the launcher uses."""
    return ["evaluate<float>", "evaluate<double>"]


def upsample_expressions():
    """Name expressions of every ``upsample`` instantiation the launcher uses."""
    return ["upsample<float>", "upsample<double>"]


def fast_expressions():
    """Name expressions of every ``fast_correlate`` instantiation the launcher may use."""
    return [f"fast_correlate<{C_TYPES[d]}, {n}>" for d in FAST_FRAME_DTYPES for n in FAST_SIZES]


def kernel_expressions():
    """Every kernel source in ``kernels/`` and the name expressions its launchers use."""
    return {"crop.cu": crop_expressions(), "evaluate.cu": evaluate_expressions(),
            "upsample.cu": upsample_expressions(), "fast.cu": fast_expressions(),
            "maxima.cu": maxima_expressions()}


def _shared_bytes(rtype, extra_per_thread):
    return BLOCK * (np.dtype(rtype).itemsize + extra_per_thread)


def _check_shared(nbytes):
    import cupy
    limit = cupy.cuda.Device().attributes["MaxSharedMemoryPerBlock"]
    if nbytes > limit:
        raise RuntimeError(f"kernel needs {nbytes} bytes of shared memory; the device allows "
                           f"{limit}")


def _check_out(arr, dtypes, name):
    """Kernels write outputs in place: they must be C-contiguous, of one of ``dtypes``."""
    if arr.dtype not in [np.dtype(d) for d in dtypes] or not arr.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous CuPy array of dtype "
                        f"{' or '.join(str(np.dtype(d)) for d in dtypes)} on the GPU backend; "
                        f"got {arr.dtype}, C-contiguous: {arr.flags.c_contiguous}")


def crop_log(frames, peaks, crop_size, do_log, fill, out, bad):
    """GPU :func:`gpucorr.backends._numba.crop_log`: one block per (frame, peak) crop."""
    import cupy
    frames = cupy.ascontiguousarray(frames)
    n_frames, fy, fx = frames.shape
    n_peaks = peaks.shape[0]
    h, w = out.shape[2], out.shape[3]
    if n_frames * n_peaks == 0:
        return
    _check_out(out, (np.float32, np.float64), "out")
    _check_out(bad, (np.bool_,), "bad")
    rtype = out.dtype
    expression = f"crop_log<{C_TYPES[frames.dtype]}, {C_TYPES[rtype]}>"
    kernel = load_kernel("crop.cu", expression, crop_expressions())
    shared = _shared_bytes(rtype, 4)
    _check_shared(shared)
    kernel((n_frames * n_peaks,), (BLOCK,),
           (frames, np.int32(fy), np.int32(fx), cupy.ascontiguousarray(peaks, dtype=np.int64),
            np.int32(n_peaks), np.int32(crop_size), np.int32(h), np.int32(w),
            np.int32(bool(do_log)), cupy.ascontiguousarray(fill, dtype=rtype), out, bad),
           shared_mem=shared)


def log_scale_frames(frames, out, bad):
    """GPU :func:`gpucorr.backends._numba.log_scale_frames`: each whole frame is one crop of ``crop_log``."""
    import cupy
    n, fy, fx = frames.shape
    crop_log(frames, cupy.zeros((1, 2), dtype=np.int64), 0, True,
             cupy.zeros(n, dtype=out.dtype), out.reshape(n, 1, fy, fx), bad)


def evaluate(corrs, peaks, crop_size, offsets, out_centers, out_refineds, out_heights,
             out_elevations):
    """GPU :func:`gpucorr.backends._numba.evaluate`: one block per correlation map."""
    import cupy
    corrs = cupy.ascontiguousarray(corrs)
    n_maps, h, w = corrs.shape
    if n_maps == 0:
        return
    for arr, dtype, name in ((out_centers, np.int32, "out_centers"),
                             (out_refineds, np.float32, "out_refineds"),
                             (out_heights, np.float32, "out_heights"),
                             (out_elevations, np.float32, "out_elevations")):
        _check_out(arr, (dtype,), name)
    rtype = corrs.dtype
    kernel = load_kernel("evaluate.cu", f"evaluate<{C_TYPES[rtype]}>", evaluate_expressions())
    shared = _shared_bytes(rtype, 4 + 4)
    _check_shared(shared)
    kernel((n_maps,), (BLOCK,),
           (corrs, np.int32(h), np.int32(w), cupy.ascontiguousarray(peaks, dtype=np.int64),
            np.int32(peaks.shape[0]), np.int32(crop_size),
            cupy.ascontiguousarray(offsets, dtype=np.float64), out_centers, out_refineds,
            out_heights, out_elevations),
           shared_mem=shared)


def upsample_scratch(h, w, u):
    """Doubles of scratch one block of upsample.cu needs for (h, w) maps and a u x u grid
    (its u u bytes of flags rounded up to doubles)."""
    k1 = max(h, w) // 2 + 1
    return u * w + u * u + 6 * k1 + 3 * h + 6 * w + -(-u * u // 8)


def upsample(maps, positions, factor, grid_y, grid_x, table_y, table_x, candidates,
             iterations, tolerance, out):
    """GPU :func:`gpucorr.backends._numba.upsample`: one block per (map, position), kernels/upsample.cu.

    A block's scratch is in shared memory where it fits in
    :data:`FAST_SHARED_BYTES` (crops up to about 64 px at ``upsample=20``), else in
    a device array of at most :data:`UPSAMPLE_SCRATCH_BYTES` (fewer blocks then).
    """
    import cupy
    maps = cupy.ascontiguousarray(maps)
    n_maps, h, w = maps.shape
    n_pos = positions.shape[1]
    u = grid_y.shape[0]
    n_jobs = n_maps * n_pos
    if n_jobs == 0:
        return
    if not 1 <= candidates <= UPSAMPLE_MAX_CANDIDATES:
        raise ValueError(f"upsample.cu ranks 1 to {UPSAMPLE_MAX_CANDIDATES} candidates; got "
                         f"{candidates}")
    _check_out(out, (np.float32,), "out")
    for arr, shape, name in ((grid_y, (u, h), "grid_y"), (grid_x, (u, w), "grid_x"),
                             (table_y, (2 * (h // 2 + 1), h), "table_y"),
                             (table_x, (2 * (w // 2 + 1), w), "table_x")):
        _check_out(arr, (np.float64,), name)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}; got {arr.shape}")
    per_block = upsample_scratch(h, w, u)
    in_shared = 8 * per_block <= FAST_SHARED_BYTES
    if in_shared:
        grid = min(n_jobs, MAX_GRID)
        scratch = cupy.empty(1, dtype=np.float64)
        shared = 8 * per_block
        _check_shared(shared)
    else:
        grid = max(1, min(n_jobs, MAX_GRID, UPSAMPLE_SCRATCH_BYTES // (8 * per_block)))
        scratch = cupy.empty(grid * per_block, dtype=np.float64)
        shared = 0
    kernel = load_kernel("upsample.cu", f"upsample<{C_TYPES[maps.dtype]}>",
                         upsample_expressions())
    kernel((grid,), (BLOCK,),
           (maps, np.int32(n_maps), np.int32(h), np.int32(w),
            cupy.ascontiguousarray(positions, dtype=np.int64), np.int32(n_pos),
            np.int32(factor), np.int32(u), grid_y, grid_x, table_y, table_x,
            np.int32(candidates), np.int32(iterations), np.float64(tolerance), scratch,
            np.int64(per_block), np.int32(in_shared), out),
           shared_mem=shared)


def fast_correlate_applies(crop_size, rdtype):
    """Whether :func:`fast_correlate` runs fast mode for ``crop_size`` in compute dtype
    ``rdtype`` (else the pipeline of crop_log, cuFFT and evaluate does)."""
    n = 2 * int(crop_size)
    return (FUSED_FAST and np.dtype(rdtype) == np.float32 and n in FAST_SIZES
            and n <= FAST_MAX_SIZE)


def _fast_crop_floats(n):
    """Floats of shared memory one crop takes in fast.cu (``fast_crop_floats``)."""
    return (n * (n + 2) + n + 4) | 1


def fast_layout(n):
    """``(crops per block, threads per block, shared bytes)`` of fast.cu for edge ``n``
    (``n / 2`` threads a crop)."""
    per_block = max(1, min(FAST_THREADS // (n // 2),
                           (FAST_SHARED_BYTES // 4 - 2 * n) // _fast_crop_floats(n)))
    return per_block, per_block * (n // 2), 4 * (2 * n + per_block * _fast_crop_floats(n))


@functools.lru_cache(maxsize=None)
def _twiddles(n):
    """``exp(-2 pi i k / n)``, ``k < n``, computed in float64, as interleaved float32."""
    k = np.arange(n)
    w = np.exp(-2j * np.pi * k / n)
    table = np.ascontiguousarray(np.stack([w.real, w.imag], axis=-1).ravel(), dtype=np.float32)
    table.flags.writeable = False
    return table


def fast_correlate(frames, peaks, crop_size, filt, maps, out_centers, out_refineds,
                   out_heights, out_elevations, bad, log=True):
    """Fast mode for every (frame, peak) pair in one launch of kernels/fast.cu.

    What :func:`gpucorr.pipeline.run_fast` computes with crop_log, cuFFT and
    evaluate (crops of edge ``n = 2 crop_size``, log-scaled where ``log``, zero-mean
    correlation maps, evaluation), done per crop in shared memory: the frames
    are read once and only results are written. ``filt`` is the (n, n // 2 + 1)
    correlation filter of :func:`gpucorr.pipeline.correlation_filter`;
    ``maps`` (N * P, n, n) float32 receives the zero-mean maps, or is None;
    ``bad`` (N * P,) which crops held NaN or infinite values (their results are
    then meaningless). Requires :func:`fast_correlate_applies`.
    """
    import cupy
    from gpucorr.backends.host import on_device
    frames = cupy.ascontiguousarray(frames)
    n_frames, fy, fx = frames.shape
    n_peaks = peaks.shape[0]
    n = 2 * int(crop_size)
    if n not in FAST_SIZES:
        raise ValueError(f"fast.cu handles crop edges {', '.join(map(str, FAST_SIZES))}; got "
                         f"2 * crop_size = {n}")
    if frames.dtype not in FAST_FRAME_DTYPES:
        raise TypeError(f"fast.cu reads frames of dtype "
                        f"{', '.join(d.name for d in FAST_FRAME_DTYPES)}; got {frames.dtype}")
    n_crops = n_frames * n_peaks
    if n_crops == 0:
        return
    for arr, dtype, name in ((out_centers, np.int32, "out_centers"),
                             (out_refineds, np.float32, "out_refineds"),
                             (out_heights, np.float32, "out_heights"),
                             (out_elevations, np.float32, "out_elevations"),
                             (bad, np.bool_, "bad")):
        _check_out(arr, (dtype,), name)
    if maps is not None:
        _check_out(maps, (np.float32,), "maps")
        if maps.size != n_crops * n * n:
            raise ValueError(f"maps must hold {n_crops} maps of {n}x{n}; got shape {maps.shape}")
    # the inverse transform's 1 / n^2 folded in (a power of two for power-of-two n)
    scaled = cupy.ascontiguousarray((filt * np.float32(1.0 / (n * n))).astype(np.complex64))
    if scaled.shape != (n, n // 2 + 1):
        raise ValueError(f"filt must be the ({n}, {n // 2 + 1}) correlation filter; got shape "
                         f"{filt.shape}")
    twiddles = on_device(cupy, _twiddles(n))
    per_block, threads, shared = fast_layout(n)
    _check_shared(shared)
    expression = f"fast_correlate<{C_TYPES[frames.dtype]}, {n}>"
    kernel = load_kernel("fast.cu", expression, (expression,))
    grid = -(-n_crops // per_block)
    write_maps = maps is not None
    if maps is None:
        maps = cupy.empty(1, dtype=np.float32)
    kernel((grid,), (threads,),
           (frames, np.int32(fy), np.int32(fx), cupy.ascontiguousarray(peaks, dtype=np.int64),
            np.int32(n_peaks), np.int64(n_crops), scaled.view(np.float32).ravel(), twiddles,
            np.int32(bool(log)), np.int32(write_maps), maps, out_centers, out_refineds, out_heights,
            out_elevations, bad),
           shared_mem=shared)


# per-frame disk detection, part of this kernel set (below: it uses the functions above)
from gpucorr.backends._cuda_disks import (  # noqa: E402,F401
    evaluate_at, find_maxima, maxima_expressions,
)
