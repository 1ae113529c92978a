"""LiberTEM user-defined functions (UDFs) backed by :func:`gpucorr.refine`.

:class:`CorrelationUDF` (and its fixed-mode aliases :class:`FastCorrelationUDF`
and :class:`FullFrameCorrelationUDF`) take the constructor arguments of
``libertem_blobfinder.udf.correlation.FastCorrelationUDF`` and declare the
same result buffers (``centers``, ``refineds``, ``peak_values``,
``peak_elevations``), so code that runs libertem-blobfinder's UDF switches by
changing the import. Each UDF processes a whole LiberTEM partition per call
with one batched :func:`gpucorr.refine` call (``process_partition``), so
every call sees whole frames, however the dataset is tiled.
:class:`SparseCorrelationUDF` correlates at a few steps around each peak with
a sparse mask stack, as libertem-blobfinder's UDF of that name does, and
:func:`run_fastcorrelation` / :func:`run_blobfinder` are that module's
convenience functions.

As in libertem-blobfinder, the constructors only store their arguments
(``FastCorrelationUDF(0, None, None).get_backends()`` works, as LiberTEM and
the peer's mixins in ``libertem_blobfinder.udf.refinement`` need); they are
checked when the UDF runs (:meth:`CorrelationUDF.get_result_buffers`, the
first thing ``Context.run_udf`` asks for), before any frame is read. The
hooks those mixins call (:meth:`CorrelationUDF.postprocess`,
:meth:`CorrelationUDF.get_zero_shift`) are here too.

This module needs LiberTEM (``pip install gpucorr[libertem]``); ``import
gpucorr`` does not import it.

Backends
--------
NumPy partitions (and pydata-sparse COO/GCXS partitions, densified chunk by
chunk) run on the CPU. The CuPy backend is declared once gpucorr has a CUDA
backend (``gpucorr._backend.cuda_available()``); until then LiberTEM feeds
this UDF NumPy arrays, also on GPU workers.
"""
import numbers

import numpy as np

try:
    from libertem.common.buffers import BufferWrapper
    from libertem.udf.base import UDF
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "gpucorr.libertem needs LiberTEM, which is not installed "
        f"({type(exc).__name__}: {exc}); install it with: pip install gpucorr[libertem]"
    ) from exc

from gpucorr import _backend, _validate
from gpucorr.api import _dense_chunk, refine
from gpucorr.patterns import MatchPattern  # noqa: F401  (the peer's module has both names)
from gpucorr.peaks import get_peaks  # noqa: F401

__all__ = ["CorrelationUDF", "FastCorrelationUDF", "FullFrameCorrelationUDF",
           "SparseCorrelationUDF", "run_fastcorrelation", "run_blobfinder"]

_MODES = ("fast", "full")


def _check_zero_shift(zero_shift):
    """``None``, a constant ``(y, x)`` shift, or LiberTEM AUX data with (y, x) per frame."""
    if zero_shift is None:
        return None
    if isinstance(zero_shift, BufferWrapper):
        extra = tuple(zero_shift.extra_shape)
        if zero_shift.kind != "nav" or extra != (2,):
            raise ValueError(
                "zero_shift as AUX data must have kind 'nav' and extra_shape (2,) "
                f"(one (y, x) per frame); got kind {zero_shift.kind!r}, extra_shape {extra}"
            )
        return zero_shift
    arr = np.asarray(_host(zero_shift))
    # (n, 2): a partition's view of per-frame AUX data, as the UDF sees it while it runs
    if arr.shape != (2,) and not (arr.ndim == 2 and arr.shape[1] == 2):
        raise ValueError(
            "zero_shift must be None, a (y, x) pair or AUX data "
            f"(UDF.aux_data(..., kind='nav', extra_shape=(2,))); got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)):
        raise ValueError(f"zero_shift must hold finite real numbers; got {zero_shift!r}")
    return arr


def _host(arr):
    """A NumPy copy of a (possibly CuPy) array."""
    if hasattr(arr, "get") and not isinstance(arr, np.ndarray):
        return arr.get()
    return np.asarray(arr)


class CorrelationUDF(UDF):
    """Refine peak positions in every frame of a LiberTEM dataset by template correlation.

    A drop-in replacement for libertem-blobfinder's ``FastCorrelationUDF``
    (and, with ``mode="full"``, ``FullFrameCorrelationUDF``): the same
    constructor arguments and the same result buffers, computed by
    :func:`gpucorr.refine` one whole partition at a time.

    Parameters
    ----------
    peaks : array_like (P, 2)
        Approximate (y, x) peak positions in pixels, the same for every frame;
        rounded to integers as libertem-blobfinder does.
    match_pattern : gpucorr.patterns.MatchPattern
        Template to correlate with, e.g. ``RadialGradient(radius=4)``.
        libertem-blobfinder's pattern objects work as well.
    zero_shift : None, array_like (2,) or AUX data, optional
        Shift (y, x) added to ``peaks`` (rounded), e.g. a descan error: one
        for all frames, or one per frame given as
        ``UDF.aux_data(shifts, kind="nav", extra_shape=(2,), dtype=...)``.
        With per-frame shifts, each partition takes one :func:`gpucorr.refine`
        call per distinct rounded shift.
    upsample : bool or int, optional
        ``False`` (default): 5x5 centre-of-mass refinement. ``True`` (a factor
        of 20) or an int from 2 to 1000: DFT upsampling, see
        :func:`gpucorr.refine` (libertem-blobfinder 0.6.1 ignores ``True``).
    mode : {"fast", "full"}, optional
        ``"fast"`` (default) correlates crops around each peak, as
        ``FastCorrelationUDF``; ``"full"`` correlates whole frames, as
        ``FullFrameCorrelationUDF``.
    memory_limit : int, optional
        Scratch bytes per partition, passed to :func:`gpucorr.refine`.

    Notes
    -----
    Result buffers (kind ``"nav"``, as libertem-blobfinder declares them):

    - ``centers``: int32 ``(P, 2)`` per frame, integer (y, x) correlation
      maxima (may lie outside the frame for peaks near the edge);
    - ``refineds``: float32 ``(P, 2)``, refined (y, x) positions;
    - ``peak_values``: float32 ``(P,)``, correlation maxima (``heights``);
    - ``peak_elevations``: float32 ``(P,)``, peak quality (``elevations``).

    The UDF asks LiberTEM for the dataset's native dtype (uint16 data is not
    converted to float32 first), so the results equal ``gpucorr.refine`` on
    the dataset's array exactly.

    Backends: NumPy and pydata-sparse (COO, GCXS) partitions run on the CPU,
    with ``threads_per_worker`` threads of the LiberTEM worker. CuPy is
    declared once gpucorr has a CUDA backend.

    Examples
    --------
    >>> import numpy as np
    >>> import gpucorr
    >>> from libertem.api import Context
    >>> from gpucorr.libertem import CorrelationUDF
    >>> from gpucorr.patterns import RadialGradient
    >>> frame, _, peaks = gpucorr.cbed_frame(64, 64, radius=3)
    >>> data = np.repeat(frame, 6, axis=0).reshape(2, 3, 64, 64)
    >>> ctx = Context.make_with("inline")
    >>> ds = ctx.load("memory", data=data, num_partitions=2)
    >>> udf = CorrelationUDF(peaks=np.rint(peaks), match_pattern=RadialGradient(radius=3))
    >>> res = ctx.run_udf(dataset=ds, udf=udf)
    >>> res["refineds"].data.shape == (2, 3, len(peaks), 2)
    True
    >>> bool(np.abs(res["refineds"].data - peaks).max() < 0.1)
    True
    """

    def __init__(self, peaks, match_pattern, zero_shift=None, upsample=False, mode="fast",
                 memory_limit=None, **kwargs):
        try:  # as libertem-blobfinder: np.round(peaks).astype(int); checked when run
            peaks = np.round(np.asarray(peaks)).astype(np.int64)
        except (TypeError, ValueError):
            pass
        super().__init__(
            peaks=peaks, match_pattern=match_pattern, zero_shift=zero_shift,
            upsample=upsample, mode=mode, memory_limit=memory_limit, **kwargs,
        )

    def check(self):
        """Raise ``ValueError``/``TypeError`` for arguments :func:`gpucorr.refine` would
        refuse (peaks, pattern, zero shift, upsampling, mode, memory limit).

        Called by :meth:`get_result_buffers`, so by ``Context.run_udf`` before
        any frame is read; call it yourself to check a UDF before running it.
        """
        p = self.params
        _validate.check_peaks(p.peaks)
        _validate.check_pattern(p.match_pattern)
        _validate.check_upsample(p.upsample)
        if p.mode not in _MODES:
            raise ValueError(f"mode must be 'fast' or 'full'; got {p.mode!r}")
        _validate.check_memory_limit(p.memory_limit)
        _check_zero_shift(p.zero_shift)

    def get_result_buffers(self):
        """``centers``, ``refineds``, ``peak_values``, ``peak_elevations`` (kind nav).

        Checks the arguments first (:meth:`check`).
        """
        self.check()
        n_peaks = len(self.params.peaks)
        return {
            "centers": self.buffer(kind="nav", extra_shape=(n_peaks, 2), dtype=np.int32),
            "refineds": self.buffer(kind="nav", extra_shape=(n_peaks, 2), dtype=np.float32),
            "peak_values": self.buffer(kind="nav", extra_shape=(n_peaks,), dtype=np.float32),
            "peak_elevations": self.buffer(kind="nav", extra_shape=(n_peaks,),
                                           dtype=np.float32),
        }

    def output_buffers(self):
        """The buffers written, in the order of :class:`gpucorr.RefineResult`.

        Override to redirect the results (as with libertem-blobfinder).
        """
        r = self.results
        return (r.centers, r.refineds, r.peak_values, r.peak_elevations)

    def get_peaks(self):
        """The (rounded, int64) peak positions."""
        return self.params.peaks

    def get_zero_shift(self, index=None):
        """The zero shift ``(y, x)``: ``(0, 0)`` without one, the constant shift, or
        (AUX data) the partition's shifts, or the shift of its frame ``index``.

        The hook ``libertem_blobfinder.udf.refinement``'s mixins call in
        :meth:`postprocess` to start each frame's lattice match.
        """
        zero_shift = self.params.zero_shift
        if zero_shift is None:
            return np.array((0, 0))
        if index is None:
            return zero_shift
        if np.ndim(zero_shift) == 1:  # one (y, x) for all frames
            return np.asarray(zero_shift)
        return zero_shift[index]

    def postprocess(self):
        """Per-partition hook after processing; the results are complete here.

        Does nothing: subclasses and mixins (``libertem_blobfinder.udf.refinement``)
        extend it and call ``super().postprocess()``.
        """

    def get_pattern(self):
        """The match pattern."""
        return self.params.match_pattern

    def get_preferred_input_dtype(self):
        """The dataset's own dtype: :func:`gpucorr.refine` takes any real dtype."""
        return self.USE_NATIVE_DTYPE

    def get_backends(self):
        """NumPy and pydata-sparse (COO, GCXS); CuPy where a GPU is usable."""
        backends = [self.BACKEND_NUMPY, self.BACKEND_SPARSE_COO, self.BACKEND_SPARSE_GCXS]
        if _backend.cuda_available():
            backends.append(self.BACKEND_CUPY)
        return tuple(backends)

    def process_partition(self, partition):
        """Refine all frames of ``partition`` (N, H, W) with :func:`gpucorr.refine`."""
        n_frames = partition.shape[0]
        if n_frames == 0:
            return
        peaks = self.get_peaks()
        shifts = self._zero_shifts()
        if shifts is not None and shifts.ndim == 2 and len(shifts) != n_frames:
            raise ValueError(
                f"zero_shift holds {len(shifts)} (y, x) rows for a partition of {n_frames} "
                "frames; pass per-frame shifts as AUX data: UDF.aux_data(shifts, kind='nav', "
                "extra_shape=(2,), dtype=...)")
        if shifts is not None and shifts.ndim == 2:
            groups, inverse = np.unique(shifts, axis=0, return_inverse=True)
            if len(groups) > 1:
                inverse = inverse.reshape(-1)
                for k, shift in enumerate(groups):
                    index = self.xp.asarray(np.flatnonzero(inverse == k))
                    self._refine_into(partition[index], peaks + shift, index)
                return
            shifts = groups[0]
        if shifts is not None:
            peaks = peaks + shifts
        self._refine_into(partition, peaks, slice(None))

    def _zero_shifts(self):
        """Rounded zero shift: None, (2,) for all frames, or (N, 2) per frame."""
        zero_shift = self.params.zero_shift
        if zero_shift is None:
            return None
        return np.round(_host(zero_shift)).astype(np.int64)

    def _refine_into(self, frames, peaks, index):
        result = refine(
            frames, self.xp.asarray(peaks), self.params.match_pattern,
            mode=self.params.mode, upsample=self.params.upsample,
            memory_limit=self.params.memory_limit, workers=self.meta.threads_per_worker,
        )
        for buf, values in zip(self.output_buffers(), result):
            buf[index] = self.forbuf(values, buf[index])


class _FixedModeUDF(CorrelationUDF):
    """A :class:`CorrelationUDF` whose ``mode`` is fixed by the class."""

    _MODE = None

    def __init__(self, peaks, match_pattern, zero_shift=None, upsample=False, **kwargs):
        mode = kwargs.pop("mode", self._MODE)
        if mode != self._MODE:
            raise ValueError(
                f"{type(self).__name__} always uses mode={self._MODE!r}; got mode={mode!r} "
                "(use CorrelationUDF(mode=...) to choose)"
            )
        super().__init__(peaks, match_pattern, zero_shift=zero_shift, upsample=upsample,
                         mode=mode, **kwargs)


class FastCorrelationUDF(_FixedModeUDF):
    """:class:`CorrelationUDF` with ``mode="fast"``, like libertem-blobfinder's UDF of that name.

    Examples
    --------
    >>> import numpy as np
    >>> from gpucorr.libertem import FastCorrelationUDF
    >>> from gpucorr.patterns import RadialGradient
    >>> FastCorrelationUDF(peaks=np.array([[32, 32]]), match_pattern=RadialGradient(3)).params.mode
    'fast'
    """

    _MODE = "fast"


class FullFrameCorrelationUDF(_FixedModeUDF):
    """:class:`CorrelationUDF` with ``mode="full"``, like libertem-blobfinder's UDF of that name.

    The whole frame is correlated once and the map cropped around each peak.
    """

    _MODE = "full"


class SparseCorrelationUDF(CorrelationUDF):
    """Correlate at ``(2 steps + 1)^2`` positions around each peak with a sparse mask stack.

    libertem-blobfinder's UDF of that name for gpucorr: the pattern's mask
    (``get_mask((2 cs + 1, 2 cs + 1))``) is placed at every integer offset of
    ``-steps .. steps`` around each peak (:func:`gpucorr.masks.sparse_template_multi_stack`),
    and one sparse matrix product with the log-scaled frames gives all those
    correlation values. The ``(2 steps + 1)^2`` values of each peak are then
    evaluated as a correlation map (argmax, 5x5 centre of mass, height,
    elevation), so ``steps`` bounds the shift that can be found, independently
    of the template size.

    Parameters
    ----------
    peaks : array_like (P, 2)
        Approximate (y, x) peak positions (rounded).
    match_pattern : gpucorr.patterns.MatchPattern
        Template to correlate with.
    steps : int
        Offsets ``-steps .. steps`` along y and x are tried (>= 0).
    zero_shift : None
        Not supported (``ValueError``), as in libertem-blobfinder.

    Notes
    -----
    Result buffers: those of :class:`CorrelationUDF` plus ``corr`` (float32
    ``(P (2 steps + 1)^2,)`` per frame), the correlation values.

    Unlike libertem-blobfinder 0.6.1, which log-scales a whole tile (several
    frames, or parts of frames) with one minimum, each frame is log-scaled with
    its own minimum, ``log(x - min + 1)`` as everywhere in gpucorr, so a frame's
    result does not depend on the dataset's tiling. Whole partitions are
    processed at once; pixels outside the frame count as 0.

    Backends: NumPy and pydata-sparse (COO, GCXS) partitions on the CPU (the
    sparse product of SciPy), CuPy partitions on the GPU (that of cupyx).

    Examples
    --------
    >>> import numpy as np
    >>> import gpucorr
    >>> from libertem.api import Context
    >>> from gpucorr.libertem import SparseCorrelationUDF
    >>> from gpucorr.patterns import RadialGradient
    >>> frame, _, peaks = gpucorr.cbed_frame(64, 64, radius=3)
    >>> ds = Context.make_with("inline").load("memory", data=np.repeat(frame, 4, axis=0))
    >>> udf = SparseCorrelationUDF(peaks=np.rint(peaks), match_pattern=RadialGradient(3),
    ...                            steps=2)
    >>> res = Context.make_with("inline").run_udf(dataset=ds, udf=udf)
    >>> bool(np.abs(res["refineds"].data - peaks).max() < 0.5)
    True
    """

    def __init__(self, peaks, match_pattern, steps, zero_shift=None, **kwargs):
        if zero_shift is not None:
            raise ValueError(f"SparseCorrelationUDF does not support zero_shift; got "
                             f"{zero_shift!r} (use FastCorrelationUDF)")
        super().__init__(peaks, match_pattern, steps=steps, **kwargs)

    def check(self):
        """As :meth:`CorrelationUDF.check`, and ``steps`` an int >= 0, no upsampling."""
        super().check()
        steps = self.params.steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
            raise TypeError(f"steps must be an int >= 0; got {steps!r}")
        if steps < 0:
            raise ValueError(f"steps must be an int >= 0; got {steps}")
        if _validate.check_upsample(self.params.upsample) > 1:
            raise ValueError(f"SparseCorrelationUDF does not upsample; got upsample="
                             f"{self.params.upsample!r} (use FastCorrelationUDF)")

    def get_result_buffers(self):
        """The buffers of :class:`CorrelationUDF` and ``corr``."""
        buffers = super().get_result_buffers()
        k = 2 * self.params.steps + 1
        buffers["corr"] = self.buffer(kind="nav", extra_shape=(len(self.params.peaks) * k * k,),
                                      dtype=np.float32)
        return buffers

    def _mask_matrix(self, sig_shape):
        """The stack as a CSR matrix (P (2 steps + 1)^2, H W) on the partition's device."""
        import scipy.sparse
        from gpucorr import masks
        pattern = self.params.match_pattern
        steps = self.params.steps
        crop_size = int(pattern.get_crop_size())
        template = np.asarray(pattern.get_mask((2 * crop_size + 1, 2 * crop_size + 1)),
                              dtype=np.float32)
        dy, dx = np.mgrid[-steps:steps + 1, -steps:steps + 1]
        peaks = np.asarray(self.params.peaks)
        offset_y = (peaks[:, 0, None, None] + dy - crop_size).ravel()
        offset_x = (peaks[:, 1, None, None] + dx - crop_size).ravel()
        stack = masks.sparse_template_multi_stack(
            np.arange(len(offset_y)), offset_x, offset_y, template, sig_shape[1], sig_shape[0])
        matrix = scipy.sparse.csr_matrix(stack.reshape((len(offset_y), -1)).to_scipy_sparse())
        if self.xp is np:
            return matrix
        import cupyx.scipy.sparse
        return cupyx.scipy.sparse.csr_matrix(matrix)

    def process_partition(self, partition):
        """Correlate and evaluate all frames of ``partition`` (N, H, W), whole frames at once."""
        from gpucorr import _backend as backend_module, _pipeline
        xp = self.xp
        n_frames = partition.shape[0]
        if n_frames == 0:
            return
        sig_shape = tuple(partition.shape[1:])
        matrix = self._mask_matrix(sig_shape)
        steps = self.params.steps
        k = 2 * steps + 1
        peaks = xp.asarray(np.asarray(self.params.peaks, dtype=np.int64))
        n_peaks = len(self.params.peaks)
        kernels = backend_module.get_backend(xp)
        chunk = max(1, min(n_frames, (64 * 2**20) // (4 * max(1, int(np.prod(sig_shape))))))
        for start in range(0, n_frames, chunk):
            stop = min(start + chunk, n_frames)
            # dense, native byte order, no float16: what the kernels read (as refine does)
            frames = xp.ascontiguousarray(_dense_chunk(partition, start, stop))
            n = stop - start
            # the pipeline's per-frame log scaling (the kernels of gpucorr.refine's full mode)
            logged = xp.empty(frames.shape, _pipeline.compute_dtype(frames.dtype))
            bad = xp.zeros(n, dtype=np.bool_)
            kernels.log_scale_frames(frames, logged, bad)
            _pipeline._check_finite(xp, bad, "frames")
            corr = (matrix @ logged.reshape(n, -1).T).T.astype(np.float32)  # (n, P k k)
            corr = xp.ascontiguousarray(corr)
            out = (xp.empty((n * n_peaks, 2), np.int32), xp.empty((n * n_peaks, 2), np.float32),
                   xp.empty(n * n_peaks, np.float32), xp.empty(n * n_peaks, np.float32))
            kernels.evaluate(corr.reshape(n * n_peaks, k, k), peaks, steps,
                             xp.zeros(n * n_peaks, np.float64), *out)
            self.results.corr[start:stop] = self.forbuf(corr, self.results.corr[start:stop])
            for buf, values in zip(self.output_buffers(), out):
                part = buf[start:stop]
                buf[start:stop] = self.forbuf(values.reshape(part.shape), part)


def run_fastcorrelation(ctx, dataset, peaks, match_pattern, zero_shift=None, upsample=False,
                        **kwargs):
    """Run :class:`FastCorrelationUDF` on ``dataset``; the result buffers (a dict).

    libertem-blobfinder's function of that name. ``kwargs`` go to
    ``ctx.run_udf`` (e.g. ``roi``, ``progress``).

    Examples
    --------
    >>> import numpy as np
    >>> import gpucorr
    >>> from libertem.api import Context
    >>> from gpucorr.libertem import run_fastcorrelation
    >>> from gpucorr.patterns import RadialGradient
    >>> frame, _, peaks = gpucorr.cbed_frame(64, 64, radius=3)
    >>> ctx = Context.make_with("inline")
    >>> ds = ctx.load("memory", data=np.repeat(frame, 2, axis=0))
    >>> res = run_fastcorrelation(ctx, ds, np.rint(peaks), RadialGradient(3))
    >>> res["refineds"].data.shape == (2, len(peaks), 2)
    True
    """
    udf = FastCorrelationUDF(peaks=peaks, match_pattern=match_pattern, zero_shift=zero_shift,
                             upsample=upsample)
    return ctx.run_udf(dataset=dataset, udf=udf, **kwargs)


def run_blobfinder(ctx, dataset, match_pattern, num_peaks, roi=None, upsample=False,
                   progress=False):
    """Find ``num_peaks`` peaks on the log-scaled sum frame, then refine them in every frame.

    libertem-blobfinder's function of that name: the sum over ``dataset``
    (or its ``roi``) is log-scaled, :func:`gpucorr.get_peaks` finds the peaks
    on it, and :func:`run_fastcorrelation` refines them frame by frame.

    Returns
    -------
    sum_result : numpy.ndarray
        The log-scaled sum frame.
    centers, refineds, peak_values, peak_elevations : BufferWrapper
        The result buffers.
    peaks : numpy.ndarray (P, 2)
        The peaks found on the sum frame.
    """
    from gpucorr.correlation import log_scale
    from gpucorr.peaks import get_peaks
    from libertem.udf.sum import SumUDF
    total = ctx.run_udf(dataset=dataset, udf=SumUDF(), roi=roi)["intensity"].data
    sum_result = log_scale(np.asarray(total), out=None)
    peaks = get_peaks(sum_result=sum_result, match_pattern=match_pattern, num_peaks=num_peaks)
    res = run_fastcorrelation(ctx, dataset, peaks, match_pattern, upsample=upsample, roi=roi,
                              progress=progress)
    return (sum_result, res["centers"], res["refineds"], res["peak_values"],
            res["peak_elevations"], peaks)
