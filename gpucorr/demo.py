"""The main job, end to end on synthetic data: ``python -m gpucorr``.

Generates a stack of noisy synthetic CBED frames (uint16 counts) whose disk
centres are known to sub-pixel precision, finds the peaks on the sum frame
with :func:`gpucorr.get_peaks`, refines them in every frame with
:func:`gpucorr.refine`, and prints how far the refined positions are from
the true centres, and how many frames per second were processed.

Every frame has the same lattice up to a small random shift and strain (as
from descan and a strained specimen), so the sum frame shows where to look
and each frame's disks sit up to about a pixel from there.

The default template is a :class:`~gpucorr.patterns.Circular` disk of the
disks' radius. ``--pattern radial-gradient`` uses
:class:`~gpucorr.patterns.RadialGradient` instead: on these flat, sharp-edged
disks its log-scaled correlation has a flat top, so its DFT-upsampled
maximum wanders by up to about half a pixel at high dose (a property of the
method, which libertem-blobfinder shares, not of the upsampling).

Examples
--------
>>> summary = run(n_frames=4, seed=1, verbose=False)
>>> summary["n_frames"], summary["n_peaks"] > 30
(4, True)
>>> bool(summary["rms_error"] < 0.1)
True
"""
import argparse
import os
import sys
import time

import numpy as np

import gpucorr
from gpucorr.patterns import Circular, RadialGradient
from gpucorr.synthetic import cbed_frame, calc_coords

__all__ = ["make_stack", "run", "main"]

#: lattice indices drawn in every frame (those far enough inside the frame)
_INDICES = np.mgrid[-5:6, -5:6].reshape(2, -1).T


def _rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def make_stack(n_frames, *, shape=(256, 256), radius=8, dose=1e6, seed=0):
    """Noisy synthetic frames and the true centres of their disks.

    Parameters
    ----------
    n_frames : int
        Number of frames, >= 1.
    shape : (int, int)
        Frame height and width.
    radius : float
        Disk radius in pixels.
    dose : float
        Expected electron count per frame (Poisson noise).
    seed : int
        Seed of the random lattice, per-frame distortions and noise.

    Returns
    -------
    frames : uint16 array (n_frames, H, W)
        Poisson counts.
    centers : float64 array (n_frames, P, 2)
        True (y, x) centre of every disk in every frame.

    Examples
    --------
    >>> frames, centers = make_stack(2, shape=(128, 128), radius=4, seed=0)
    >>> frames.shape, frames.dtype, centers.shape[0], centers.shape[2]
    ((2, 128, 128), dtype('uint16'), 2, 2)
    """
    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be >= 1; got {n_frames}")
    rng = np.random.default_rng(seed)
    fy, fx = shape
    # A random lattice: spacing about 1/8 of the frame, random orientation,
    # slightly oblique, origin off-centre by a random sub-pixel amount.
    spacing = min(fy, fx) / 8 * rng.uniform(0.95, 1.1)
    angle = rng.uniform(0, np.pi / 2)
    a = _rotation(angle) @ np.array([spacing, 0.0])
    b = _rotation(np.pi / 2 + rng.uniform(-0.05, 0.05)) @ a * rng.uniform(0.95, 1.05)
    zero = np.array([fy / 2, fx / 2]) + rng.uniform(-2, 2, size=2)
    # Keep the lattice points that stay inside the frame under any distortion below.
    mean_pos = calc_coords(zero, a, b, _INDICES)
    keep = np.all((mean_pos >= radius + 2) & (mean_pos < np.array(shape) - radius - 2), axis=1)
    indices = _INDICES[keep]

    frames = np.empty((n_frames, fy, fx), dtype=np.uint16)
    centers = np.empty((n_frames, len(indices), 2))
    for i in range(n_frames):
        strain = np.eye(2) + rng.uniform(-0.002, 0.002, size=(2, 2))
        shift = rng.uniform(-0.5, 0.5, size=2)
        data, idx, peaks = cbed_frame(fy, fx, zero=zero + shift, a=strain @ a, b=strain @ b,
                                      indices=indices, radius=radius, margin=0,
                                      dose=dose, seed=rng)
        if len(idx) != len(indices):  # cannot happen with the margins above
            raise RuntimeError("a disk left the frame; use a larger frame")
        frames[i] = np.clip(data[0], 0, np.iinfo(np.uint16).max)
        centers[i] = peaks
    return frames, centers


#: template classes by command-line name
PATTERNS = {"circular": Circular, "radial-gradient": RadialGradient}


def run(n_frames=200, *, mode="fast", upsample=20, seed=0, shape=(256, 256), radius=8,
        dose=1e6, pattern="circular", workers=None, verbose=True):
    """Generate, find, refine, and measure; return a summary dict.

    See :func:`main` for the parameters. The summary holds ``n_frames``,
    ``n_peaks`` (peaks found and well inside the frame), ``rms_error`` and
    ``max_error`` (px, Euclidean distance to the true centre), ``seconds``
    and ``frames_per_s`` of the timed :func:`gpucorr.refine` call, and
    ``jit_seconds`` (the untimed warm-up call).
    """
    say = print if verbose else (lambda *args, **kwargs: None)
    t0 = time.perf_counter()
    frames, true_centers = make_stack(n_frames, shape=shape, radius=radius, dose=dose,
                                      seed=seed)
    t_gen = time.perf_counter() - t0
    n_true = true_centers.shape[1]
    say(f"gpucorr {gpucorr.__version__} demo: {n_frames} frames {shape[0]}x{shape[1]} "
        f"uint16, {n_true} disks of radius {radius}, dose {dose:.3g} e-/frame, "
        f"seed {seed} (generated in {t_gen:.1f} s)")

    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {sorted(PATTERNS)}; got {pattern!r}")
    pattern_name = pattern
    pattern = PATTERNS[pattern](radius=radius)
    crop_size = pattern.get_crop_size()
    found = gpucorr.get_peaks(frames.sum(axis=0, dtype=np.float64), pattern, n_true)

    # Match every found peak to the nearest true disk (mean position over the stack);
    # keep those matched within 2 px whose crop lies wholly inside the frame.
    mean_true = true_centers.mean(axis=0)
    dist = np.linalg.norm(found[:, None, :] - mean_true[None, :, :], axis=-1)
    nearest = dist.argmin(axis=1)
    matched = dist[np.arange(len(found)), nearest] < 2
    inside = np.all((found - crop_size >= 0) & (found + crop_size <= np.array(shape)), axis=1)
    use = matched & inside
    say(f"peaks found on the sum frame: {len(found)} ({int(matched.sum())} match a true "
        f"disk, {int(use.sum())} of those have their {2 * crop_size}-px crop inside the frame)")
    if not use.any():
        raise RuntimeError("no peak found well inside the frame")

    t0 = time.perf_counter()
    gpucorr.refine(frames[:1], found, pattern, mode=mode, upsample=upsample, workers=workers)
    jit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = gpucorr.refine(frames, found, pattern, mode=mode, upsample=upsample, workers=workers)
    seconds = time.perf_counter() - t0

    err = np.linalg.norm(res.refineds[:, use] - true_centers[:, nearest[use]], axis=-1)
    summary = dict(
        n_frames=n_frames, n_peaks=int(use.sum()),
        rms_error=float(np.sqrt(np.mean(err ** 2))), max_error=float(err.max()),
        seconds=seconds, frames_per_s=n_frames / seconds, jit_seconds=jit_seconds,
    )
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    say(f"refine(mode={mode!r}, upsample={upsample!r}, pattern {pattern_name}): {n_frames} "
        f"frames in "
        f"{seconds:.3f} s = {summary['frames_per_s']:.0f} frames/s on the CPU "
        f"({n_workers} workers; first call incl. JIT {jit_seconds:.2f} s, untimed)")
    say(f"refined position error vs true centres ({summary['n_peaks']} peaks x "
        f"{n_frames} frames): RMS {summary['rms_error']:.4f} px, "
        f"max {summary['max_error']:.4f} px")
    return summary


def _upsample_arg(text):
    value = int(text)
    if value < 0 or value > 1000:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a factor from 2 to 1000; "
                                         f"got {value}")
    return value if value >= 2 else False


def main(argv=None):
    """Command-line entry point of ``python -m gpucorr``; returns the exit status.

    Examples
    --------
    >>> main(["--frames", "2", "--upsample", "0"])  # doctest: +ELLIPSIS
    gpucorr ... demo: 2 frames 256x256 uint16, ...
    ...RMS ... px, max ... px
    0
    """
    parser = argparse.ArgumentParser(
        prog="python -m gpucorr",
        description="Refine diffraction-disk positions in a synthetic 4D-STEM stack and "
                    "report the error against the true centres and the throughput.")
    parser.add_argument("--frames", type=int, default=200,
                        help="number of 256x256 frames (default 200)")
    parser.add_argument("--mode", choices=("fast", "full"), default="fast",
                        help="'fast': correlate crops; 'full': correlate whole frames")
    parser.add_argument("--upsample", type=_upsample_arg, default=20,
                        help="DFT upsampling factor; 0 for the 5x5 centre of mass "
                             "(default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--dose", type=float, default=1e6,
                        help="expected electrons per frame (default 1e6)")
    parser.add_argument("--pattern", choices=sorted(PATTERNS), default="circular",
                        help="template (default circular)")
    parser.add_argument("--workers", type=int, default=None,
                        help="CPU threads (default: one per core)")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames must be >= 1; got {args.frames}")
    run(args.frames, mode=args.mode, upsample=args.upsample, seed=args.seed, dose=args.dose,
        pattern=args.pattern, workers=args.workers)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
