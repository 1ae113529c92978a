"""Strain error of gpucorr, libertem-blobfinder and py4DSTEM on multislice frames.

Runs in gpucorr's environment (no abTEM needed):

    python bench/physics/evaluate.py [--data bench/physics/data/sto001_nbed.npz]
                                     [--no-py4dstem] [--quick]

Reads the frames written by ``simulate.py`` (SrTiO3 [001], 200 kV, 2.5 mrad,
10.2 and 40.6 nm, 128 x 128 detector, disk radius 8.7 px) and, for each
condition (thickness x strain field x dose):

1. builds the frames: noise-free (the expected counts at 1e5 electrons per
   frame, float32, so that the log scaling of the correlation sees the same
   intensities as with noise), or Poisson
   counts at 1e5 or 1e4 electrons per frame drawn from them with a fixed seed
   per condition (``numpy.random.default_rng``); the uniform-strain set and
   the unstrained reference set are 8 x 8 scans of one simulated pattern
   (identical without noise: the disks do not overlap, so the probe position
   does not change the pattern);
2. takes the peaks as the known lattice positions of the unstrained crystal
   (calibration), rounded, for every disk whose centre is at least r + 1 px
   inside the frame;
3. refines them with each setting (gpucorr: Circular, RadialGradient,
   BackgroundSubtraction at radius 8.2 / 8.7 / 9.2 px, mode fast and full,
   upsample 20; libertem-blobfinder 0.6.1 ``process_frames_fast/full``, same
   patterns and radii, upsample=20; all with search = 11 px, half the disk
   spacing (the default 2 r reaches into the neighbouring disks); py4DSTEM ``find_Bragg_disks`` through
   ``bench/py4dstem_run.py`` in its own environment with its recommended
   settings, disks matched to the lattice within 4 px);
4. fits the reciprocal lattice of every frame (``gpucorr.lattice.fit_lattice``,
   unweighted, and weighted by the elevations (py4DSTEM: peak intensities) as
   a second variant) and computes the crystal's (real-space) strain of it
   (``gpucorr.lattice.crystal_strain``, through the dual basis) against
   (abs) the known unstrained lattice of the calibration and
   (rel) the lattice measured the same way on the unstrained reference set
   of the same thickness and dose;
5. reports the RMS error of (exx, eyy, exy) against the known field (all
   three components and all frames together) and the RMS position error
   against the true disk centres.

Writes ``bench/results/physics-<UTC>-<git short hash>.json`` and prints
markdown tables.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import gpucorr
import gpucorr.patterns as gp
from gpucorr.lattice import crystal_strain, fit_lattice

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DATA = os.path.join(HERE, "data", "sto001_nbed.npz")
PY4DSTEM_PY = os.environ.get("PY4DSTEM_PYTHON", "/work/venvs/py4dstem/bin/python")
PY4DSTEM_RUN = os.path.join(ROOT, "bench", "py4dstem_run.py")

DOSES = (None, 1e5, 1e4)
PATTERNS = ("Circular", "RadialGradient", "BackgroundSubtraction", "DiskEdge")
LBF_PATTERNS = PATTERNS[:3]
RADII_OFFSETS = (-0.5, 0.0, 0.5)
MODES = ("fast", "full")
UPSAMPLE = 20
SEED = 20261203
SEARCH = 11.0   # px: half the (100) disk spacing (22.4 px); the default 2 r = 17.4 reaches
                # into the neighbouring disks, and the correlation maximum then jumps to them
NOISE_FREE_DOSE = 1e5   # noise-free frames are in expected counts at this dose
R_NOMINAL = 8.7         # px, the simulation's disk radius (the start of fit_edge_radius)


def dose_name(dose):
    return "noise-free" if dose is None else f"{dose:.0e}".replace("+0", "") + " e"


def load(path):
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    scale = meta["frame_scale"]
    d = dict(meta=meta, center=z["center_yx"], thickness_nm=z["thickness_nm"],
             reference=z["reference"].astype(np.float32) / scale,
             uniform=z["uniform"].astype(np.float32) / scale,
             nonuniform=z["nonuniform"].astype(np.float32) / scale,
             strain_uniform=z["strain_uniform"], strain_nonuniform=z["strain_nonuniform"],
             lattice_reference=z["lattice_reference"], lattice_uniform=z["lattice_uniform"],
             lattice_nonuniform=z["lattice_nonuniform"])
    return d


def frames_for(d, field, t, dose, tag):
    """(8, 8, H, W) float32 frames of one condition; Poisson noise from a fixed seed."""
    scan = tuple(d["meta"]["scan"])
    if field == "nonuniform":
        clean = d["nonuniform"][t]
    else:
        clean = np.broadcast_to(d[field][t], scan + d[field][t].shape)
    if dose is None:     # the expected counts at NOISE_FREE_DOSE electrons, no noise
        return np.ascontiguousarray(clean * NOISE_FREE_DOSE, dtype=np.float32)
    seed = [SEED, t, int(dose), {"reference": 0, "uniform": 1, "nonuniform": 2}[field], tag]
    rng = np.random.default_rng(seed)
    return rng.poisson(np.clip(clean, 0, None) * dose).astype(np.float32)


def known(d, field):
    scan = tuple(d["meta"]["scan"])
    if field == "nonuniform":
        eps = d["strain_nonuniform"]
        a, b = d["lattice_nonuniform"]
    elif field == "uniform":
        eps = np.broadcast_to(d["strain_uniform"][:, None, None], (3,) + scan)
        a, b = (np.broadcast_to(v, scan + (2,)) for v in d["lattice_uniform"])
    else:
        eps = np.zeros((3,) + scan)
        a, b = (np.broadcast_to(v, scan + (2,)) for v in d["lattice_reference"])
    return np.asarray(eps), a, b


def lattice_peaks(d):
    """Rounded unstrained lattice positions of the disks well inside the frame, and indices."""
    a0, b0 = d["lattice_reference"]
    r = d["meta"]["disk_radius_px"]
    n = d["meta"]["detector_px"]
    idx = np.mgrid[-4:5, -4:5].reshape(2, -1).T
    pos = d["center"] + idx[:, :1] * a0 + idx[:, 1:] * b0
    inside = np.all((pos >= r + 1) & (pos <= n - 1 - (r + 1)), axis=1)
    return np.rint(pos[inside]).astype(np.int64), idx[inside]


def median_lattice(fit_a, fit_b):
    a = np.nanmedian(np.asarray(fit_a).reshape(-1, 2), axis=0)
    b = np.nanmedian(np.asarray(fit_b).reshape(-1, 2), axis=0)
    return a, b


def strain_errors(fit_a, fit_b, eps_known, ref_ab):
    """RMS error (all components) and per component of the real-space strain."""
    s = crystal_strain((fit_a, fit_b), reference=tuple(ref_ab))
    err = np.stack([s.exx - eps_known[0], s.eyy - eps_known[1], s.exy - eps_known[2]])
    comp = {k: float(np.sqrt(np.nanmean(e ** 2))) for k, e in zip(("exx", "eyy", "exy"), err)}
    return dict(rms=float(np.sqrt(np.nanmean(err ** 2))), **comp,
                rotation=float(np.sqrt(np.nanmean(s.rotation ** 2))),
                bias={k: float(np.nanmean(e)) for k, e in zip(("exx", "eyy", "exy"), err)},
                nan_frames=int(np.isnan(err).any(axis=0).sum()))


def position_error(refineds, a, b, center, indices):
    true = center + indices[:, 0, None] * a[..., None, :] + indices[:, 1, None] * b[..., None, :]
    diff = np.asarray(refineds, dtype=np.float64) - true
    return float(np.sqrt(np.nanmean(np.sum(diff ** 2, axis=-1))))


# --- methods: each returns refined positions (8, 8, P, 2) -----------------------------------

def make_pattern(module, pattern, radius):
    kw = dict(radius=radius, search=SEARCH)
    if pattern == "BackgroundSubtraction":
        kw["radius_outer"] = SEARCH      # the default 1.5 r does not fit in the search crop
    return getattr(module, pattern)(**kw)


def gpucorr_method(pattern, radius, mode, scaling="log"):
    """``scaling`` "default": the pattern's own; ``radius`` "auto": DiskEdge's radius
    measured on each set of frames by ``gpucorr.fit_edge_radius`` (from the nominal one)."""
    def run(frames, peaks):
        r = radius
        if r == "auto":
            r = gpucorr.fit_edge_radius(frames, peaks, R_NOMINAL, search=SEARCH)
            run.fitted.append(r)
        kw = {} if scaling == "default" else dict(scaling=scaling)
        res = gpucorr.refine(frames, peaks, make_pattern(gp, pattern, r), mode=mode,
                             upsample=UPSAMPLE, device="cpu", **kw)
        return np.asarray(res.refineds), np.asarray(res.elevations)
    run.fitted = []
    return run


def reference_method(scaling="log", edge_centres=False):
    """gpucorr.refine_by_reference: each disk against its mean in the condition's unstrained
    reference scan (``run.reference``, set before each condition). Without
    ``edge_centres`` the positions are relative to the reference, so only the "rel" errors
    mean anything; with it the reference disks' centres are measured with DiskEdge at the
    radius fit_edge_radius finds on the reference frames, and "abs" means something too."""
    def run(frames, peaks):
        pattern = None
        if edge_centres:
            key = id(run.reference)
            if run.cache.get("key") != key:
                radius = gpucorr.fit_edge_radius(run.reference, peaks, R_NOMINAL, search=SEARCH)
                run.cache.update(key=key, radius=radius)
                run.fitted.append(radius)
            pattern = gp.DiskEdge(run.cache["radius"], search=SEARCH)
        res = gpucorr.refine_by_reference(frames, peaks, run.reference, pattern=pattern,
                                          search=int(SEARCH), scaling=scaling,
                                          upsample=UPSAMPLE, device="cpu")
        return np.asarray(res.refineds), np.asarray(res.elevations)
    run.reference = None
    run.cache = {}
    run.fitted = []
    return run


def lbf_method(pattern, radius, mode):
    from libertem_blobfinder.common import correlation as lc
    from libertem_blobfinder.common import patterns as lp
    func = lc.process_frames_fast if mode == "fast" else lc.process_frames_full

    def run(frames, peaks):
        flat = frames.reshape((-1,) + frames.shape[-2:])
        _, refineds, _, elevations = func(make_pattern(lp, pattern, radius), flat, peaks,
                                          upsample=UPSAMPLE)
        return (np.asarray(refineds).reshape(frames.shape[:-2] + (len(peaks), 2)),
                np.asarray(elevations).reshape(frames.shape[:-2] + (len(peaks),)))
    return run


def py4dstem_available():
    return os.path.exists(PY4DSTEM_PY) and os.path.exists(PY4DSTEM_RUN)


def py4dstem_method(radius):
    def run(frames, peaks):
        flat = frames.reshape((-1,) + frames.shape[-2:])
        with tempfile.TemporaryDirectory() as tmp:
            fin = os.path.join(tmp, "frames.npy")
            fout = os.path.join(tmp, "out.npz")
            np.save(fin, flat)
            cmd = [PY4DSTEM_PY, PY4DSTEM_RUN, "--frames", fin, "--radius", str(radius),
                   "--out", fout]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"py4dstem_run failed: {proc.stderr[-2000:]}")
            with np.load(fout) as z:
                offsets, yx, inten = z["offsets"], z["yx"], z["intensity"]
        out = np.full((len(flat), len(peaks), 2), np.nan)
        weight = np.zeros((len(flat), len(peaks)))
        for i in range(len(flat)):
            found = yx[offsets[i]:offsets[i + 1]]
            if len(found) == 0:
                continue
            dist = np.linalg.norm(found[None, :, :] - peaks[:, None, :], axis=-1)
            j = dist.argmin(axis=1)
            ok = dist[np.arange(len(peaks)), j] <= 4.0
            out[i, ok] = found[j[ok]]
            weight[i, ok] = inten[offsets[i]:offsets[i + 1]][j[ok]]
        return (out.reshape(frames.shape[:-2] + (len(peaks), 2)),
                weight.reshape(frames.shape[:-2] + (len(peaks),)))
    return run


def settings(r_true, libraries, quick=False, modes=MODES, scalings=("log",)):
    out = []
    radii = [round(r_true + o, 2) for o in ((0.0,) if quick else RADII_OFFSETS)]
    for lib, maker in (("gpucorr", gpucorr_method), ("libertem-blobfinder", lbf_method)):
        if lib not in libraries:
            continue
        for pattern in (PATTERNS if lib == "gpucorr" else LBF_PATTERNS):
            for radius in radii + (["auto"] if pattern == "DiskEdge" else []):
                for mode in modes:
                    for scaling in (scalings if lib == "gpucorr" else ("log",)):
                        run = (maker(pattern, radius, mode, scaling) if lib == "gpucorr"
                               else maker(pattern, radius, mode))
                        out.append(dict(library=lib, pattern=pattern, radius=radius, mode=mode,
                                        search=SEARCH, upsample=UPSAMPLE, scaling=scaling,
                                        run=run))
    if "gpucorr" in libraries:
        out.append(dict(library="gpucorr", pattern="reference disks", radius=None, mode="fast",
                        search=SEARCH, upsample=UPSAMPLE, scaling="log", run=reference_method()))
        out.append(dict(library="gpucorr", pattern="reference disks + DiskEdge centres",
                        radius="auto", mode="fast", search=SEARCH, upsample=UPSAMPLE,
                        scaling="log", run=reference_method(edge_centres=True)))
    if "py4DSTEM" in libraries:
        out.append(dict(library="py4DSTEM", pattern="probe kernel (sigmoid)", radius=r_true,
                        mode="find_Bragg_disks", upsample="multicorr 16",
                        run=py4dstem_method(r_true)))
    return out


def git_hash():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip() or "nogit"
    except OSError:
        return "nogit"


def versions():
    out = {"gpucorr": gpucorr.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    try:
        import importlib.metadata as im
        out["libertem-blobfinder"] = im.version("libertem-blobfinder")
    except Exception:  # noqa: BLE001
        pass
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=DATA)
    p.add_argument("--no-py4dstem", action="store_true")
    p.add_argument("--quick", action="store_true", help="true radius only, no ±0.5 px")
    p.add_argument("--out", default=None)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--libraries", default="gpucorr,libertem-blobfinder,py4DSTEM",
                   help="comma-separated subset (to run them in parallel processes)")
    p.add_argument("--modes", default="fast,full", help="refine modes to run (fast,full)")
    p.add_argument("--scalings", default="log",
                   help="gpucorr's refine(scaling=...) values to run (log,none,default: the "
                        "pattern's own)")
    p.add_argument("--patterns", default=",".join(
                       PATTERNS + ("reference disks", "reference disks + DiskEdge centres")),
                   help="gpucorr patterns to run (comma-separated; 'reference disks': "
                        "gpucorr.refine_by_reference)")
    p.add_argument("--merge", nargs="+", help="merge result JSONs of --libraries runs")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    d = load(args.data)
    meta = d["meta"]
    r_true = meta["disk_radius_px"]
    use_p4 = (not args.no_py4dstem) and py4dstem_available()
    p4_note = ("used" if use_p4 else
               "skipped (--no-py4dstem)" if args.no_py4dstem else
               f"skipped: {PY4DSTEM_RUN} or {PY4DSTEM_PY} missing")
    peaks, indices = lattice_peaks(d)
    libraries = [x for x in args.libraries.split(",") if x != "py4DSTEM" or use_p4]
    sets = settings(r_true, libraries, args.quick, tuple(args.modes.split(",")),
                    tuple(args.scalings.split(",")))
    chosen = set(args.patterns.split(","))
    sets = [x for x in sets if x["library"] != "gpucorr" or x["pattern"] in chosen]
    print(f"{len(peaks)} disks per frame; {len(sets)} settings; py4DSTEM {p4_note}", flush=True)
    t_start = time.perf_counter()
    rows = []
    for t, thick in enumerate(d["thickness_nm"]):
        for dose in DOSES:
            ref_frames = frames_for(d, "reference", t, dose, 0)
            ref_eps, ref_a, ref_b = known(d, "reference")
            data = {f: frames_for(d, f, t, dose, 0) for f in ("uniform", "nonuniform")}
            for s in sets:
                t0 = time.perf_counter()
                if hasattr(s["run"], "reference"):
                    s["run"].reference = ref_frames
                try:
                    ref_pos, ref_w = s["run"](ref_frames, peaks)
                    ref_fit = fit_lattice(ref_pos, indices)
                    ref_meas = median_lattice(ref_fit.a, ref_fit.b)
                    ref_fit_w = fit_lattice(ref_pos, indices, elevations=ref_w, weighted=True)
                    ref_meas_w = median_lattice(ref_fit_w.a, ref_fit_w.b)
                    for field in ("uniform", "nonuniform"):
                        eps, a_true, b_true = known(d, field)
                        pos, w = s["run"](data[field], peaks)
                        fit = fit_lattice(pos, indices)
                        fit_w = fit_lattice(pos, indices, elevations=w, weighted=True)
                        row = dict(thickness_nm=float(thick), dose=dose, field=field,
                                   **{k: v for k, v in s.items() if k != "run"})
                        if getattr(s["run"], "fitted", None):
                            row["fitted_radii"] = [round(float(x), 4) for x in s["run"].fitted[-2:]]
                        row["abs"] = strain_errors(fit.a, fit.b, eps, d["lattice_reference"])
                        row["rel"] = strain_errors(fit.a, fit.b, eps, ref_meas)
                        row["abs_weighted"] = strain_errors(fit_w.a, fit_w.b, eps,
                                                            d["lattice_reference"])
                        row["rel_weighted"] = strain_errors(fit_w.a, fit_w.b, eps, ref_meas_w)
                        row["position_rms_px"] = position_error(pos, a_true, b_true,
                                                                d["center"], indices)
                        row["reference_position_rms_px"] = position_error(
                            ref_pos, ref_a, ref_b, d["center"], indices)
                        row["fit_residual_px"] = float(np.nanmedian(fit.residual))
                        row["seconds"] = time.perf_counter() - t0
                        rows.append(row)
                    if args.verbose:
                        print(f"  {label(s)}: {time.perf_counter() - t0:.1f} s, abs "
                              f"{rows[-2]['abs']['rms']:.2e}/{rows[-1]['abs']['rms']:.2e}",
                              flush=True)
                except Exception as e:  # noqa: BLE001
                    rows.append(dict(thickness_nm=float(thick), dose=dose, field="*",
                                     **{k: v for k, v in s.items() if k != "run"},
                                     error=f"{type(e).__name__}: {e}"))
                    print(f"  {s['library']} {s['pattern']}: {rows[-1]['error'][:300]}",
                          flush=True)
            print(f"done {thick:.1f} nm, {dose_name(dose)} "
                  f"({time.perf_counter() - t_start:.0f} s)", flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or os.path.join(ROOT, "bench", "results", f"physics-{stamp}-{git_hash()}.json")
    result = dict(created=stamp, git=git_hash(), versions=versions(), data=os.path.relpath(
        args.data, ROOT), simulation=meta, peaks=peaks.tolist(), indices=indices.tolist(),
        py4dstem=p4_note, libraries=libraries, search_px=SEARCH,
        noise_free_dose=NOISE_FREE_DOSE, seed=SEED, doses=[dose_name(x) for x in DOSES], rows=rows,
        seconds=time.perf_counter() - t_start)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {os.path.relpath(out, ROOT)}")
    print(markdown(rows, meta))


def merge(paths, out=None):
    parts = [json.load(open(p)) for p in paths]
    result = dict(parts[0])
    result["rows"] = [r for part in parts for r in part["rows"]]
    result["libraries"] = [x for part in parts for x in part["libraries"]]
    result["py4dstem"] = " / ".join(sorted({part["py4dstem"] for part in parts}))
    result["seconds"] = {os.path.basename(p): part["seconds"] for p, part in zip(paths, parts)}
    result["merged_from"] = [os.path.basename(p) for p in paths]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = out or os.path.join(ROOT, "bench", "results", f"physics-{stamp}-{git_hash()}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {os.path.relpath(out, ROOT)}")
    print(markdown(result["rows"], result["simulation"]))


def label(row):
    if row["library"] == "py4DSTEM":
        return "py4DSTEM find_Bragg_disks (sigmoid probe kernel, multicorr 16)"
    scaling = row.get("scaling", "log")
    return (f"{row['library']} {row['pattern']} r={row['radius']} {row['mode']}"
            + ("" if scaling in ("log", "default") else f" scaling={scaling}"))


def markdown(rows, meta):
    good = [r for r in rows if "error" not in r]
    conds = []
    for r in good:
        c = (r["thickness_nm"], r["field"], r["dose"])
        if c not in conds:
            conds.append(c)
    labels = []
    for r in good:
        if label(r) not in labels:
            labels.append(label(r))
    table = {(label(r), r["thickness_nm"], r["field"], r["dose"]): r for r in good}
    head = ["setting"] + [f"{t:.0f} nm {f[:3]}. {dose_name(x)}" for t, f, x in conds]
    out = []
    for kind, title in (("abs", "absolute (vs the known unstrained lattice)"),
                        ("rel", "relative to the simulated unstrained reference"),
                        ("abs_weighted", "absolute, lattice fit weighted by elevation"),
                        ("rel_weighted", "relative, lattice fit weighted by elevation")):
        out.append(f"\nRMS strain error (exx, eyy, exy together) x 1e-4, {title}\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for lab in labels:
            cells = []
            for c in conds:
                r = table.get((lab,) + c)
                cells.append("—" if r is None else f"{r[kind]['rms'] * 1e4:.1f}")
            out.append(f"| {lab} | " + " | ".join(cells) + " |")
        out.append("| **best gpucorr** | " + " | ".join(
            _best(table, labels, c, kind, "gpucorr") for c in conds) + " |")
        out.append("| **best libertem-blobfinder** | " + " | ".join(
            _best(table, labels, c, kind, "libertem-blobfinder") for c in conds) + " |")
    out.append("\nSummary: best setting per library (x 1e-4; abs / rel; "
               "unweighted fit | elevation-weighted fit)\n")
    libs = [lib for lib in ("gpucorr", "libertem-blobfinder", "py4DSTEM")
            if any(r["library"] == lib for r in good)]
    out.append("| thickness | field | dose | " + " | ".join(
        f"{lib} unweighted | {lib} weighted" for lib in libs) + " |")
    out.append("|" + "---|" * (3 + 2 * len(libs)))
    for c in conds:
        cells = []
        for lib in libs:
            for kinds in (("abs", "rel"), ("abs_weighted", "rel_weighted")):
                vals = []
                for kind in kinds:
                    v = _best(table, labels, c, kind, lib)
                    vals.append(v)
                cells.append(" / ".join(vals))
        out.append(f"| {c[0]:.1f} nm | {c[1]} | {dose_name(c[2])} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _best(table, labels, c, kind, lib):
    vals = [(table[(lab,) + c][kind]["rms"], lab) for lab in labels
            if (lab,) + c in table and table[(lab,) + c]["library"] == lib
            and np.isfinite(table[(lab,) + c][kind]["rms"])]
    if not vals:
        return "—"
    v, lab = min(vals)
    if lib == "py4DSTEM":
        return f"{v * 1e4:.1f}"
    return f"{v * 1e4:.1f} ({lab.split(' ', 1)[1]})"


if __name__ == "__main__":
    main()
