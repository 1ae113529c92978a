#!/usr/bin/env python
"""Disk-position accuracy and speed: gpucorr's built-in patterns vs py4DSTEM.

Runs in gpucorr's venv. Makes ``cbed_frame`` scans (default 256x256, radius 8,
49 disks), each frame with its own random sub-pixel shift of the lattice
origin, with cbed_frame's default unequal weights (~160:1) and with equal
weights, noise-free and with Poisson noise (``dose``). The true centres are
those cbed_frame returns for the lattice parameters passed.

Measured, per (weights, noise):

* gpucorr: each built-in pattern (Circular, RadialGradient,
  BackgroundSubtraction, RadialGradientBackgroundSubtraction, DiskEdge with radius r
  and their default search / outer radius; UserTemplate of the vacuum disk in
  a (2 ceil(r) + 3)^2 array with its default search), ``mode`` fast and full,
  ``upsample`` off and 20, through ``gpucorr.refine``. Start positions are the
  rounded centres of the unshifted lattice, the same for every frame (as from
  peak finding on a sum frame); the true centres lie within 0.5 px of them.
* gpucorr without the log scaling, emulated inside this benchmark only with the
  public libertem-blobfinder-compatible functions of ``gpucorr.correlation``
  (``crop_disks_from_frame`` crops without log; ``do_correlations``;
  ``evaluate_correlations``; ``evaluate_upsampling``). The same emulation with
  the log step (``log_scale_cropbufs_inplace`` / ``log_scale``) is checked
  against ``refine`` (``emulation_check`` in the JSON). Its frames/s is a
  per-frame Python loop, not a product path.
* py4DSTEM ``find_Bragg_disks`` (multicorr with upsample 16, and poly) in its
  own venv through ``bench/py4dstem_run.py``, frames and the vacuum probe
  (a single cbed_frame disk, centre known exactly) exchanged by temp files;
  kernels 'flat' (get_kernel's default) and 'sigmoid' (radii (r, 2 r), and the
  tutorials' (r, 4 r)); also py4DSTEM's synthetic probe (logistic edge, width
  1 px) with the flat kernel. Thresholds: bench/py4dstem_run.py's defaults
  (minRelativeIntensity 0.0005, minPeakSpacing 2 r, edgeBoundary r).

``--scalings both`` runs every pattern with both ``scaling="log"`` and
``scaling="none"`` through ``refine`` (the default: only each pattern's own
``default_scaling``); rows name their scaling and whether it is the default.

Noise against bias: for every Poisson scan its noise-free twin (the same
seed, so the same sub-pixel shifts) is refined too, and each gpucorr row of
the Poisson scan carries ``noise_rms_px``, the RMS of (position on the noisy
frame - position on the noise-free frame) over disks bound in both, and
``bias_rms_px``, the RMS error of the noise-free positions: the part of the
error that the dose causes and the part the method has without noise.

Metrics: each true centre is matched to the nearest detected/refined position;
it counts as found within ``--tolerance`` px (default 2). ``recall`` = found /
true disks; ``RMS error`` = sqrt(mean(dy^2 + dx^2)) over the found disks (2-D
radial RMS, px); also per-axis RMS, mean bias, max error and, for py4DSTEM,
unmatched detections per frame. frames/s: best of ``--repeat`` timed calls
after a warm-up (numba compilation excluded); gpucorr with its default workers
(all cores) and with ``workers=1``; py4DSTEM runs one process (NumPy FFTs
single-threaded, BLAS products in multicorr may thread). frames/CPU-s: frames
per CPU second of the process (all threads), a cost that depends much less on
other load of the machine than wall time does; on a shared machine compare
those.

Writes ``bench/results/disk-accuracy-<UTC timestamp>-<git short hash>.json`` and
prints a markdown table.

Usage::

    nice -n 10 .venv/bin/python bench/disk_accuracy.py --frames 64 [--dose 1e6]
    .venv/bin/python bench/disk_accuracy.py --table-from bench/results/disk-accuracy-....json

The py4DSTEM venv comes from ``bench/py4dstem_env.sh`` (``--py4dstem-python``,
default ``$PY4DSTEM_PYTHON`` or /work/venvs/py4dstem/bin/python).
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import gpucorr
from gpucorr import correlation as gc
from gpucorr import patterns as gp
from gpucorr.synthetic import cbed_frame

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_PY4DSTEM_PYTHON = os.environ.get(
    "PY4DSTEM_PYTHON", "/work/venvs/py4dstem/bin/python")


# ---------------------------------------------------------------- frames

def make_scan(n, size, radius, all_equal, dose, seed):
    """(frames (n, size, size) float32, true centres (n, P, 2), start peaks (P, 2) int)."""
    rng = np.random.default_rng(seed)
    c = size // 2
    _, _, ref = cbed_frame(size, size, zero=(c, c), radius=radius, all_equal=all_equal)
    start = np.rint(ref).astype(np.int64)
    frames = np.empty((n, size, size), np.float32)
    truth = np.empty((n, len(ref), 2))
    shifts = rng.uniform(-0.5, 0.5, size=(n, 2))
    for k in range(n):
        zero = (c + shifts[k, 0], c + shifts[k, 1])
        data, _, peaks = cbed_frame(size, size, zero=zero, radius=radius, all_equal=all_equal,
                                    dose=dose, seed=None if dose is None else rng)
        if len(peaks) != len(ref):
            raise RuntimeError(f"frame {k}: {len(peaks)} disks, expected {len(ref)}")
        frames[k] = data[0]
        truth[k] = peaks
    return frames, truth, start, shifts


def vacuum_disk(shape, center, radius):
    """One equal-weight cbed_frame disk (the same drawing as the scan's)."""
    data, _, peaks = cbed_frame(shape[0], shape[1], zero=center, indices=np.array([[0, 0]]),
                                radius=radius, all_equal=True, margin=0)
    assert len(peaks) == 1
    return data[0]


def builtin_patterns(radius):
    r = int(np.ceil(radius))
    half = r + 1
    tmpl = vacuum_disk((2 * half + 1, 2 * half + 1), (half, half), radius)
    return {
        "Circular": gp.Circular(radius=radius),
        "RadialGradient": gp.RadialGradient(radius=radius),
        "BackgroundSubtraction": gp.BackgroundSubtraction(radius=radius),
        "RadialGradientBackgroundSubtraction": gp.RadialGradientBackgroundSubtraction(
            radius=radius),
        "DiskEdge": gp.DiskEdge(radius=radius),
        "UserTemplate(disk)": gp.UserTemplate(tmpl),
    }


# ---------------------------------------------------------------- metrics

def score_bound(pos, truth, tol):
    """Positions bound to true disks: pos, truth (n, P, 2)."""
    err = np.asarray(pos, np.float64) - truth
    dist = np.linalg.norm(err, axis=-1)
    found = np.isfinite(dist) & (dist < tol)
    return _summary(err[found], found.sum(), found.size, None)


def score_detections(dets, truth, tol):
    """Unbound detections: dets list of (k_i, 2), truth (n, P, 2)."""
    errs, n_found, n_true, n_extra = [], 0, 0, 0
    for d, t in zip(dets, truth):
        n_true += len(t)
        if len(d) == 0:
            continue
        dist = np.linalg.norm(t[:, None, :] - d[None, :, :], axis=-1)
        j = dist.argmin(axis=1)
        ok = dist[np.arange(len(t)), j] < tol
        n_found += ok.sum()
        errs.append((d[j] - t)[ok])
        n_extra += int((dist.min(axis=0) >= tol).sum())
    err = np.concatenate(errs) if errs else np.zeros((0, 2))
    return _summary(err, n_found, n_true, n_extra / len(truth))


def _summary(err, n_found, n_true, extra_per_frame):
    out = {"recall": float(n_found / n_true) if n_true else None,
           "n_found": int(n_found), "n_true": int(n_true)}
    if len(err):
        out.update(
            rms_px=float(np.sqrt(np.mean(np.sum(err ** 2, axis=-1)))),
            rms_y=float(np.sqrt(np.mean(err[:, 0] ** 2))),
            rms_x=float(np.sqrt(np.mean(err[:, 1] ** 2))),
            bias_y=float(err[:, 0].mean()), bias_x=float(err[:, 1].mean()),
            max_px=float(np.max(np.linalg.norm(err, axis=-1))))
    else:
        out.update(rms_px=None, rms_y=None, rms_x=None, bias_y=None, bias_x=None,
                   max_px=None)
    if extra_per_frame is not None:
        out["unmatched_per_frame"] = float(extra_per_frame)
    return out


def best_time(fn, repeat):
    """(result, best wall s, all wall s, best CPU s of this process, all threads)."""
    times, cpu = [], []
    res = None
    for _ in range(max(1, repeat)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return res, min(times), times, min(cpu)


# ---------------------------------------------------------------- gpucorr

def run_refine(frames, start, pattern, mode, upsample, workers=None, scaling=None):
    return gpucorr.refine(frames, start, pattern, mode=mode, upsample=upsample,
                          workers=workers, scaling=scaling).refineds


def _gpucorr_settings(pats, ups, scalings):
    """(pattern name, pattern, mode, upsample, its name, scaling) of every gpucorr row."""
    for pname, pat in pats.items():
        default = getattr(pat, "default_scaling", "log")   # refine's default
        chosen = [default] if scalings == "default" else \
            [default] + [s for s in ("log", "none") if s != default]
        for scaling in chosen:
            for mode in ("fast", "full"):
                for uname, up in ups:
                    yield pname, pat, mode, up, uname, scaling


def noise_and_bias(noisy, clean, truth, tol):
    """``noise_rms_px``: RMS of (noisy - noise-free position) over the disks bound
    (within ``tol`` of the truth) in both; ``bias_rms_px``: RMS error of the noise-free
    positions bound."""
    noisy, clean = np.asarray(noisy, np.float64), np.asarray(clean, np.float64)
    both = (np.linalg.norm(noisy - truth, axis=-1) < tol) & \
        (np.linalg.norm(clean - truth, axis=-1) < tol)
    if not both.any():
        return {"noise_rms_px": None, "bias_rms_px": None}

    def rms(e):
        return float(np.sqrt(np.mean(np.sum(e[both] ** 2, axis=-1))))

    return {"noise_rms_px": rms(noisy - clean), "bias_rms_px": rms(clean - truth)}


def emulate(frames, start, pattern, mode, upsample, log):
    """refine's pipeline from the public compat functions, log step optional.

    float32 compute like ``refine`` (float32 crops/frames, complex64 template).
    """
    n, h, w = frames.shape
    p = len(start)
    cs = pattern.get_crop_size()
    size = 2 * cs
    out = np.empty((n, p, 2), np.float32)
    centers = np.zeros((p, 2), np.int64)
    heights = np.zeros(p, np.float32)
    elevs = np.zeros(p, np.float32)
    if mode == "fast":
        tmpl = pattern.get_template((size, size)).astype(np.complex64)
        crops = np.zeros((n * p, size, size), np.float32)
        for k in range(n):
            gc.crop_disks_from_frame(start, frames[k], cs, crops[k * p:(k + 1) * p])
        if log:
            gc.log_scale_cropbufs_inplace(crops)
        corrs, specs = gc.do_correlations(tmpl, crops, with_specs=True)
        peaks = np.tile(start, (n, 1))
        c_all = np.zeros((n * p, 2), np.int64)
        r_all = np.zeros((n * p, 2), np.float32)
        gc.evaluate_correlations(corrs, peaks, cs, c_all, r_all, np.zeros(n * p, np.float32),
                                 np.zeros(n * p, np.float32))
        if upsample:
            gc.evaluate_upsampling(specs, corrs, peaks, cs, (h, w), upsample, c_all, r_all)
        return r_all.reshape(n, p, 2)
    tmpl = pattern.get_template((h, w)).astype(np.complex64)
    buf = np.empty((h, w), np.float32)
    mcrops = np.zeros((p, size, size), np.float32)
    for k in range(n):
        frame = frames[k]
        if log:
            gc.log_scale(frame, out=buf)
            frame = buf
        corrs, specs = gc.do_correlations(tmpl, frame[None], with_specs=True)
        gc.crop_disks_from_frame(start, corrs[0], cs, mcrops)
        refineds = out[k]
        gc.evaluate_correlations(mcrops, start, cs, centers, refineds, heights, elevs)
        if upsample:
            gc.evaluate_upsampling(specs[0], mcrops, start, cs, (h, w), upsample, centers,
                                   refineds)
    return out


# ---------------------------------------------------------------- py4DSTEM

def run_py4dstem(python, frames_path, probe_path, probe_origin, radius, subpixel, upsample,
                 kernel, radii, repeat, workdir, tag):
    out = os.path.join(workdir, f"p4_{tag}.npz")
    jpath = os.path.join(workdir, f"p4_{tag}.json")
    cmd = [python, os.path.join(HERE, "py4dstem_run.py"), "--frames", frames_path]
    if probe_path is None:  # py4DSTEM's synthetic probe (logistic edge), centre known
        cmd += ["--radius", str(radius)]
    else:
        cmd += ["--probe", probe_path, "--probe-origin",
                *(str(float(o)) for o in probe_origin), "--probe-radius", str(radius)]
    cmd += ["--kernel", kernel, "--subpixel", subpixel, "--upsample", str(upsample),
            "--repeat", str(repeat), "--out", out, "--json", jpath]
    if radii is not None:
        cmd += ["--kernel-radii", str(radii[0]), str(radii[1])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"py4dstem_run.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with np.load(out) as z:
        yx, off = z["yx"], z["offsets"]
    with open(jpath) as f:
        info = json.load(f)
    dets = [yx[off[i]:off[i + 1]] for i in range(len(off) - 1)]
    return dets, info, cmd


def P4_VARIANTS(radius):
    """(probe source, kernel mode, sigmoid radii) of the py4DSTEM runs: the vacuum
    disk image with py4DSTEM's default 'flat' kernel, with sigmoid trenches out to
    2 r and to the tutorials' 4 r, and py4DSTEM's own synthetic probe (flat)."""
    return (("image", "flat", None),
            ("image", "sigmoid", (radius, 2 * radius)),
            ("image", "sigmoid", (radius, 4 * radius)),
            ("synthetic", "flat", None))


# ---------------------------------------------------------------- main

def git_info():
    def git(*a):
        try:
            return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except Exception:
            return None
    return {"head": git("rev-parse", "HEAD"), "short": git("rev-parse", "--short", "HEAD"),
            "gpucorr_dirty": bool(git("status", "--porcelain", "--", "gpucorr"))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=48, help="frames per scan (default 48)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--radius", type=float, default=8.0)
    ap.add_argument("--dose", type=float, default=1e6,
                    help="electrons per frame for the Poisson scans (default 1e6)")
    ap.add_argument("--upsample", type=int, default=20, help="gpucorr upsample factor")
    ap.add_argument("--tolerance", type=float, default=2.0, help="match radius (px)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", choices=("unequal", "equal", "both"), default="both")
    ap.add_argument("--noise", choices=("noise-free", "poisson", "both"), default="both")
    ap.add_argument("--patterns", nargs="+", metavar="NAME",
                    help="only these gpucorr patterns (default all built-in)")
    ap.add_argument("--scalings", choices=("default", "both"), default="default",
                    help="gpucorr scalings: each pattern's default_scaling, or both log "
                         "and none")
    ap.add_argument("--py4dstem-python", default=DEFAULT_PY4DSTEM_PYTHON)
    ap.add_argument("--no-py4dstem", action="store_true")
    ap.add_argument("--no-emulation", action="store_true")
    ap.add_argument("--no-workers1", action="store_true",
                    help="skip the workers=1 timing of gpucorr")
    ap.add_argument("--out", help="JSON path (default bench/results/disk-accuracy-...)")
    ap.add_argument("--gpucorr-commit",
                    help="when gpucorr is imported from a snapshot of a commit (e.g. "
                         "PYTHONPATH=<git archive of it>) rather than this working tree: "
                         "that commit's short hash, used in the file name and recorded")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temp folder of frames and py4DSTEM outputs")
    ap.add_argument("--table-from", metavar="JSON",
                    help="only print the markdown table of a saved results file")
    args = ap.parse_args(argv)
    if args.table_from:
        with open(args.table_from) as f:
            print(markdown(json.load(f)))
        return 0

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    gi = git_info()
    gi["gpucorr_imported_from"] = os.path.dirname(os.path.dirname(
        os.path.abspath(gpucorr.__file__)))
    gi["gpucorr_is_working_tree"] = gi["gpucorr_imported_from"] == REPO
    if args.gpucorr_commit:
        gi["measured_commit"] = args.gpucorr_commit
        gi["short"] = args.gpucorr_commit
    elif not gi["gpucorr_is_working_tree"]:
        print(f"warning: gpucorr imported from {gi['gpucorr_imported_from']}, not {REPO}; "
              "pass --gpucorr-commit", file=sys.stderr)
    out_path = args.out or os.path.join(
        HERE, "results", f"disk-accuracy-{stamp}-{gi['short'] or 'nogit'}.json")

    radius = args.radius
    pats = builtin_patterns(radius)
    weights = ["unequal", "equal"] if args.weights == "both" else [args.weights]
    noises = [(k, v) for k, v in (("noise-free", None), ("poisson", args.dose))
              if args.noise in ("both", k)]
    if args.patterns:
        unknown = set(args.patterns) - set(pats)
        if unknown:
            ap.error(f"unknown patterns {sorted(unknown)}; choose from {list(pats)}")
        pats = {k: v for k, v in pats.items() if k in args.patterns}
    ups = [("off", False), (str(args.upsample), args.upsample)]
    rows = []
    checks = []
    p4_cmds = []

    try:
        load_start = os.getloadavg()
    except OSError:
        load_start = None
    t_start = time.perf_counter()
    tmpdir = tempfile.mkdtemp(prefix="disk-accuracy-")
    c = args.size // 2
    probe = vacuum_disk((args.size, args.size), (c, c), radius)
    probe_path = os.path.join(tmpdir, "probe.npy")
    np.save(probe_path, probe)

    def add(row, score):
        row.update(score)
        rows.append(row)
        rms = "—" if row["rms_px"] is None else f"{row['rms_px']:.4f}"
        fps = "" if row.get("fps") is None else f"{row['fps']:.1f}/s"
        print(f"  {row['setting']:<58} {row['noise']:<10} rms {rms:>8} "
              f"recall {row['recall']:.3f} {fps}", file=sys.stderr, flush=True)

    for wi, wname in enumerate(weights):
        for ni, (nname, dose) in enumerate(noises):
            # seeds by name, so a run restricted by --weights/--noise makes the same scans
            seed = (args.seed + 1000 * ("unequal", "equal").index(wname)
                    + 100 * ("noise-free", "poisson").index(nname))
            frames, truth, start, shifts = make_scan(args.frames, args.size, radius,
                                                     wname == "equal", dose, seed)
            print(f"[{wname} weights, {nname}] {frames.shape}, {truth.shape[1]} disks, "
                  f"peak weight ratio {_weight_ratio(args.size, radius, wname == 'equal'):.1f}",
                  file=sys.stderr, flush=True)
            base = {"weights": wname, "noise": nname, "dose": dose, "seed": seed,
                    "n_frames": args.frames, "n_disks": int(truth.shape[1])}
            twin = None
            if dose is not None:   # the same shifts without noise: noise vs bias
                twin, twin_truth, _, _ = make_scan(args.frames, args.size, radius,
                                                   wname == "equal", None, seed)
                assert np.array_equal(twin_truth, truth)

            # gpucorr refine
            for pname, pat, mode, up, uname, scaling in _gpucorr_settings(pats, ups,
                                                                           args.scalings):
                default = scaling == getattr(pat, "default_scaling", "log")
                run_refine(frames[:2], start, pat, mode, up, scaling=scaling)  # warm-up / JIT
                pos, t, ts, tc = best_time(
                    lambda: run_refine(frames, start, pat, mode, up, scaling=scaling),
                    args.repeat)
                row = dict(base, tool="gpucorr", pattern=pname, mode=mode,
                           upsample=up or None, log=scaling == "log", scaling=scaling,
                           default_scaling=default,
                           setting=f"gpucorr {pname} {mode} upsample={uname} ({scaling}"
                                   + (")" if default or args.scalings == "default"
                                      else ", not the default)"),
                           fps=args.frames / t, seconds=t, seconds_all=ts,
                           fps_cpu=args.frames / tc)
                if not args.no_workers1:
                    _, t1, _, tc1 = best_time(
                        lambda: run_refine(frames, start, pat, mode, up, workers=1,
                                           scaling=scaling), args.repeat)
                    row["fps_workers1"] = args.frames / t1
                    row["fps_cpu_workers1"] = args.frames / tc1
                if twin is not None:
                    row.update(noise_and_bias(
                        pos, run_refine(twin, start, pat, mode, up, scaling=scaling), truth,
                        args.tolerance))
                add(row, score_bound(pos, truth, args.tolerance))
                if args.no_emulation or scaling != "log":
                    continue   # the emulation checks the log against refine
                # emulation with log == refine? (checked on 4 frames)
                ref4 = pos[:4]
                emu4 = emulate(frames[:4], start, pat, mode, up, log=True)
                checks.append(dict(weights=wname, noise=nname, pattern=pname,
                                   mode=mode, upsample=up or None,
                                   max_abs_diff_px=float(np.max(np.abs(
                                       emu4.astype(np.float64) - ref4)))))
                if args.scalings == "both":
                    continue   # refine ran without the log step already
                emulate(frames[:2], start, pat, mode, up, log=False)
                pos_nl, t_nl, ts_nl, tc_nl = best_time(
                    lambda: emulate(frames, start, pat, mode, up, log=False), 1)
                row = dict(base, tool="gpucorr-nolog-emulated", pattern=pname,
                           mode=mode, upsample=up or None, log=False,
                           setting=f"gpucorr {pname} {mode} upsample={uname} NO LOG "
                                   "(emulated)",
                           fps=args.frames / t_nl, seconds=t_nl, seconds_all=ts_nl,
                           fps_cpu=args.frames / tc_nl)
                add(row, score_bound(pos_nl, truth, args.tolerance))

            # py4DSTEM
            if not args.no_py4dstem:
                fpath = os.path.join(tmpdir, f"frames_{wname}_{nname}.npy")
                np.save(fpath, frames)
                for psrc, kernel, radii in P4_VARIANTS(radius):
                    for sub, upf in (("multicorr", 16), ("poly", 16)):
                        kdesc = kernel if radii is None else \
                            f"{kernel}({radii[0]:g},{radii[1]:g})"
                        if psrc == "synthetic":
                            kdesc += ", synthetic probe"
                        tag = f"{wname}_{nname}_{kdesc}_{sub}".replace(" ", "")
                        dets, info, cmd = run_py4dstem(
                            args.py4dstem_python, fpath,
                            probe_path if psrc == "image" else None, (c, c), radius, sub, upf,
                            kernel, radii, args.repeat, tmpdir, tag)
                        p4_cmds.append(" ".join(cmd))
                        setting = f"py4DSTEM {sub}" + (f" upsample={upf}" if sub ==
                                                       "multicorr" else "") + f" kernel {kdesc}"
                        row = dict(base, tool="py4DSTEM", subpixel=sub,
                                   upsample=upf if sub == "multicorr" else None,
                                   kernel=kdesc, setting=setting, fps=info["frames_per_s"],
                                   seconds=info["seconds"], seconds_all=info["seconds_all"],
                                   fps_cpu=info.get("frames_per_cpu_s"),
                                   py4dstem_params=info["params"],
                                   py4dstem_kernel=info["kernel"],
                                   py4dstem_versions=info["versions"])
                        add(row, score_detections(dets, truth, args.tolerance))

    report = {
        "benchmark": "disk-accuracy",
        "utc": stamp,
        "git": gi,
        "gpucorr": {"version": gpucorr.__version__, "file": gpucorr.__file__},
        "numpy": np.__version__,
        "python": platform.python_version(),
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "load_avg_start": load_start, "load_avg_end": None,
                 "wall_s": time.perf_counter() - t_start},
        "args": vars(args),
        "scan": {"size": args.size, "radius": radius, "disk_spacing": args.size // 8,
                 "origin_shift": "uniform(-0.5, 0.5) px per axis per frame",
                 "start_peaks": "rint of the unshifted lattice, same for all frames",
                 "patterns": {k: repr(v) for k, v in pats.items()},
                 "pattern_search": {k: float(v.search) for k, v in pats.items()}},
        "metrics": {"rms_px": "sqrt(mean(dy^2 + dx^2)) over found disks",
                    "recall": f"true disks with a position within {args.tolerance} px",
                    "fps": "frames / best-of-repeat wall seconds of the call, after warm-up",
                    "fps_cpu": "frames / best-of-repeat CPU seconds of the process (all "
                               "threads) during the call"},
        "emulation_check": {
            "what": "max |emulated pipeline with log - refine| on 4 frames (px)",
            "max_over_all": max((c["max_abs_diff_px"] for c in checks), default=None),
            "cases": checks},
        "py4dstem_commands": p4_cmds,
        "rows": rows,
    }
    try:
        report["host"]["load_avg_end"] = os.getloadavg()
    except OSError:
        pass
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1, default=_json_default)
    print(f"wrote {out_path}", file=sys.stderr)
    if args.keep_tmp:
        print(f"kept frames and py4DSTEM outputs in {tmpdir}", file=sys.stderr)
    else:
        shutil.rmtree(tmpdir, ignore_errors=True)
    print(markdown(report))
    return 0


def _weight_ratio(size, radius, all_equal):
    if all_equal:
        return 1.0
    _, _, peaks = cbed_frame(size, size, radius=radius)
    zero = np.array((size // 2, size // 2))
    d = np.linalg.norm(peaks - zero, axis=-1)
    mv = max(d.max() + 1, len(peaks) + 1)
    wts = np.maximum(1, mv - d + np.arange(len(peaks)))
    return float(wts.max() / wts.min())


def _fmt_load(host):
    la = [host.get("load_avg_start"), host.get("load_avg_end")]
    return " -> ".join("?" if x is None else f"{x[0]:.1f}" for x in la)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def markdown(report):
    """Markdown table of a report (also ``--table-from results.json``)."""
    rows, a = report["rows"], report["args"]
    lines = []
    chk = report["emulation_check"]["max_over_all"]
    git = report["git"]
    host = report["host"]
    lines.append(
        f"Disk accuracy, {a['size']}x{a['size']}, radius {a['radius']:g}, "
        f"{rows[0]['n_disks'] if rows else '?'} disks, {a['frames']} frames per scan "
        f"(random sub-pixel origin shift per frame), Poisson dose {a['dose']:g}/frame, "
        f"match tolerance {a['tolerance']:g} px; RMS = 2-D radial over found disks. "
        f"frames/s = wall, best of {a['repeat']} (gpucorr: default workers = "
        f"{host['cpu_count']} cores, [workers=1]); frames/CPU-s = frames per CPU second of "
        f"the process, all threads (load-independent cost). git {git['short']}"
        + (" (snapshot of that commit)" if not git.get("gpucorr_is_working_tree", True) else
           " (gpucorr/ dirty)" if git.get("gpucorr_dirty") else "")
        + f"; load avg {_fmt_load(host)} on {host['cpu_count']} cores.")
    if chk is not None:
        lines.append(f"NO LOG rows: emulated with gpucorr.correlation functions (frames/s in "
                     f"parentheses: a Python loop, not a product path); the same emulation "
                     f"with the log step matches refine within {chk:.2g} px.")
    for w in dict.fromkeys(r["weights"] for r in rows):
        lines.append("")
        lines.append(f"### {w} weights")
        lines.append("")
        lines.append("| setting | noise | RMS error px | noise part / bias part px | recall "
                     "| frames/s | frames/CPU-s |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:
            if r["weights"] != w:
                continue
            rms = "—" if r["rms_px"] is None else f"{r['rms_px']:.4f}"
            fps = f"{r['fps']:.1f}"
            cpu = "" if r.get("fps_cpu") is None else f"{r['fps_cpu']:.1f}"
            if r.get("fps_workers1") is not None:
                fps += f" [{r['fps_workers1']:.1f}]"
            if r.get("fps_cpu_workers1") is not None:
                cpu += f" [{r['fps_cpu_workers1']:.1f}]"
            if r["tool"] == "gpucorr-nolog-emulated":
                fps, cpu = f"({fps})", f"({cpu})"
            extra = ""
            if r.get("unmatched_per_frame"):
                extra = f" (+{r['unmatched_per_frame']:.2f} unmatched/frame)"
            split = "" if r.get("noise_rms_px") is None else \
                f"{r['noise_rms_px']:.4f} / {r['bias_rms_px']:.4f}"
            lines.append(f"| {r['setting']} | {r['noise']} | {rms} | {split} | "
                         f"{r['recall']:.3f}{extra} | {fps} | {cpu} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
