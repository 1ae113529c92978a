"""The main job on an embedded default: ``gpucorr demo``.

Generates a synthetic 4D-STEM scan whose diffraction disks move with a known
strain field, finds the disks on the sum frame, refines them in every frame
with :func:`gpucorr.refine`, fits the lattice of every frame, and measures the
strain against the known field. Writes the results (HDF5) and pictures (PNG,
drawn by :mod:`gpucorr.plots`): the strain maps, measured minus known, the
virtual bright-field and elevation maps, and one frame with its refined disks.

The strain field: the left quarter of the scan is unstrained (the reference
region); towards the right ``exx`` ramps up to 1 %, while ``eyy``, ``exy`` and
the rotation vary along y with amplitudes 0.5 %, 0.3 % and 10 mrad.
"""
import os
import time

import numpy as np

import gpucorr
from gpucorr.indexing import index_peaks
from gpucorr.lattice import crystal_strain, fit_lattice
from gpucorr.patterns import Circular
from gpucorr.synthetic import cbed_frame

__all__ = ["strain_field", "make_scan", "run"]


def strain_field(scan):
    """Known strain field ``(exx, eyy, exy, rotation)``, each of shape ``scan``.

    The columns ``x < scan_x / 4`` are unstrained (the reference region).

    >>> exx, eyy, exy, rot = strain_field((4, 8))
    >>> float(exx[:, :2].max()), round(float(exx.max()), 3)
    (0.0, 0.01)
    """
    sy, sx = scan
    y, x = np.mgrid[0:sy, 0:sx].astype(np.float64)
    ramp = np.clip((x - sx / 4 + 0.5) / max(sx * 3 / 4 - 0.5, 1), 0, 1)
    phase = np.pi * y / max(sy - 1, 1)
    return (0.01 * ramp, -0.005 * ramp * np.sin(phase), 0.003 * ramp * np.cos(phase),
            0.01 * ramp * np.sin(phase))


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def make_scan(scan=(32, 32), *, shape=(256, 256), radius=8, dose=1e6, seed=0):
    """Synthetic scan ``(scan_y, scan_x, H, W)`` uint16 of a crystal strained by
    :func:`strain_field` (its diffraction lattice deformed by ``F^-T``, ``F = R (I + eps)``).

    Returns
    -------
    frames : uint16 array (scan_y, scan_x, H, W)
        Poisson counts.
    reference : (a0, b0)
        Unstrained lattice vectors, each (y, x).
    field : tuple of 4 arrays
        ``exx, eyy, exy, rotation`` per scan position.
    """
    rng = np.random.default_rng(seed)
    fy, fx = shape
    spacing = min(fy, fx) / 7.5
    theta = np.radians(12)
    a0_xy = spacing * np.array([np.cos(theta), np.sin(theta)])
    b0_xy = 0.95 * spacing * np.array([np.cos(theta + np.radians(95)),
                                       np.sin(theta + np.radians(95))])
    zero = np.array([fy / 2, fx / 2]) + rng.uniform(-1, 1, size=2)
    indices = np.mgrid[-4:5, -4:5].reshape(2, -1).T
    field = strain_field(scan)
    frames = np.empty(tuple(scan) + tuple(shape), dtype=np.uint16)
    for iy in range(scan[0]):
        for ix in range(scan[1]):
            exx, eyy, exy, rot = (f[iy, ix] for f in field)
            # the crystal is deformed by F = R (I + eps); its diffraction pattern by
            # F^-T = R (I + eps)^-1
            deform = _rotation(rot) @ np.linalg.inv(
                np.eye(2) + np.array([[exx, exy], [exy, eyy]]))
            a, b = (deform @ v for v in (a0_xy, b0_xy))
            data, _, _ = cbed_frame(fy, fx, zero=zero, a=a[::-1], b=b[::-1], indices=indices,
                                    radius=radius, margin=radius, dose=dose, seed=rng)
            frames[iy, ix] = np.clip(data[0], 0, np.iinfo(np.uint16).max)
    return frames, (a0_xy[::-1], b0_xy[::-1]), field


#: peaks on the sum frame whose correlation is under this share of the strongest are
#: not disks (flat background: a plateau of the correlation) and are left out
MIN_CORRELATION = 1e-3


def find_indexed_peaks(sum_frame, pattern, num_peaks):
    """Peaks on the sum frame whose crop fits in the frame, and their lattice indices.

    Peaks whose correlation is under ``MIN_CORRELATION`` of the strongest are
    left out: asked for more peaks than there are disks, ``get_peaks`` returns
    points of the flat background too, and these threw the indexing off.
    """
    found = gpucorr.get_peaks(sum_frame, pattern, num_peaks)
    cs = pattern.get_crop_size()
    inside = np.all((found - cs >= 0) & (found + cs <= np.array(sum_frame.shape)), axis=1)
    found = found[inside]
    if len(found):
        corr = np.asarray(gpucorr.get_correlation(sum_frame, pattern))
        strength = corr[found[:, 0], found[:, 1]]
        found = found[strength >= MIN_CORRELATION * strength.max()]
    indices, valid, _ = index_peaks(found)
    return found[valid], indices[valid]


def save_pictures(out_dir, frames, peaks, indices, result, strain_maps, known, radius=8):
    """The demo's pictures in ``out_dir`` (see :func:`gpucorr.plots.save_plots`); their paths.

    ``strain_maps.png`` and ``strain_error.png`` (measured minus the known
    field), ``context.png`` (virtual bright field over the zero-order disk and
    the mean elevation) and ``frame_overlay.png``: the frame at the middle of
    the right edge, where the lattice is most strained, so the shifts show.
    """
    from gpucorr.plots import save_plots, virtual_bright_field

    names = ("exx", "eyy", "exy", "rotation")
    zero = np.flatnonzero(np.all(indices == 0, axis=1))
    center = peaks[zero[0]] if zero.size else np.array(frames.shape[2:]) / 2
    iy, ix = frames.shape[0] // 2, frames.shape[1] - 1
    return save_plots(out_dir, strain=dict(zip(names, strain_maps)),
                      known=dict(zip(names, known)),
                      vbf=virtual_bright_field(frames, center, radius),
                      elevation=result.elevations, frame=frames[iy, ix], peaks=peaks,
                      refineds=result.refineds[iy, ix], frame_title=f"frame ({iy}, {ix})")


def run(scan=(32, 32), *, out_dir="gpucorr-demo", force=False, seed=0, upsample=20,
        mode="fast", device="cpu", workers=None, progress=None, say=print):
    """Generate, find, refine, fit, measure and save; returns a summary dict.

    The summary holds ``frames``, ``peaks``, ``frames_per_s``,
    ``strain_rms_error`` (dict per component, the RMS difference to the known
    field), ``residual_px`` (median lattice-fit residual) and the written
    ``files``. ``device`` is where :func:`gpucorr.refine` runs (``"cpu"``,
    ``"cuda"``, ``"cuda:N"``); the frames stay in host memory.
    """
    results_path = os.path.join(out_dir, "results.h5")
    if os.path.exists(results_path) and not force:
        raise FileExistsError(f"{results_path} exists; pass --force to overwrite it")
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    frames, reference, known = make_scan(scan, seed=seed)
    n = frames.shape[0] * frames.shape[1]
    say(f"gpucorr {gpucorr.__version__} demo: {scan[0]}x{scan[1]} scan of "
        f"{frames.shape[2]}x{frames.shape[3]} uint16 frames with a known strain field "
        f"(generated in {time.perf_counter() - t0:.1f} s)")

    pattern = Circular(radius=8)
    sum_frame = frames.sum(axis=(0, 1), dtype=np.float64)
    peaks, indices = find_indexed_peaks(sum_frame, pattern, num_peaks=60)
    say(f"peaks found and indexed on the sum frame: {len(peaks)}")

    # warm-up: JIT compilation (CPU) or kernel compilation (GPU)
    gpucorr.refine(frames[0, :2], peaks, pattern, mode=mode, upsample=upsample, device=device)
    t0 = time.perf_counter()
    res = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=upsample, device=device,
                         workers=workers, progress=progress)
    seconds = time.perf_counter() - t0
    say(f"refined {n} frames x {len(peaks)} peaks in {seconds:.2f} s = "
        f"{n / seconds:.0f} frames/s on {device} (mode={mode}, upsample={upsample})")

    fit = fit_lattice(res.refineds, indices, elevations=res.elevations, weighted=True)
    region = np.zeros(scan, dtype=bool)
    region[:, : max(1, scan[1] // 4)] = True
    measured = crystal_strain(fit, reference=region)
    maps = (measured.exx, measured.eyy, measured.exy, measured.rotation)
    names = ("exx", "eyy", "exy", "rotation")
    errors = {k: float(np.sqrt(np.nanmean((m - t) ** 2))) for k, m, t in zip(names, maps, known)}
    say("strain error vs the known field (RMS over the scan): "
        + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))

    _write_results(results_path, force, frames, res, peaks, indices, fit, measured, known,
                   mode=mode, upsample=upsample, device=device, seed=seed)
    pictures = save_pictures(out_dir, frames, peaks, indices, res, maps, known)
    say(f"wrote {results_path}, " + ", ".join(pictures))
    return dict(frames=n, peaks=len(peaks), frames_per_s=n / seconds, strain_rms_error=errors,
                residual_px=float(np.nanmedian(fit.residual)),
                files=(results_path,) + tuple(pictures))


def _write_results(path, force, frames, res, peaks, indices, fit, measured, known, **params):
    """The demo's results file: that of ``gpucorr refine``, and the known strain field."""
    from gpucorr.calibration import Calibration
    from gpucorr.cli import maps
    from gpucorr.cli.results import DIMENSIONLESS, Results, add_lattice, add_refine_result, \
        add_strain
    reference = "the median lattice over the left quarter of the scan (columns x < scan_x / 4)"
    results = Results(frames.shape[:2], Calibration())
    add_refine_result(results, res, peaks, indices)
    center = maps.central_peak(peaks, indices, frames.shape)
    results.add("maps/vbf", maps.virtual_bright_field(frames, center, 8), "a.u.", "scan",
                "virtual bright field: sum of each frame over the central disk (radius 8 px)",
                center=center, radius=8.0)
    results.add("maps/elevation", maps.elevation_map(res.elevations), "a.u.", "scan",
                "mean peak elevation of each frame over its peaks: a quality map")
    add_lattice(results, fit, indices)
    add_strain(results, measured, reference)
    for name, values in zip(("exx", "eyy", "exy", "rotation"), known):
        results.add(f"known/{name}", values, "rad" if name == "rotation" else DIMENSIONLESS,
                    "scan", f"the {name} the synthetic scan was made with (the truth)")
    results.write(path, force=force, attrs={
        "description": "gpucorr demo results: a synthetic scan with a known strain field",
        "source": "gpucorr demo", "pattern": "Circular", "radius": 8.0,
        "mode": params["mode"], "upsample": int(params["upsample"]),
        "device": params["device"], "seed": int(params["seed"]),
        "reference": "scan columns x < scan_x / 4", "strain_reference": reference})
