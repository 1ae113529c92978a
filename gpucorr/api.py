"""The batched API: :func:`refine` a whole stack of frames in one call.

:func:`refine` validates its arguments, picks a frame source and an executor
(:mod:`gpucorr.execution`) and runs the pipeline (:mod:`gpucorr.pipeline`) over
the frames; :class:`RefineResult` holds what comes back.
"""
from dataclasses import dataclass

import numpy as np

from gpucorr.execution import DEFAULT_MEMORY_LIMIT, Job
from gpucorr.execution.run import execute, prepare

__all__ = ["refine", "RefineResult", "DEFAULT_MEMORY_LIMIT"]


@dataclass
class RefineResult:
    """Peak parameters of a stack of frames.

    Attributes
    ----------
    centers : int32 array (N, P, 2)
        Integer (y, x) position of each correlation maximum, in frame pixels.
    refineds : float32 array (N, P, 2)
        Refined (y, x) positions: 5x5 centre of mass, or DFT-upsampled.
    heights : float32 array (N, P)
        Correlation maximum (log-scaled frame).
    elevations : float32 array (N, P)
        Slope of the tightest cone under the maximum, a quality score.

    A 2-D input frame gives arrays without the leading N axis. The result
    unpacks like libertem-blobfinder's tuple:
    ``centers, refineds, heights, elevations = refine(...)``.
    """

    centers: np.ndarray
    refineds: np.ndarray
    heights: np.ndarray
    elevations: np.ndarray

    def __iter__(self):
        return iter((self.centers, self.refineds, self.heights, self.elevations))

    def __repr__(self):
        """A one-line summary: the shape, dtype and array library of each array.

        >>> import numpy as np
        >>> res = RefineResult(np.zeros((2, 3, 2), np.int32), np.zeros((2, 3, 2), np.float32),
        ...                    np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
        >>> res  # doctest: +NORMALIZE_WHITESPACE
        RefineResult(frames=(2,), peaks=3, centers=int32(2, 3, 2), refineds=float32(2, 3, 2),
                     heights=float32(2, 3), elevations=float32(2, 3))
        """
        def show(arr):
            shape = tuple(getattr(arr, "shape", ()))
            module = type(arr).__module__.split(".")[0]
            where = "" if module == "numpy" else f"{module}:"
            return f"{where}{getattr(arr, 'dtype', type(arr).__name__)}{shape}"
        shape = tuple(getattr(self.heights, "shape", ()))
        return (f"{type(self).__name__}(frames={shape[:-1]}, peaks={shape[-1] if shape else 0}, "
                + ", ".join(f"{name}={show(getattr(self, name))}"
                            for name in ("centers", "refineds", "heights", "elevations"))
                + ")")


def refine(frames, peaks, pattern, *, mode="fast", upsample=False, device=None,
           memory_limit=None, workers=None, progress=None, scaling=None, power=1.0):
    """Find and refine the peaks of every frame of a stack by template correlation.

    Parameters
    ----------
    frames : array (..., H, W)
        Frames of any real dtype of at most 64 bits (uint8, uint16, int32,
        float32, float64, ...; not ``numpy.longdouble``), with any number of
        leading (scan) axes, e.g. (N, H, W), (scan_y, scan_x, H, W) or a
        single frame (H, W), and any strides: a NumPy array or view, a
        ``numpy.memmap``, an h5py dataset or a zarr array (all read in
        chunks, never copied whole; a single frame is read whole), a scipy.sparse /
        pydata sparse array, a CuPy array, or any DLPack array (PyTorch, JAX,
        ...) on the CPU or a GPU, taken zero-copy. A list or tuple of
        equally shaped frames (NumPy or CuPy) is stacked first.
    peaks : integer array (P, 2)
        Approximate (y, x) peak positions, the same for every frame (e.g. from
        :func:`gpucorr.get_peaks`). Peaks may lie at or beyond the frame edge;
        pixels outside the frame count as 0.
    pattern : gpucorr.patterns.MatchPattern
        Template to correlate with, e.g. ``RadialGradient(radius=4)``. Its
        crop (``2 * pattern.get_crop_size()`` square) must fit in the frame.
    mode : {"fast", "full"}
        ``"fast"`` crops around each peak, then correlates the crops;
        ``"full"`` correlates the whole frame, then crops the map.
    upsample : bool or int
        ``False`` (default): refine by the 5x5 centre of mass. ``True`` or an
        int from 2 to 1000: refine by DFT upsampling on a ``1 / upsample`` px
        grid, then below the grid to the maximum of the interpolated map
        (``True`` means 20).
    device : {"cpu", "cuda", "cuda:N", "auto"}, optional
        Where to compute. Default: the device of the innermost
        :func:`gpucorr.use_device` block, else where the frames are (CuPy on
        their GPU, everything else on the CPU). ``"auto"``: a usable GPU,
        else the CPU. Host frames computed on a GPU are streamed there in
        chunks (through pinned staging buffers, copies overlapped with
        compute); results always come back in the array library of
        ``frames`` (NumPy for host frames).
    memory_limit : int, optional
        Scratch bytes to use at most (an int >= 1): default 256 MiB on the
        CPU, half the free memory of the GPU; frames are processed in chunks
        sized to fit.
    workers : int, optional
        Threads (an int >= 1) working on chunks in parallel on the CPU, or
        filling the staging buffers of a GPU (default: one per CPU core).
    progress : callable, optional
        Called as ``progress(done, total)`` (frames) after each chunk, from the
        calling thread.
    scaling : {"log", "none"}, optional
        How frames are scaled before correlating: ``"log"``, ``log(x - min + 1)``
        of each crop (fast mode) or frame (full mode), as libertem-blobfinder
        does; ``"none"``, the frames as they are. Default: the pattern's
        ``default_scaling`` where it has one, else ``"log"``: ``"none"`` for
        :class:`~gpucorr.patterns.RadialGradient` and
        :class:`~gpucorr.patterns.DiskEdge` (measured more accurate), ``"log"``
        for the others.
    power : float
        Power ``p`` in ``[0, 1]`` of the correlation: the cross-power spectrum
        ``m`` of frame and template becomes ``m |m|^(p - 1)`` (hybrid
        correlation, py4DSTEM's ``corrPower``; 0 is phase correlation). 1
        (default): plain cross-correlation. Other values than 1 run fast mode
        on the GPU as separate kernels rather than the one fused launch.

    Returns
    -------
    RefineResult
        ``centers`` (..., P, 2) int32, ``refineds`` (..., P, 2) float32,
        ``heights`` (..., P) float32, ``elevations`` (..., P) float32, with the
        leading axes of ``frames`` (none for a single 2-D frame).

    Notes
    -----
    Backends: the CPU runs numba kernels, the GPU CUDA kernels through CuPy
    on the caller's current CuPy stream. Float64 frames are computed in
    float64, all others in float32. On a GPU, frames holding NaN or infinite
    values give NaN rows (the CPU raises ``ValueError``): raising would need a
    device-to-host synchronisation. So do crops (fast mode) or frames (full
    mode) whose values span more than the compute dtype holds (float32 frames
    from -2e38 to 2e38, say), where the log scaling ``log(x - min + 1)``
    would overflow; the CPU raises ``ValueError`` naming the frame and its values.

    Memory: on the CPU each worker thread keeps its scratch buffers (at most
    ``memory_limit / workers``) for the next chunk and the next call, so a
    steady stream of calls allocates nothing large;
    ``gpucorr.pipeline.release_workspaces()`` frees them. Streaming host
    frames to a GPU keeps two pinned staging buffers in CuPy's pinned memory
    pool; frames that are themselves page-locked (``cupyx.empty_pinned``) and
    C-contiguous are copied to the device straight from there.

    Examples
    --------
    >>> import numpy as np
    >>> import gpucorr
    >>> from gpucorr.patterns import RadialGradient
    >>> frames, indices, peaks = gpucorr.cbed_frame(radius=4)
    >>> res = gpucorr.refine(frames, np.rint(peaks).astype(int), RadialGradient(radius=4),
    ...                      upsample=True)
    >>> res.refineds.shape
    (1, 49, 2)
    >>> bool(np.abs(res.refineds[0] - peaks).max() < 0.1)
    True
    """
    if mode not in ("fast", "full"):
        raise ValueError(f"mode must be 'fast' or 'full'; got {mode!r}")
    call = prepare(frames, peaks, pattern, upsample=upsample, scaling=scaling, power=power,
                   device=device, memory_limit=memory_limit, workers=workers,
                   progress=progress)
    result = execute(call, lambda xp: Job(xp, call.source, call.extra, pattern, mode,
                                          call.factor, call.crop_size, call.memory_limit,
                                          call.scaling), progress)
    return RefineResult(*call.restore(result))
