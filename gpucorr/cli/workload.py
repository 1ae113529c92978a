"""The benchmark workload: the frames that ``gpucorr bench``, ``bench/`` and the GPU scripts time.

One definition for every benchmark, so that their figures mean the same thing:
256x256 frames holding 49 disks of radius 8 (a 7x7 lattice, spacing about 30 px,
on a sub-pixel origin), Poisson noise of 2e6 counts a frame, a fixed seed; a
``RadialGradient(radius=8)`` pattern (search 16, so 32x32 crops). gpucorr and
libertem-blobfinder 0.6.1 get the same frames and peaks. It ships with the
package because ``gpucorr bench`` runs without the repository's ``bench/``.

Examples
--------
>>> w = make_workload(n_frames=2)
>>> w.frames.shape, w.frames.dtype, w.peaks.shape
((2, 256, 256), dtype('float32'), (49, 2))
>>> w.description
'2 frames 256x256 float32, 49 peaks, RadialGradient(radius=8), 32x32 crops'
>>> sorted(CASES)
['fast', 'fast-upsample20', 'full']
"""
from dataclasses import dataclass

import numpy as np

import gpucorr
from gpucorr.patterns import RadialGradient

__all__ = [
    "CASES",
    "DISTINCT",
    "FRAMES_PER_CALL",
    "FRAME_SHAPE",
    "PEAKS",
    "RADIUS",
    "SEED",
    "Workload",
    "gpucorr_call",
    "make_workload",
    "pattern",
    "reference_call",
]

#: benchmark case -> (mode, upsample)
CASES = {
    "fast": ("fast", False),
    "fast-upsample20": ("fast", 20),
    "full": ("full", False),
}
FRAME_SHAPE = (256, 256)
RADIUS = 8
#: disks a frame: the 7x7 lattice indices -3..3, all inside the frame
PEAKS = 49
SEED = 20240601
#: frames per timed call of the CPU benchmarks
FRAMES_PER_CALL = 64
#: distinct noisy frames drawn; longer stacks repeat them
DISTINCT = 64


@dataclass
class Workload:
    """Frames ``(N, 256, 256)``, their rounded peak positions ``(49, 2)`` int32 and the
    true (sub-pixel) centres ``(49, 2)`` float64."""
    frames: np.ndarray
    peaks: np.ndarray
    true_centers: np.ndarray

    @property
    def description(self):
        """What is timed, in words, for printed tables and JSON results."""
        cs = pattern().get_crop_size()
        return (f"{len(self.frames)} frames {self.frames.shape[1]}x{self.frames.shape[2]} "
                f"{self.frames.dtype}, {len(self.peaks)} peaks, "
                f"RadialGradient(radius={RADIUS}), {2 * cs}x{2 * cs} crops")


def make_workload(n_frames=FRAMES_PER_CALL, seed=SEED, dtype=np.float32, distinct=DISTINCT):
    """Noisy frames of one sub-pixel lattice and its rounded peak positions.

    Parameters
    ----------
    n_frames : int
        Frames in the stack.
    seed : int
        Seed of the lattice jitter and the noise.
    dtype : numpy dtype
        Of the frames (the Poisson counts fit ``uint16``).
    distinct : int
        Noisy frames drawn; a longer stack repeats them (drawing the noise of 16384
        frames would take longer than timing them).

    Returns
    -------
    Workload
    """
    rng = np.random.default_rng(seed)
    zero = np.array(FRAME_SHAPE) / 2 + rng.uniform(-0.5, 0.5, size=2)
    a = np.array([30.0, 1.5]) + rng.uniform(-0.5, 0.5, size=2)
    b = np.array([-1.5, 30.0]) + rng.uniform(-0.5, 0.5, size=2)
    frame, _, centers = gpucorr.cbed_frame(*FRAME_SHAPE, zero=zero, a=a, b=b,
                                           indices=np.mgrid[-3:4, -3:4], radius=RADIUS)
    assert len(centers) == PEAKS, len(centers)
    expected = frame[0].astype(np.float64) * (2e6 / frame.sum(dtype=np.float64))
    drawn = rng.poisson(expected, size=(min(n_frames, distinct),) + FRAME_SHAPE).astype(dtype)
    frames = drawn if len(drawn) == n_frames else np.resize(drawn, (n_frames,) + FRAME_SHAPE)
    return Workload(frames, np.rint(centers).astype(np.int32), centers)


class _LoggedRadialGradient(RadialGradient):
    """``RadialGradient`` log-scaled by default, as libertem-blobfinder correlates it (gpucorr's
    own default for it is no scaling): the benchmark times the computation the peer does and
    earlier figures timed."""

    default_scaling = "log"


def pattern():
    """The pattern every case uses: ``RadialGradient(radius=8)``, log-scaled (as the peer)."""
    return _LoggedRadialGradient(radius=RADIUS)


def gpucorr_call(w, mode, upsample, workers=None):
    """A no-argument callable running :func:`gpucorr.refine` on the workload ``w``."""
    pat = pattern()

    def call():
        return gpucorr.refine(w.frames, w.peaks, pat, mode=mode, upsample=upsample,
                              workers=workers)
    return call


def reference_call(w, mode, upsample):
    """A no-argument callable running libertem-blobfinder's ``process_frames_fast``/``_full``
    on the workload ``w``; ImportError where libertem-blobfinder is not installed."""
    from libertem_blobfinder.common import correlation
    from libertem_blobfinder.common.patterns import RadialGradient as RefRadialGradient
    pat = RefRadialGradient(radius=RADIUS)
    func = correlation.process_frames_fast if mode == "fast" else correlation.process_frames_full

    def call():
        return func(pattern=pat, frames=w.frames, peaks=w.peaks, upsample=upsample)
    return call
