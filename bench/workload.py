"""The CPU benchmark workload, shared by ``test_bench_cpu.py`` and ``compare.py``.

256x256 float32 frames with 49 disks of radius 8 on a sub-pixel lattice,
Poisson noise, a fixed seed; a RadialGradient(radius=8) pattern (search 16,
so 32x32 crops). gpucorr and libertem-blobfinder 0.6.1 get the same frames
and peaks.

Examples
--------
>>> w = make_workload(n_frames=2)
>>> w.frames.shape, w.frames.dtype, w.peaks.shape
((2, 256, 256), dtype('float32'), (49, 2))
>>> sorted(CASES)
['fast', 'fast-upsample20', 'full']
"""
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gpucorr
from gpucorr.patterns import RadialGradient

#: benchmark group -> (mode, upsample)
CASES = {
    "fast": ("fast", False),
    "fast-upsample20": ("fast", 20),
    "full": ("full", False),
}
FRAME_SHAPE = (256, 256)
RADIUS = 8
FRAMES_PER_CALL = 64
SEED = 20240601
REFERENCE = "libertem-blobfinder 0.6.1"


@dataclass
class Workload:
    frames: np.ndarray      # (N, 256, 256) float32
    peaks: np.ndarray       # (49, 2) int32, rounded true centres
    true_centers: np.ndarray  # (49, 2) float64


def make_workload(n_frames=FRAMES_PER_CALL, seed=SEED):
    """Noisy frames of one sub-pixel lattice and its rounded peak positions."""
    rng = np.random.default_rng(seed)
    zero = np.array(FRAME_SHAPE) / 2 + rng.uniform(-0.5, 0.5, size=2)
    a = np.array([30.0, 1.5]) + rng.uniform(-0.5, 0.5, size=2)
    b = np.array([-1.5, 30.0]) + rng.uniform(-0.5, 0.5, size=2)
    frame, _, centers = gpucorr.cbed_frame(*FRAME_SHAPE, zero=zero, a=a, b=b,
                                           indices=np.mgrid[-3:4, -3:4], radius=RADIUS)
    assert len(centers) == 49, len(centers)
    expected = frame[0].astype(np.float64) * (2e6 / frame.sum(dtype=np.float64))
    frames = rng.poisson(expected, size=(n_frames,) + FRAME_SHAPE).astype(np.float32)
    return Workload(frames, np.rint(centers).astype(np.int32), centers)


def gpucorr_call(w, mode, upsample, workers=None):
    """A no-argument callable running :func:`gpucorr.refine` on the workload."""
    pattern = RadialGradient(radius=RADIUS)

    def call():
        return gpucorr.refine(w.frames, w.peaks, pattern, mode=mode, upsample=upsample,
                              workers=workers)
    return call


def reference_call(w, mode, upsample):
    """A no-argument callable running libertem-blobfinder's process_frames_fast/full."""
    from libertem_blobfinder.common import correlation
    from libertem_blobfinder.common.patterns import RadialGradient as RefRadialGradient
    pattern = RefRadialGradient(radius=RADIUS)
    func = correlation.process_frames_fast if mode == "fast" else correlation.process_frames_full

    def call():
        return func(pattern=pattern, frames=w.frames, peaks=w.peaks, upsample=upsample)
    return call


def cpu_model():
    """CPU model name, as gpucorr reports it."""
    from gpucorr._backend import _cpu_model
    return _cpu_model()


def device():
    """e.g. ``'AMD EPYC, 2 cores'``."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


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
