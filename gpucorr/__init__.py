"""gpucorr: find and refine diffraction-disk positions by template correlation.

The same calls run on the CPU (NumPy + numba) and on NVIDIA GPUs (CuPy +
CUDA kernels): CuPy input, ``device=`` or :func:`use_device` select the GPU. The functions of
``libertem_blobfinder.base.correlation`` are here under the same names
(see :mod:`gpucorr.correlation`); :func:`refine` processes a whole stack of
frames in one call.
"""
from gpucorr.correlation import (  # noqa: F401
    process_frame_fast, process_frame_full, process_frames_fast, process_frames_full,
    allocate_crop_bufs, get_buf_count, do_correlations, evaluate_correlations,
    evaluate_upsampling, refine_center_upsampling, refine_center, center_of_mass,
    peak_elevation, unravel_index, log_scale, log_scale_cropbufs_inplace,
    crop_disks_from_frame, crop_disks_from_frame_slicing, zeros, fft,
)
from gpucorr.api import refine, RefineResult  # noqa: F401
from gpucorr.backends.devices import devices, Device, use_device, get_device  # noqa: F401
from gpucorr.peaks import get_correlation, get_peaks  # noqa: F401
from gpucorr.synthetic import cbed_frame  # noqa: F401
from gpucorr.disks import find_disks, DiskResult  # noqa: F401
from gpucorr.radius import estimate_radius, fit_edge_radius  # noqa: F401
from gpucorr.reference import refine_by_reference  # noqa: F401
from gpucorr.calibration import Calibration  # noqa: F401
from gpucorr import patterns  # noqa: F401
from gpucorr.patterns import MatchPattern  # noqa: F401

__version__ = "0.1.0"
