"""The correlation pipeline, written once over the kernel sets of :mod:`gpucorr.backends`.

A chunk of frames goes crop (+ log) -> FFT correlation -> evaluate ->
optional DFT upsampling:

- :mod:`~gpucorr.pipeline.workspace`: compute dtypes and the per-thread scratch
  buffers (:class:`Workspace`);
- :mod:`~gpucorr.pipeline.correlate`: the filter spectrum of a template and the
  correlation maps;
- :mod:`~gpucorr.pipeline.upsample`: the DFT-upsampling rule and its tables;
- :mod:`~gpucorr.pipeline.stages`: crop, evaluate and the two modes,
  :func:`run_fast` and :func:`run_full`, on one chunk.

Everything here is array-module generic (``xp``); which kernels run is decided
once, by :func:`gpucorr.backends.get_backend`. Chunking, threads and streams
belong to :mod:`gpucorr.execution`.
"""
from gpucorr.pipeline.workspace import (  # noqa: F401
    native, compute_dtype, real_dtype, complex_dtype, Workspace, thread_workspace,
    release_workspaces,
)
from gpucorr.pipeline.correlate import (  # noqa: F401
    correlation_filter, correlate, Scaling, LOG_SCALING,
)
from gpucorr.pipeline.upsample import (  # noqa: F401
    upsample_positions, upsample_region_size, UPSAMPLE_CANDIDATES, NEWTON_ITERATIONS,
    NEWTON_TOLERANCE,
)
from gpucorr.pipeline.stages import (  # noqa: F401
    crop_frames, finish_fast, run_fast, full_maps, finish_full, run_full, frame_bytes,
    check_finite, mark_bad,
)
