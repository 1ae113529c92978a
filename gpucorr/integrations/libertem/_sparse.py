"""libertem-blobfinder's :class:`SparseCorrelationUDF`: correlation at a few steps
around each peak with a sparse mask stack."""
import numbers

import numpy as np

from gpucorr import _validate
from gpucorr.execution import dense_chunk
from gpucorr.integrations.libertem._udf import CorrelationUDF

__all__ = ["SparseCorrelationUDF"]


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
    >>> import numbers

import numpy as np
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
        from gpucorr import backends as backend_module, pipeline
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
            frames = xp.ascontiguousarray(dense_chunk(partition, start, stop))
            n = stop - start
            # the pipeline's per-frame log scaling (the kernels of gpucorr.refine's full mode)
            logged = xp.empty(frames.shape, pipeline.compute_dtype(frames.dtype))
            bad = xp.zeros(n, dtype=np.bool_)
            kernels.log_scale_frames(frames, logged, bad)
            pipeline.check_finite(xp, bad, "frames")
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
