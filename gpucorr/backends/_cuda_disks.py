"""GPU kernels (kernels/maxima.cu) of per-frame disk detection: maxima of correlation maps,
and their refinement, height and elevation.

The sibling of :mod:`gpucorr.backends._numba_disks`: the same functions with the same
signatures, on CuPy arrays. Part of the CUDA kernel set: :mod:`gpucorr.backends._cuda`
imports them into its namespace (and lists ``maxima.cu`` in its
``kernel_expressions``), so ``get_backend(cupy)`` has them. CuPy is imported inside
the functions, and so is :mod:`~gpucorr.backends._cuda` (which imports this module): its
launch constants (``BLOCK``, ``MAX_GRID``, ``FAST_SHARED_BYTES``) are read at each launch.

Checked with nvcc (sm_90) and, on the CPU, by the emulator of the kernel sources
(tests/test_cuda_disks_emulated.py); not yet run on a GPU.
"""
import numpy as np

__all__ = ["find_maxima", "evaluate_at", "maxima_expressions", "maxima_capacity",
           "MAXIMA_MIN_CAPACITY", "MAXIMA_SCRATCH_BYTES"]

#: smallest candidate buffer of find_maxima (entries; a power of two)
MAXIMA_MIN_CAPACITY = 1024
#: device scratch find_maxima may take, all its blocks together, where its buffers do not
#: fit in shared memory (bytes; at least one block's buffer)
MAXIMA_SCRATCH_BYTES = 256 * 2**20
#: bytes of static shared memory find_maxima takes besides the dynamic (one int, padded)
_STATIC_SHARED = 16


def maxima_expressions():
    """Name expressions of every ``find_maxima`` / ``evaluate_at`` instantiation the
    launchers use."""
    return [f"{name}<{c}>" for name in ("find_maxima", "evaluate_at") for c in ("float", "double")]


def maxima_capacity(k, block):
    """Entries of find_maxima's candidate buffer for ``k`` maxima and ``block`` threads: a
    power of two, at least ``2 k + block`` (so that after each cut to the best ``k``, a
    round packs at least ``block`` candidates; see kernels/maxima.cu) and at least
    :data:`MAXIMA_MIN_CAPACITY`."""
    need = 2 * int(k) + int(block)
    return max(MAXIMA_MIN_CAPACITY, 1 << (need - 1).bit_length())


def _check_maps(maps):
    if maps.ndim != 3 or maps.dtype not in (np.float32, np.float64):
        raise TypeError(f"maps must be a float32 or float64 array (N, H, W); got {maps.dtype} "
                        f"of shape {maps.shape}")
    if maps.shape[1] * maps.shape[2] >= 2**31:
        raise ValueError(f"maps of at most 2**31 - 1 pixels; got {maps.shape[1]}x{maps.shape[2]}")


def _check_shape(arr, shape, name):
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {arr.shape}")


def find_maxima(maps, max_disks, min_spacing, min_relative, edge, out_centers, out_values,
                out_counts):
    """GPU :func:`gpucorr.backends._numba_disks.find_maxima`: one block per map,
    kernels/maxima.cu.

    Each block packs its map's candidates (pixels that no neighbour within
    ``min_spacing`` in their 3x3 window beats) into a buffer of
    :func:`maxima_capacity` entries, tests them over the whole disk, and ranks
    them by a block-wide bitonic sort; a buffer that fills is sorted and cut to
    its best ``max_disks`` entries, so the result is exact for any number of
    candidates. The buffer is in shared memory where it fits in
    :data:`~gpucorr.backends._cuda.FAST_SHARED_BYTES` (at ``BLOCK = 256``:
    ``max_disks`` up to 1920 for float32 maps, 896 for float64), else in a device
    array of one buffer per block (at most :data:`~gpucorr.backends._cuda.MAX_GRID`
    blocks then, and :data:`MAXIMA_SCRATCH_BYTES` in all; the blocks stride over the
    maps).
    """
    import cupy
    from gpucorr.backends import _cuda
    maps = cupy.ascontiguousarray(maps)
    _check_maps(maps)
    n_maps, h, w = maps.shape
    k = int(max_disks)
    if k < 1:
        raise ValueError(f"max_disks must be >= 1; got {max_disks}")
    if not float(min_spacing) >= 1.0:
        raise ValueError(f"min_spacing must be >= 1; got {min_spacing}")
    if int(edge) < 0:
        raise ValueError(f"edge must be >= 0; got {edge}")
    for arr, dtypes, shape, name in ((out_centers, (np.int32,), (n_maps, k, 2), "out_centers"),
                                     (out_values, (maps.dtype,), (n_maps, k), "out_values"),
                                     (out_counts, (np.int32,), (n_maps,), "out_counts")):
        _cuda._check_out(arr, dtypes, name)
        _check_shape(arr, shape, name)
    if n_maps == 0:
        return
    block = _cuda.BLOCK
    capacity = maxima_capacity(k, block)
    shared = capacity * (maps.dtype.itemsize + 4) + 4 * block
    in_shared = shared + _STATIC_SHARED <= _cuda.FAST_SHARED_BYTES
    if in_shared:
        grid = n_maps
        scratch_values = cupy.empty(1, dtype=maps.dtype)
        scratch_index = cupy.empty(1, dtype=np.int32)
    else:
        per_block = capacity * (maps.dtype.itemsize + 4)
        grid = max(1, min(n_maps, _cuda.MAX_GRID, MAXIMA_SCRATCH_BYTES // per_block))
        shared = 4 * block
        scratch_values = cupy.empty(grid * capacity, dtype=maps.dtype)
        scratch_index = cupy.empty(grid * capacity, dtype=np.int32)
    _cuda._check_shared(shared)
    kernel = _cuda.load_kernel("maxima.cu", f"find_maxima<{_cuda.C_TYPES[maps.dtype]}>",
                               maxima_expressions())
    kernel((grid,), (block,),
           (maps, np.int32(n_maps), np.int32(h), np.int32(w), np.int32(k),
            np.float64(min_spacing), np.float64(min_relative),
            np.int32(min(int(edge), max(h, w))), np.int32(capacity), scratch_values,
            scratch_index, np.int32(in_shared), out_centers, out_values, out_counts),
           shared_mem=shared)


def evaluate_at(maps, centers, counts, offsets, radius, out_refineds, out_heights,
                out_elevations):
    """GPU :func:`gpucorr.backends._numba_disks.evaluate_at`: one block per map,
    kernels/maxima.cu.

    The refinement and elevation of :func:`gpucorr.backends._cuda.evaluate`
    (window.cuh) at each of the first ``counts[n]`` centres of map ``n``, the
    elevation over the pixels at ``1.5 <= d < radius`` (``radius`` may be
    infinite); NaN beyond the count. Valid centres must lie inside the maps.
    """
    import cupy
    from gpucorr.backends import _cuda
    maps = cupy.ascontiguousarray(maps)
    _check_maps(maps)
    n_maps, h, w = maps.shape
    centers = cupy.ascontiguousarray(centers, dtype=np.int32)
    if centers.ndim != 3 or centers.shape[0] != n_maps or centers.shape[2] != 2:
        raise ValueError(f"centers must have shape ({n_maps}, K, 2); got {centers.shape}")
    k = centers.shape[1]
    counts = cupy.ascontiguousarray(counts, dtype=np.int32)
    offsets = cupy.ascontiguousarray(offsets, dtype=np.float64)
    _check_shape(counts, (n_maps,), "counts")
    _check_shape(offsets, (n_maps,), "offsets")
    for arr, shape, name in ((out_refineds, (n_maps, k, 2), "out_refineds"),
                             (out_heights, (n_maps, k), "out_heights"),
                             (out_elevations, (n_maps, k), "out_elevations")):
        _cuda._check_out(arr, (np.float32,), name)
        _check_shape(arr, shape, name)
    if n_maps * k == 0:
        return
    block = _cuda.BLOCK
    shared = 4 * block
    _cuda._check_shared(shared)
    kernel = _cuda.load_kernel("maxima.cu", f"evaluate_at<{_cuda.C_TYPES[maps.dtype]}>",
                               maxima_expressions())
    kernel((n_maps,), (block,),
           (maps, np.int32(n_maps), np.int32(h), np.int32(w), np.int32(k), centers, counts,
            offsets, np.float64(radius), out_refineds, out_heights, out_elevations),
           shared_mem=shared)
