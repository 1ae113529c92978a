"""Drop-in replacement for ``libertem_blobfinder.base.correlation`` (0.6.1).

Same function names, signatures and output buffers, computed by gpucorr's
pipeline (:mod:`gpucorr.pipeline`) and numba kernels. Where
libertem-blobfinder is wrong, gpucorr is right instead:

* ``upsample=True`` means an upsampling factor of 20 (it was ignored);
* DFT upsampling interpolates the real correlation map correctly from the
  half spectrum (libertem-blobfinder drops the negative x frequencies, which
  biases x);
* the template is *correlated* with the frame, not convolved, so an
  asymmetric template is matched as given, not mirrored;
* correlation maps are centred for odd sizes too.

For the built-in (symmetric) patterns without upsampling the results equal
libertem-blobfinder's.

The spectra passed between the low-level functions follow
libertem-blobfinder's convention: ``corrspecs`` from :func:`do_correlations`
belong to the *uncentred* maps, the returned maps rolled back by
``ceil(shape / 2)`` (without their mean), so :func:`refine_center_upsampling`
takes ``corrmap_center = ceil(shape / 2)`` for them and
:func:`evaluate_upsampling` takes them as they are.

Backends
--------
Every function here that takes arrays accepts NumPy or CuPy arrays (except
the numba helpers :func:`center_of_mass`, :func:`refine_center` and
:func:`peak_elevation`, which are NumPy-only as in libertem-blobfinder).
CuPy input runs on the GPU it lives on, with gpucorr's CUDA kernels, and
output buffers and results are CuPy arrays there; NumPy input runs on the
CPU. All array arguments -- templates, peaks and output buffers included --
must come from the same library: mixing NumPy and CuPy raises
``TypeError`` instead of copying behind the caller's back (move the peaks
with ``cupy.asarray(peaks)``, the template with
``cupy.asarray(pattern.get_template(shape))``). Templates from
:mod:`gpucorr.patterns` are NumPy arrays. CuPy is imported only when CuPy
arrays are passed.

On a GPU nothing is copied to the host except where a docstring says so:
float CuPy peaks are checked for whole numbers on the host, and a few
functions read a handful of values (noted there). Non-finite frames or crops
raise ``ValueError`` on the CPU; on a GPU, where that check would need a host
sync, they give NaN refined positions, heights and elevations instead (as
:func:`gpucorr.refine` does).

Modules
-------
This package re-exports the functions of its parts:

- :mod:`~gpucorr.correlation._frames`: whole frames (:func:`process_frame_fast`,
  :func:`process_frame_full`, :func:`process_frames_fast`, :func:`process_frames_full`);
- :mod:`~gpucorr.correlation._steps`: one pipeline step each (:func:`do_correlations`,
  :func:`evaluate_correlations`, :func:`refine_center_upsampling`,
  :func:`evaluate_upsampling`);
- :mod:`~gpucorr.correlation._crops`: cropping and log scaling
  (:func:`crop_disks_from_frame`, :func:`crop_disks_from_frame_slicing`,
  :func:`log_scale`, :func:`log_scale_cropbufs_inplace`);
- :mod:`~gpucorr.correlation._buffers`: argument checks, scratch and output buffers
  (:func:`get_buf_count`, :func:`allocate_crop_bufs`).

:func:`refine_center`, :func:`center_of_mass` and :func:`peak_elevation` are the
numba kernels of :mod:`gpucorr.backends._numba`.
"""
import numpy as np

from gpucorr.backends._numba import center_of_mass, peak_elevation, refine_center
from gpucorr.correlation._buffers import allocate_crop_bufs, get_buf_count
from gpucorr.correlation._crops import (
    crop_disks_from_frame, crop_disks_from_frame_slicing, log_scale,
    log_scale_cropbufs_inplace,
)
from gpucorr.correlation._frames import (
    process_frame_fast, process_frame_full, process_frames_fast, process_frames_full,
)
from gpucorr.correlation._steps import (
    do_correlations, evaluate_correlations, evaluate_upsampling, refine_center_upsampling,
    unravel_index,
)

__all__ = [
    "process_frame_fast", "process_frame_full", "process_frames_fast", "process_frames_full",
    "allocate_crop_bufs", "get_buf_count", "do_correlations", "evaluate_correlations",
    "evaluate_upsampling", "refine_center_upsampling", "refine_center", "center_of_mass",
    "peak_elevation", "unravel_index", "log_scale", "log_scale_cropbufs_inplace",
    "crop_disks_from_frame", "crop_disks_from_frame_slicing", "zeros", "fft",
]

#: ``numpy.fft``, as libertem-blobfinder exposes it
fft = np.fft
#: ``numpy.zeros``, as libertem-blobfinder exposes it
zeros = np.zeros
