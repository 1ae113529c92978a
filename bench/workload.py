"""The benchmark workload, for the scripts and benchmarks of ``bench/``.

The frames, peaks, cases and calls are :mod:`gpucorr.cli.workload`'s (the one
definition that ``gpucorr bench`` times too), re-exported here: 256x256 frames
with 49 disks of radius 8 on a sub-pixel lattice, Poisson noise, a fixed seed;
a RadialGradient(radius=8) pattern (32x32 crops). Beside them, what the
results files record: the device, the commit and the library versions.

Examples
--------
>>> w = make_workload(n_frames=2)
>>> w.frames.shape, w.frames.dtype, w.peaks.shape
((2, 256, 256), dtype('float32'), (49, 2))
>>> sorted(CASES)
['fast', 'fast-upsample20', 'full']
"""
import platform
import subprocess
from pathlib import Path

import numpy as np

import gpucorr
from gpucorr.cli.common import cpu_name
from gpucorr.cli.workload import (  # noqa: F401
    CASES, DISTINCT, FRAME_SHAPE, FRAMES_PER_CALL, PEAKS, RADIUS, SEED, Workload, gpucorr_call,
    make_workload, pattern, reference_call,
)

REFERENCE = "libertem-blobfinder 0.6.1"


def cpu_model():
    """CPU model name, as gpucorr reports it."""
    from gpucorr.backends.devices import _cpu_model
    return _cpu_model()


def device():
    """e.g. ``'AMD EPYC 7B13, 2 cores'``, as ``gpucorr bench`` names the CPU."""
    return cpu_name()


def commit():
    """Short hash of HEAD (with ``+dirty`` for uncommitted changes), or ``'unknown'``."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True, check=True).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions():
    """Versions of the libraries that the timings depend on."""
    import numba
    import scipy
    import libertem_blobfinder
    return {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "scipy": scipy.__version__,
            "gpucorr": gpucorr.__version__,
            "libertem_blobfinder": libertem_blobfinder.__version__}
