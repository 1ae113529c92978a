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
backend (``gpucorr.backends.devices.cuda_available()``); until then LiberTEM feeds
this UDF NumPy arrays, also on GPU workers.
"""
try:
    import libertem.udf.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "gpucorr.libertem needs LiberTEM, which is not installed "
        f"({type(exc).__name__}: {exc}); install it with: pip install gpucorr[libertem]"
    ) from exc

from gpucorr.integrations.libertem._udf import (  # noqa: E402
    CorrelationUDF, FastCorrelationUDF, FullFrameCorrelationUDF,
)
from gpucorr.integrations.libertem._sparse import SparseCorrelationUDF  # noqa: E402
from gpucorr.integrations.libertem._run import run_fastcorrelation, run_blobfinder  # noqa: E402
from gpucorr.patterns import MatchPattern  # noqa: F401,E402  (the peer's module has both names)
from gpucorr.peaks import get_peaks  # noqa: F401,E402

__all__ = ["CorrelationUDF", "FastCorrelationUDF", "FullFrameCorrelationUDF",
           "SparseCorrelationUDF", "run_fastcorrelation", "run_blobfinder"]
