"""Multislice nanobeam diffraction of strained SrTiO3 [001] for the physics benchmark.

Runs in abTEM's own virtual environment (see README.md), not in gpucorr's:

    /work/venvs/abtem/bin/python bench/physics/simulate.py [--workers 2]

Writes ``bench/physics/data/sto001_nbed.npz`` (see README.md for its contents).
The frames in that file are everything ``evaluate.py`` needs; it does not need
abTEM.

Physics
-------
* SrTiO3, cubic a = 3.905 A, beam along [001], 200 kV, probe semiangle
  2.5 mrad (the (100) disks are 6.4 mrad apart: no overlap), no aberrations,
  focused on the entrance surface; Lobato parametrisation, infinite
  projection, two slices per unit cell (the SrO and TiO2 planes each in the
  middle of its slice); no frozen phonons (no thermal diffuse scattering).
* Each scan position is simulated for its LOCAL strain: a crystal with that
  position's homogeneous strain F = I + eps (symmetric eps, no rotation),
  cut into an orthogonal box of 36 x 36 unstrained cells (140.6 A, 768 x 768
  pixels, 0.183 A) and repeated along z (``abtem.CrystalPotential``). The box
  is periodic for the FFT, so a strained crystal has a mismatch at the box
  edge, 70 A from the probe in the middle of the box, where the probe
  intensity is negligible.
* Thicknesses: one multislice run to 104 cells records the exit wave every 26
  cells; the diffraction patterns at 26 cells (10.2 nm) and 104 cells
  (40.6 nm) are kept.
* Detector: 128 x 128 pixels, 2.5 mrad = 8.7 px (the disk radius), the
  crystal's [100] axis at 11 degrees to the detector columns, the optical
  axis at (row, col) = (63.4, 64.7). Each detector pixel is the mean of 4 x 4
  bilinear samples of the simulated pattern (about 1.6 simulation pixels per
  detector pixel), scaled so that counts are conserved.
* Strain fields are given in the detector frame (x = column, y = row, the
  frame in which gpucorr reports strain) and rotated into the crystal frame
  for the simulation.
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "sto001_nbed.npz")
CACHE = os.environ.get("PHYSICS_CACHE", "/tmp/gpucorr-physics-cache")

# crystal and microscope
A_STO = 3.905                     # A
BASIS = [("Sr", (0.0, 0.0, 0.25)), ("O", (0.5, 0.5, 0.25)),       # SrO plane
         ("Ti", (0.5, 0.5, 0.75)), ("O", (0.5, 0.0, 0.75)), ("O", (0.0, 0.5, 0.75))]
ENERGY = 200e3                    # eV
SEMIANGLE = 2.5                   # mrad
NCELL = 36                        # box = NCELL unstrained cells wide
GPTS = 768
NZ = 104                          # cells along z in the thickest crystal
EXIT_EVERY_CELLS = 26             # exit planes every 26 cells
KEEP_CELLS = (26, 104)            # thicknesses kept, in cells
# detector
DET = 128
DISK_RADIUS_PX = 8.7
ROT_DEG = 11.0                    # crystal [100] relative to the detector x (columns)
CENTER_YX = (63.4, 64.7)
SUBPIX = 4
SCALE = 1e5                       # stored frames = fraction of the beam x SCALE
# scans
SCAN = (8, 8)
UNIFORM = (0.010, -0.006, 0.004)  # exx, eyy, exy in the detector frame


def nonuniform_field(scan=SCAN):
    """(exx, eyy, exy), each ``scan``-shaped, in the detector frame.

    exx: Gaussian bump of 1.2 % in the middle of the scan; eyy: linear
    gradient from -0.6 % to +0.6 % along y; exy: linear gradient from -0.5 %
    to +0.5 % along x - y.
    """
    sy, sx = scan
    Y, X = np.mgrid[0:sy, 0:sx].astype(np.float64)
    Y /= max(sy - 1, 1)
    X /= max(sx - 1, 1)
    exx = 0.012 * np.exp(-((X - 0.5) ** 2 + (Y - 0.5) ** 2) / (2 * 0.25 ** 2))
    eyy = -0.006 + 0.012 * Y
    exy = 0.005 * (X - Y)
    return np.stack([exx, eyy, exy])


def rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def wavelength(energy=ENERGY):
    # relativistic electron wavelength in A
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    return h / np.sqrt(2 * m0 * e * energy * (1 + e * energy / (2 * m0 * c ** 2))) * 1e10


def calibration():
    """Detector geometry: pixel size in 1/A, rotation, centre."""
    k_alpha = SEMIANGLE * 1e-3 / wavelength()
    return dict(dk_det=k_alpha / DISK_RADIUS_PX, theta=np.radians(ROT_DEG),
                center_yx=np.array(CENTER_YX))


def eps_matrix(exx, eyy, exy):
    return np.array([[exx, exy], [exy, eyy]])


def crystal_F(eps_det, theta):
    """Deformation gradient in the simulation (crystal) frame for a detector-frame strain."""
    R = rot(theta)
    return np.eye(2) + R @ eps_matrix(*eps_det) @ R.T


def true_lattice(eps_det, cal=None):
    """Reciprocal lattice vectors a* = g(100), b* = g(010) in detector px, as (y, x)."""
    cal = cal or calibration()
    R = rot(cal["theta"])
    F = crystal_F(eps_det, cal["theta"])
    G = np.linalg.inv(F).T / A_STO                  # columns: g100, g010 (sim frame, 1/A)
    Gd = R.T @ G / cal["dk_det"]                    # detector frame (x, y), px
    a = Gd[::-1, 0].copy()
    b = Gd[::-1, 1].copy()
    return a, b


def slab(F, L):
    """One unit cell thick orthogonal L x L box cut out of the crystal deformed by F."""
    import ase
    a1 = F @ np.array([A_STO, 0.0])
    a2 = F @ np.array([0.0, A_STO])
    Minv = np.linalg.inv(np.column_stack([a1, a2]))
    n = Minv @ np.array([[0, L, 0, L], [0, 0, L, L]], dtype=float)
    r1 = np.arange(int(np.floor(n[0].min())) - 1, int(np.ceil(n[0].max())) + 2)
    r2 = np.arange(int(np.floor(n[1].min())) - 1, int(np.ceil(n[1].max())) + 2)
    i, j = (g.ravel() for g in np.meshgrid(r1, r2, indexing="ij"))
    syms, pos = [], []
    for s, (u, v, w) in BASIS:
        xy = (i + u)[:, None] * a1 + (j + v)[:, None] * a2
        keep = (xy[:, 0] >= 0) & (xy[:, 0] < L) & (xy[:, 1] >= 0) & (xy[:, 1] < L)
        xy = xy[keep]
        pos.append(np.column_stack([xy, np.full(len(xy), w * A_STO)]))
        syms += [s] * len(xy)
    return ase.Atoms(symbols=syms, positions=np.concatenate(pos), cell=[L, L, A_STO], pbc=True)


def detector_coords(dk_sim, n_sim, cal):
    """Fractional indices into the fftshifted simulation pattern for every detector sub-pixel."""
    off = (np.arange(SUBPIX) + 0.5) / SUBPIX - 0.5
    rows = (np.arange(DET)[:, None] + off[None, :]).ravel()   # DET*SUBPIX
    cols = rows.copy()
    yd, xd = np.meshgrid(rows - cal["center_yx"][0], cols - cal["center_yx"][1], indexing="ij")
    R = rot(cal["theta"])
    kx = cal["dk_det"] * (R[0, 0] * xd + R[0, 1] * yd)
    ky = cal["dk_det"] * (R[1, 0] * xd + R[1, 1] * yd)
    return np.stack([n_sim // 2 + kx / dk_sim, n_sim // 2 + ky / dk_sim])


def resample(pattern, coords, dk_sim, cal):
    from scipy.ndimage import map_coordinates
    v = map_coordinates(pattern, coords.reshape(2, -1), order=1, mode="constant", cval=0.0)
    v = v.reshape(DET, SUBPIX, DET, SUBPIX).mean(axis=(1, 3))
    return (v * (cal["dk_det"] / dk_sim) ** 2).astype(np.float32)


def simulate_one(job):
    """One diffraction pattern per kept thickness for a detector-frame strain; cached."""
    key, eps_det = job
    path = os.path.join(CACHE, f"{key}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return key, z["frames"], float(z["seconds"])
    import abtem
    abtem.config.set({"device": "cpu", "fft": "fftw", "fftw.threads": 1})
    t0 = time.perf_counter()
    cal = calibration()
    L = NCELL * A_STO
    atoms = slab(crystal_F(eps_det, cal["theta"]), L)
    unit = abtem.Potential(atoms, gpts=GPTS, slice_thickness=A_STO / 2,
                           parametrization="lobato", projection="infinite")
    pot = abtem.CrystalPotential(unit, repetitions=(1, 1, NZ), exit_planes=2 * EXIT_EVERY_CELLS)
    probe = abtem.Probe(semiangle_cutoff=SEMIANGLE, energy=ENERGY)
    probe.grid.match(pot)
    exit_waves = probe.multislice(pot, scan=[(L / 2, L / 2)], lazy=False)
    dp = exit_waves.diffraction_patterns(max_angle=None)
    arr = np.asarray(dp.array, dtype=np.float64).reshape(-1, GPTS, GPTS)
    dk_sim = dp.sampling[0]
    assert np.isclose(dp.sampling[0], dp.sampling[1]) and np.isclose(dk_sim, 1 / L)
    coords = detector_coords(dk_sim, GPTS, cal)
    frames = np.stack([resample(arr[c // EXIT_EVERY_CELLS], coords, dk_sim, cal)
                       for c in KEEP_CELLS])
    seconds = time.perf_counter() - t0
    os.makedirs(CACHE, exist_ok=True)
    np.savez(path + ".tmp.npz", frames=frames, seconds=seconds,
             total=arr[[c // EXIT_EVERY_CELLS for c in KEEP_CELLS]].sum(axis=(1, 2)))
    os.replace(path + ".tmp.npz", path)
    return key, frames, seconds


def jobs():
    out = [("reference", (0.0, 0.0, 0.0)), ("uniform", UNIFORM)]
    field = nonuniform_field()
    for iy in range(SCAN[0]):
        for ix in range(SCAN[1]):
            out.append((f"nonuniform_{iy}_{ix}", tuple(float(f) for f in field[:, iy, ix])))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--only", type=int, default=None, help="simulate the first N jobs only (timing)")
    args = p.parse_args(argv)
    import abtem
    import ase
    import scipy
    todo = jobs()[: args.only] if args.only else jobs()
    t0 = time.perf_counter()
    results, seconds = {}, {}
    with ProcessPoolExecutor(args.workers) as ex:
        for k, (key, frames, s) in enumerate(ex.map(simulate_one, todo)):
            results[key], seconds[key] = frames, s
            print(f"[{k + 1}/{len(todo)}] {key}: {s:.1f} s, frame sums "
                  f"{', '.join(f'{f.sum():.4f}' for f in frames)}", flush=True)
    wall = time.perf_counter() - t0
    print(f"simulated {len(todo)} patterns in {wall:.0f} s wall "
          f"({sum(seconds.values()):.0f} s summed over jobs)")
    if args.only:
        return
    cal = calibration()
    field = nonuniform_field()
    a0, b0 = true_lattice((0, 0, 0), cal)
    au, bu = true_lattice(UNIFORM, cal)
    an = np.zeros(SCAN + (2,))
    bn = np.zeros(SCAN + (2,))
    for iy in range(SCAN[0]):
        for ix in range(SCAN[1]):
            an[iy, ix], bn[iy, ix] = true_lattice(field[:, iy, ix], cal)
    nonuni = np.stack([[results[f"nonuniform_{iy}_{ix}"] for ix in range(SCAN[1])]
                       for iy in range(SCAN[0])])             # (sy, sx, T, H, W)
    meta = dict(
        crystal="SrTiO3 [001], a = 3.905 A", energy_eV=ENERGY, semiangle_mrad=SEMIANGLE,
        wavelength_A=wavelength(), box_A=NCELL * A_STO, box_cells=NCELL, gpts=GPTS,
        sampling_A=NCELL * A_STO / GPTS, slice_thickness_A=A_STO / 2,
        parametrization="lobato", projection="infinite", frozen_phonons=False,
        thickness_cells=list(KEEP_CELLS), thickness_nm=[c * A_STO / 10 for c in KEEP_CELLS],
        detector_px=DET, disk_radius_px=DISK_RADIUS_PX, rotation_deg=ROT_DEG,
        center_yx=list(CENTER_YX), dk_det_per_A=cal["dk_det"], subpixels=SUBPIX,
        frame_scale=SCALE, frame_dtype="float16",
        frame_units=f"expected electrons per pixel for {SCALE:g} incident electrons "
                    "(multiply by dose / frame_scale for another dose)",
        strain="real-space Biot strain U - I (F = I + eps, no rotation) in the detector "
               "frame: x = column, y = row; exy is the tensor shear",
        lattice="a = g(100), b = g(010) reciprocal vectors in detector px, (y, x)",
        uniform_strain=list(UNIFORM), scan=list(SCAN),
        abtem=abtem.__version__, ase=ase.__version__, numpy=np.__version__,
        scipy=scipy.__version__, python=sys.version.split()[0],
        seconds_per_pattern_median=float(np.median(list(seconds.values()))),
        seconds_total_jobs=float(sum(seconds.values())), wall_seconds=wall,
    )
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    f16 = lambda x: (np.asarray(x) * SCALE).astype(np.float16)  # noqa: E731
    np.savez_compressed(
        OUT,
        reference=f16(results["reference"]),           # (T, H, W)
        uniform=f16(results["uniform"]),               # (T, H, W)
        nonuniform=f16(np.moveaxis(nonuni, 2, 0)),     # (T, sy, sx, H, W)
        strain_uniform=np.array(UNIFORM),              # (3,) exx, eyy, exy
        strain_nonuniform=field,                       # (3, sy, sx)
        lattice_reference=np.stack([a0, b0]),          # (2, 2): a0, b0 (y, x) px
        lattice_uniform=np.stack([au, bu]),
        lattice_nonuniform=np.stack([an, bn]),         # (2, sy, sx, 2)
        center_yx=np.array(CENTER_YX),
        thickness_nm=np.array(meta["thickness_nm"]),
        meta=json.dumps(meta),
    )
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
