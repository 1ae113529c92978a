"""Execution: where frames come from, and which executor runs the pipeline over them.

- :mod:`~gpucorr.execution.sources`: frame sources (NumPy, memmap, h5py, zarr,
  sparse, CuPy, strided 4-D scans), each reading frames ``start:stop``;
- :mod:`~gpucorr.execution.job`: one refine call ready to run (:class:`Job`);
- executors: :mod:`~gpucorr.execution.cpu` (a thread pool),
  :mod:`~gpucorr.execution.gpu` (CuPy frames, GPU-resident) and
  :mod:`~gpucorr.execution.streaming` (host frames through pinned staging
  buffers to a GPU).

:func:`gpucorr.refine` validates its arguments, picks a source and an
executor here, and runs.
"""
from gpucorr.execution.sources import as_source, stack_list, dense_chunk  # noqa: F401
from gpucorr.execution.job import Job, check_log_overflow  # noqa: F401
from gpucorr.execution.cpu import run_on_cpu, DEFAULT_MEMORY_LIMIT  # noqa: F401
from gpucorr.execution.gpu import run_resident  # noqa: F401
from gpucorr.execution.streaming import run_streaming  # noqa: F401
