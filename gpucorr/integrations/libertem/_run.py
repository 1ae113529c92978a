"""The convenience functions of libertem-blobfinder's UDF module: run a correlation
UDF, or find the peaks on the sum frame first."""
import numpy as np

from gpucorr.integrations.libertem._udf import FastCorrelationUDF
from gpucorr.peaks import get_peaks

__all__ = ["run_fastcorrelation", "run_blobfinder"]


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
    from libertem.udf.sum import SumUDF
    total = ctx.run_udf(dataset=dataset, udf=SumUDF(), roi=roi)["intensity"].data
    sum_result = log_scale(np.asarray(total), out=None)
    peaks = get_peaks(sum_result=sum_result, match_pattern=match_pattern, num_peaks=num_peaks)
    res = run_fastcorrelation(ctx, dataset, peaks, match_pattern, upsample=upsample, roi=roi,
                              progress=progress)
    return (sum_result, res["centers"], res["refineds"], res["peak_values"],
            res["peak_elevations"], peaks)
