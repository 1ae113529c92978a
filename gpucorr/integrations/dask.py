"""Scale-out on Dask: :func:`refine` mapped over the chunks of a Dask array.

``gpucorr.dask.refine(darr, peaks, pattern, ...)`` takes a Dask array of frames
``(..., H, W)`` whose chunks split only the scan axes and returns a
:class:`DaskRefineResult` of lazy Dask arrays. Each chunk of frames is refined
by one call of :func:`gpucorr.refine` inside one Dask task, so the same graph
runs on the threaded or synchronous scheduler and on a ``dask.distributed``
cluster (``LocalCluster``, a job-queue or Kubernetes cluster), and on
``dask-cuda`` with CuPy chunks (one worker per GPU), or with NumPy chunks and
``device="cuda"``. gpucorr has no scheduler of its own. See docs/dask.md.

Importing this module needs ``dask[array]``; ``gpucorr`` itself does not.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np
import dask
import dask.array as da

from gpucorr import _validate, api
from gpucorr.backends import devices as _device, is_cupy
from gpucorr.execution.run import check_scaling

__all__ = ["refine", "DaskRefineResult", "worker_config", "tune_workers", "WORKER_ENVIRON"]

#: packed columns of one peak: cy, cx, ry, rx, height, elevation
_PACKED = 6

#: glibc malloc settings for worker processes that let :func:`gpucorr.refine` reuse
#: its scratch memory from chunk to chunk (see :func:`worker_config`)
WORKER_ENVIRON = {"MALLOC_TRIM_THRESHOLD_": 2**30, "MALLOC_MMAP_THRESHOLD_": 2**25}


def worker_config():
    """Dask configuration that starts worker processes with :data:`WORKER_ENVIRON`.

    ``dask.distributed``'s nanny starts each worker process with
    ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``),
    which switches off glibc's dynamic mmap threshold: every array above
    128 KiB is then a fresh ``mmap`` whose pages fault in on first touch.
    :func:`gpucorr.refine` reuses its own scratch between chunks, but reading
    the chunks (e.g. zarr decompressing into fresh buffers) still pays for it
    in system time: measured about +20 % over the direct call, against +5 %
    with this configuration (``bench/dask_overhead.py``, docs/benchmarks.md).
    :data:`WORKER_ENVIRON` raises both thresholds so freed memory is reused. Only newly started worker processes
    see it: set it before the cluster starts and keep it set while the cluster
    lives (the nanny restarts dead workers with the configuration of the
    moment), e.g. ``dask.config.set(gpucorr.dask.worker_config())``, or export
    the variables in the shell that runs ``dask worker``.

    Returns
    -------
    dict
        Keys ``"distributed.nanny.pre-spawn-environ.<VARIABLE>"``, for
        :func:`dask.config.set`.

    Examples
    --------
    >>> import dask
    >>> import gpucorr.dask
    >>> with dask.config.set(gpucorr.dask.worker_config()):
    ...     # start the LocalCluster / LocalCUDACluster here; its workers get:
    ...     env = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    >>> env["MALLOC_TRIM_THRESHOLD_"], env["MALLOC_MMAP_THRESHOLD_"]
    (1073741824, 33554432)
    """
    return {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRON.items()}


#: glibc mallopt parameters (malloc.h) of the WORKER_ENVIRON variables
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}


def tune_workers(client):
    """Give the running workers of ``client`` the malloc settings of :data:`WORKER_ENVIRON`.

    For a cluster that is already up (:func:`worker_config` acts only on
    workers started after it): each worker process calls glibc's
    ``mallopt`` with the two thresholds now. Workers that start later (added,
    or restarted by the nanny) do not get them; use :func:`worker_config` for
    those. The setting only changes how glibc reuses freed memory; results
    do not change. On a C library without ``mallopt`` (not glibc) nothing is
    done and that worker reports ``False``.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    dict
        ``{worker address: True if both thresholds were set}``.
    """
    return client.run(_apply_malloc_settings)


def _apply_malloc_settings():
    """mallopt(WORKER_ENVIRON) in this process; True if glibc accepted both."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(_MALLOPT[name], int(value)) == 1
               for name, value in WORKER_ENVIRON.items())


@dataclass
class DaskRefineResult(api.RefineResult):
    """A :class:`gpucorr.RefineResult` whose four fields are lazy Dask arrays.

    The four arrays are slices of one graph that refines each chunk once:
    computing them together (:meth:`compute`, or ``dask.compute(*result)``)
    refines every chunk once. Computing them one by one refines every chunk
    again each time; :meth:`persist` first to avoid that.

    Attributes
    ----------
    centers : dask.array.Array, int32 (..., P, 2)
    refineds : dask.array.Array, float32 (..., P, 2)
    heights : dask.array.Array, float32 (..., P)
    elevations : dask.array.Array, float32 (..., P)
    """

    def _packed_if_unchanged(self):
        """The packed (..., P, 6) array behind the four fields, unless they were replaced."""
        packed, names = getattr(self, "_packed", (None, None))
        if packed is None or tuple(getattr(a, "name", None) for a in self) != names:
            return None
        return packed

    def compute(self, **kwargs):
        """Compute the four arrays together; returns an in-memory :class:`gpucorr.RefineResult`.

        Keyword arguments go to :func:`dask.compute` (e.g. ``scheduler="sync"``
        or a ``distributed.Client``). Gathers one packed array per chunk and
        unpacks it here, which costs fewer tasks and transfers than
        ``dask.compute(*result)``; both give the same arrays.
        """
        packed = self._packed_if_unchanged()
        if packed is None:
            return api.RefineResult(*dask.compute(*self, **kwargs))
        (packed,) = dask.compute(packed, **kwargs)
        return _unpack(packed)

    def persist(self, **kwargs):
        """Persist the results (e.g. in cluster memory); returns a new
        :class:`DaskRefineResult`. Keyword arguments go to :func:`dask.persist`."""
        packed = self._packed_if_unchanged()
        if packed is None:
            return DaskRefineResult(*dask.persist(*self, **kwargs))
        (packed,) = dask.persist(packed, **kwargs)
        return _from_packed(packed)


def _unpack(packed):
    """The four results from a packed array (..., P, 6), NumPy/CuPy or Dask (lazily).

    float64 holds int32 and float32 values exactly, so unpacking is lossless.
    """
    return (DaskRefineResult if isinstance(packed, da.Array) else api.RefineResult)(
        centers=packed[..., 0:2].astype(np.int32),
        refineds=packed[..., 2:4].astype(np.float32),
        heights=packed[..., 4].astype(np.float32),
        elevations=packed[..., 5].astype(np.float32),
    )


def _from_packed(packed):
    result = _unpack(packed)
    result._packed = (packed, tuple(a.name for a in result))
    return result


def _module_of(arr):
    """The array module of a chunk: numpy, or the chunk's own (e.g. cupy)."""
    if isinstance(arr, np.ndarray):
        return np
    if is_cupy(arr):
        import cupy
        return cupy
    return np


def _refine_block(block, *, peaks, pattern, mode, upsample, device, memory_limit, workers,
                  scaling=None, power=1.0):
    """One chunk (..., H, W) -> packed float64 (..., P, 6): cy, cx, ry, rx, height, elevation."""
    xp = _module_of(block)
    res = api.refine(block, xp.asarray(peaks), pattern, mode=mode, upsample=upsample,
                     device=device, memory_limit=memory_limit, workers=workers,
                     scaling=scaling, power=power)
    out_xp = _module_of(res.centers)
    packed = out_xp.empty(res.heights.shape + (_PACKED,), dtype=np.float64)
    packed[..., 0:2] = res.centers
    packed[..., 2:4] = res.refineds
    packed[..., 4] = res.heights
    packed[..., 5] = res.elevations
    return packed


def _result_meta(darr):
    """An empty float64 array of the chunks' array type (numpy, or cupy for cupy chunks)."""
    meta = getattr(darr, "_meta", None)
    xp = _module_of(meta) if meta is not None else np
    return xp.empty((0,) * darr.ndim, dtype=np.float64)


def _check_darr(darr):
    if not isinstance(darr, da.Array):
        raise TypeError(
            f"darr must be a dask.array.Array of frames (..., H, W); got "
            f"{type(darr).__module__}.{type(darr).__qualname__}; wrap it with "
            "dask.array.from_array(frames, chunks=(n, ..., -1, -1)), or call gpucorr.refine"
        )
    if darr.ndim < 3:
        raise ValueError(
            f"darr must have shape (..., H, W) with at least one scan axis, e.g. (N, H, W) "
            f"or (scan_y, scan_x, H, W); got shape {darr.shape}; refine a single frame "
            "with gpucorr.refine"
        )
    _validate.frame_dtype(darr.dtype, "darr")
    frame_chunks = darr.chunks[-2:]
    if any(len(c) != 1 for c in frame_chunks) or any(
            math.isnan(s) for c in frame_chunks for s in c):
        raise ValueError(
            "darr must have exactly one chunk along each frame axis (the last two); got "
            f"chunks {frame_chunks} for the frame axes (all chunks: {darr.chunks}); "
            "chunk only the scan axes, e.g. darr.rechunk({-2: -1, -1: -1})"
        )
    if any(s == 0 for s in darr.shape[-2:]):
        raise ValueError(f"darr must have non-empty frames; got shape {darr.shape}")


def refine(darr, peaks, pattern, *, mode="fast", upsample=False, device=None,
           memory_limit=None, workers=1, scaling=None, power=1.0):
    """Refine the peaks of every frame of a Dask array, chunk by chunk, lazily.

    Parameters
    ----------
    darr : dask.array.Array (..., H, W)
        Frames with at least one scan axis, e.g. (N, H, W) or
        (scan_y, scan_x, H, W), of any real dtype, chunked along the scan axes
        only: exactly one chunk along each of the two frame axes
        (``darr.rechunk({-2: -1, -1: -1})`` makes it so). Chunks may be of any
        size, uneven included; each becomes one task.
    peaks : integer array (P, 2)
        Approximate (y, x) peak positions, the same for every frame.
    pattern : gpucorr.patterns.MatchPattern
        Template to correlate with, e.g. ``RadialGradient(radius=4)``. It is
        pickled into the graph, so it must be picklable (the gpucorr patterns
        are).
    mode, upsample, memory_limit
        As for :func:`gpucorr.refine`, applied to each chunk.
    device : {"cpu", "cuda", "cuda:N", "auto"}, optional
        As for :func:`gpucorr.refine`, for every chunk; default: the device of
        the :func:`gpucorr.use_device` block around this call (taken now, at
        graph construction: worker threads and processes do not see the
        block), else where each chunk is. NumPy chunks with ``"cuda"`` are
        copied to the worker's current GPU and give NumPy results.
    workers : int, optional
        Threads per chunk (default 1). Dask already runs chunks in parallel,
        one per worker thread, so more threads per chunk would oversubscribe
        the cores; raise it only for few, large chunks.
    scaling, power : optional
        As for :func:`gpucorr.refine`.

    Returns
    -------
    DaskRefineResult
        A :class:`gpucorr.RefineResult` of lazy Dask arrays: ``centers``
        (..., P, 2) int32, ``refineds`` (..., P, 2) float32, ``heights``
        (..., P) float32, ``elevations`` (..., P) float32, with the scan axes
        and scan chunks of ``darr`` (e.g. ``centers.chunks == darr.chunks[:-2]
        + ((P,), (2,))``). Nothing is computed until asked for: compute the four
        together with ``result.compute()`` or ``dask.compute(*result)``, which
        refines each chunk once.

    Raises
    ------
    TypeError, ValueError
        At graph construction, for a ``darr`` that is not a Dask array, has no
        scan axis or is chunked along a frame axis, and for bad ``peaks``,
        ``pattern``, ``mode``, ``upsample``, ``memory_limit`` or ``workers``.

    Notes
    -----
    Backends: each chunk is refined by :func:`gpucorr.refine` where it lies
    unless ``device`` says otherwise: NumPy chunks (also from h5py or zarr
    through ``dask.array.from_array`` / ``from_zarr``) on the CPU, CuPy
    chunks on their GPU. The results' ``meta`` follows the chunk type of
    ``darr``: NumPy for NumPy chunks, CuPy for CuPy chunks.

    Internally one ``map_blocks`` task per chunk returns the four results
    packed into one float64 block (..., P, 6); the four outputs are lazy
    slices of it, so a chunk is refined once however many outputs are
    computed together. A failed task (e.g. a lost worker) is retried by Dask
    or raises; partial results are never returned. On ``dask.distributed``,
    start the workers with :func:`worker_config` (with Dask's default worker
    environment the run is about 20 % slower, mostly in reading the chunks).

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import gpucorr
    >>> import gpucorr.dask
    >>> from gpucorr.patterns import RadialGradient
    >>> frame, _, true_peaks = gpucorr.cbed_frame(radius=4)
    >>> darr = da.from_array(np.repeat(frame, 10, axis=0), chunks=(4, -1, -1))
    >>> res = gpucorr.dask.refine(darr, np.rint(true_peaks).astype(int),
    ...                           RadialGradient(radius=4), upsample=True)
    >>> res.centers.chunks
    ((4, 4, 2), (49,), (2,))
    >>> out = res.compute(scheduler="sync")
    >>> out.refineds.shape, out.refineds.dtype
    ((10, 49, 2), dtype('float32'))
    >>> bool(np.abs(out.refineds - true_peaks).max() < 0.1)
    True
    """
    _check_darr(darr)
    if mode not in ("fast", "full"):
        raise ValueError(f"mode must be 'fast' or 'full'; got {mode!r}")
    _validate.check_pattern(pattern)
    peaks = _validate.check_peaks(peaks)
    _validate.check_upsample(upsample)
    crop_size = _validate.check_crop_size(pattern.get_crop_size(), darr.shape[-2:])
    from gpucorr.execution.job import checked_template     # per-peak templates, now
    checked_template(pattern, (2 * crop_size, 2 * crop_size) if mode == "fast"
                     else tuple(darr.shape[-2:]), mode, len(peaks))
    device = _device.get_device() if device is None else device
    _device._parse(device)
    workers = _validate.check_workers(workers, allow_none=False)
    memory_limit = _validate.check_memory_limit(memory_limit)
    check_scaling(scaling, power, pattern)

    n_peaks = len(peaks)
    func = functools.partial(_refine_block, peaks=peaks, pattern=pattern, mode=mode,
                             upsample=upsample, device=device, memory_limit=memory_limit,
                             workers=workers, scaling=scaling, power=power)
    packed = da.map_blocks(
        func, darr,
        chunks=darr.chunks[:-2] + ((n_peaks,), (_PACKED,)),
        dtype=np.float64, meta=_result_meta(darr),
        token="gpucorr-refine",
    )
    return _from_packed(packed)
