"""The LiberTEM UDF backed by :func:`gpucorr.refine`: :class:`CorrelationUDF` and its
fixed-mode aliases, one batched refine call per partition."""
import numpy as np
from libertem.common.buffers import BufferWrapper
from libertem.udf.base import UDF

from gpucorr import _validate
from gpucorr.api import refine
from gpucorr.backends import devices
from gpucorr.backends.host import to_host

__all__ = ["CorrelationUDF", "FastCorrelationUDF", "FullFrameCorrelationUDF"]

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
    arr = np.asarray(to_host(zero_shift, "zero_shift"))
    # (n, 2): a partition's view of per-frame AUX data, as the UDF sees it while it runs
    if arr.shape != (2,) and not (arr.ndim == 2 and arr.shape[1] == 2):
        raise ValueError(
            "zero_shift must be None, a (y, x) pair or AUX data "
            f"(UDF.aux_data(..., kind='nav', extra_shape=(2,))); got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)):
        raise ValueError(f"zero_shift must hold finite real numbers; got {zero_shift!r}")
    return arr


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
        if devices.cuda_available():
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
        return np.round(np.asarray(to_host(zero_shift, "zero_shift"))).astype(np.int64)

    def _refine_into(self, frames, peaks, index):
        result = refine(
            frames, self.xp.asarray(peaks), self.params.match_pattern,
            mode=self.params.mode, upsample=self.params.upsample, scaling="log",
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
