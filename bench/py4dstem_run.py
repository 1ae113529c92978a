#!/usr/bin/env python
"""Run py4DSTEM's Bragg-disk detection on a stack of frames from a file.

Runs in the py4DSTEM virtual environment (``bench/py4dstem_env.sh``; py4DSTEM
0.14.x needs NumPy < 2), not in gpucorr's. Frames and results travel by file:

    /work/venvs/py4dstem/bin/python bench/py4dstem_run.py \\
        --frames frames.npy --radius 8 --subpixel multicorr --upsample 16 \\
        --out result.npz [--json timing.json]

Input
    --frames   ``.npy`` or ``.npz`` (``file.npz`` takes its only/first array,
               ``file.npz:name`` a named one), shape (N, H, W) or (H, W).
    --probe    a vacuum probe image ``.npy`` (H, W) (or ``.npz[:name]``), or
    --radius   a disk radius in pixels: a synthetic probe is drawn with
               ``Probe.generate_synthetic_probe(radius, width, (H, W))``,
               centred at ``(H / 2, W / 2)``.
    --probe-origin QX QY   the probe centre (first, second array axis); by
               default it is known for a synthetic probe and measured with
               ``Probe.measure_disk`` for a probe image.

What runs (py4DSTEM's recommended CPU path)
    The frames are wrapped as a ``DataCube`` of scan shape (1, N), the kernel is
    ``Probe.get_kernel(mode=--kernel, origin=...)``: 'flat' (the default, as
    get_kernel's: the normalised probe), 'sigmoid' (a zero-sum trench, radii
    ``--kernel-radii``, default (r, 4 r) as in py4DSTEM's tutorials; on lattices
    spaced ~4 r the trench reaches the neighbouring disks and biases unequal
    ones) or 'gaussian' (``sigma=--kernel-sigma``), and ``find_Bragg_disks(datacube,
    kernel, ...)`` runs with ``subpixel`` / ``upsample_factor`` and the
    thresholds below. Defaults for the thresholds are chosen for lattices of
    disks spaced a few radii apart with brightness ratios up to ~1000:1
    (``minRelativeIntensity=0.0005``, ``minPeakSpacing=2 r``,
    ``edgeBoundary=ceil(r)``, ``maxNumPeaks=200``, ``sigma_cc=2``); all are
    options. The time of ``find_Bragg_disks`` alone is measured (import, file
    reading, kernel building excluded), best of ``--repeat`` runs, as wall
    time and as CPU time of the process (``frames_per_cpu_s``; NumPy's FFTs are
    single-threaded, BLAS matrix products in multicorr may use more threads).

Output
    ``--out`` ``.npz`` with, per frame ``i``, its disks at
    ``offsets[i]:offsets[i + 1]`` of the flat arrays ``qx`` (first array axis,
    = gpucorr's y), ``qy`` (second axis, = gpucorr's x), ``intensity``
    (correlation peak values), strongest first; ``counts`` (N,); and
    ``yx`` (total, 2) = ``(qx, qy)`` in gpucorr's ``(y, x)`` order. Pixel
    ``(i, j)`` has its centre at ``(i, j)`` in both libraries.
    ``--json`` (default: ``--out`` with ``.json``) holds the settings,
    versions, ``seconds`` and ``frames_per_s``.
"""
import argparse
import json
import os
import platform
import sys
import time

# emdfile's progress bars go through tqdm; keep them off stdout/stderr
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402


def load_array(spec):
    """``.npy`` file, or ``.npz`` file with optional ``:name``."""
    name = None
    path = spec
    if ".npz:" in spec:
        path, name = spec.rsplit(":", 1)
    if path.endswith(".npz"):
        with np.load(path) as z:
            if name is None:
                name = z.files[0]
            return np.asarray(z[name])
    return np.load(path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", required=True, help=".npy or .npz[:name], (N, H, W) or (H, W)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--probe", help="vacuum probe image .npy / .npz[:name], (H, W)")
    g.add_argument("--radius", type=float, help="disk radius (px) for a synthetic probe")
    p.add_argument("--probe-origin", type=float, nargs=2, metavar=("QX", "QY"),
                   help="probe centre (first, second axis); default known/measured")
    p.add_argument("--probe-radius", type=float,
                   help="probe radius for the kernel radii with --probe "
                        "(default measured by Probe.measure_disk)")
    p.add_argument("--probe-width", type=float, default=1.0,
                   help="edge width (px) of the synthetic probe (default 1.0)")
    p.add_argument("--kernel", choices=("flat", "sigmoid", "gaussian"), default="flat",
                   help="Probe.get_kernel mode (default flat)")
    p.add_argument("--kernel-radii", type=float, nargs=2, metavar=("RI", "RO"),
                   help="sigmoid radii (default r, 4 r)")
    p.add_argument("--kernel-sigma", type=float, default=4.0,
                   help="gaussian kernel sigma (relative to the probe std; default 4)")
    p.add_argument("--subpixel", choices=("multicorr", "poly", "pixel"), default="multicorr")
    p.add_argument("--upsample", type=int, default=16, help="upsample_factor (multicorr)")
    p.add_argument("--corr-power", type=float, default=1.0)
    p.add_argument("--sigma-cc", type=float, default=2.0)
    p.add_argument("--min-relative-intensity", type=float, default=0.0005)
    p.add_argument("--min-absolute-intensity", type=float, default=0.0)
    p.add_argument("--min-peak-spacing", type=float,
                   help="default 2 * radius")
    p.add_argument("--edge-boundary", type=int, help="default ceil(radius)")
    p.add_argument("--max-num-peaks", type=int, default=200)
    p.add_argument("--repeat", type=int, default=1,
                   help="time this many runs, report the best (results from the last)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--json", help="timing/settings JSON (default: --out with .json)")
    return p.parse_args(argv)


def build_kernel(args, shape):
    from py4DSTEM.braggvectors.probe import Probe

    if args.probe is not None:
        img = load_array(args.probe).astype(np.float64)
        if img.shape != shape:
            raise SystemExit(f"probe shape {img.shape} differs from the frame shape {shape}")
        probe = Probe(img)
        if args.probe_origin is None or args.probe_radius is None:
            r, x0, y0 = probe.measure_disk(plot=False, zero_vacuum=False)
        origin = tuple(args.probe_origin) if args.probe_origin is not None else (x0, y0)
        radius = args.probe_radius if args.probe_radius is not None else r
        source = "image"
    else:
        radius = args.radius
        probe = Probe.generate_synthetic_probe(radius, args.probe_width, shape)
        # generate_synthetic_probe centres the disk at (Q_Nx / 2, Q_Ny / 2)
        origin = (shape[0] / 2.0, shape[1] / 2.0)
        if args.probe_origin is not None:
            origin = tuple(args.probe_origin)
        source = "synthetic"

    if args.kernel == "flat":
        kernel = probe.get_kernel(mode="flat", origin=origin)
        kparams = {}
    elif args.kernel == "gaussian":
        kernel = probe.get_kernel(mode="gaussian", origin=origin, sigma=args.kernel_sigma)
        kparams = {"sigma": args.kernel_sigma}
    else:
        radii = tuple(args.kernel_radii) if args.kernel_radii else (radius, 4 * radius)
        kernel = probe.get_kernel(mode="sigmoid", origin=origin, radii=radii)
        kparams = {"radii": list(radii)}
    info = {"probe_source": source, "probe_radius": float(radius),
            "probe_origin": [float(o) for o in origin], "kernel_mode": args.kernel,
            **kparams}
    return np.asarray(kernel), radius, info


def main(argv=None):
    args = parse_args(argv)
    t_setup = time.perf_counter()
    import py4DSTEM
    from py4DSTEM.braggvectors.diskdetection import find_Bragg_disks

    frames = load_array(args.frames)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise SystemExit(f"frames must be (N, H, W) or (H, W); got {frames.shape}")
    n, h, w = frames.shape
    kernel, radius, kinfo = build_kernel(args, (h, w))

    spacing = args.min_peak_spacing if args.min_peak_spacing is not None else 2 * radius
    edge = args.edge_boundary if args.edge_boundary is not None else int(np.ceil(radius))
    params = dict(
        corrPower=args.corr_power, sigma_cc=args.sigma_cc, subpixel=args.subpixel,
        upsample_factor=args.upsample, minAbsoluteIntensity=args.min_absolute_intensity,
        minRelativeIntensity=args.min_relative_intensity, relativeToPeak=0,
        minPeakSpacing=spacing, edgeBoundary=edge, maxNumPeaks=args.max_num_peaks)

    # scan shape (1, N); py4DSTEM's own float conversion is left to it
    datacube = py4DSTEM.DataCube(data=np.ascontiguousarray(frames).reshape(1, n, h, w))
    setup_s = time.perf_counter() - t_setup

    times, cpu_times = [], []
    for _ in range(max(1, args.repeat)):
        t0, c0 = time.perf_counter(), time.process_time()
        bv = find_Bragg_disks(datacube, kernel, **params)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    seconds = min(times)
    cpu_seconds = min(cpu_times)

    qx, qy, inten, counts = [], [], [], np.zeros(n, dtype=np.int64)
    for i in range(n):
        d = bv._v_uncal[0, i].data
        counts[i] = len(d)
        qx.append(np.asarray(d["qx"], dtype=np.float64))
        qy.append(np.asarray(d["qy"], dtype=np.float64))
        inten.append(np.asarray(d["intensity"], dtype=np.float64))
    qx = np.concatenate(qx) if n else np.zeros(0)
    qy = np.concatenate(qy) if n else np.zeros(0)
    inten = np.concatenate(inten) if n else np.zeros(0)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    np.savez(args.out, qx=qx, qy=qy, intensity=inten, counts=counts, offsets=offsets,
             yx=np.stack([qx, qy], axis=-1))

    report = {
        "tool": "py4DSTEM.find_Bragg_disks",
        "frames_file": os.path.abspath(args.frames),
        "n_frames": int(n), "frame_shape": [int(h), int(w)],
        "frames_dtype": str(frames.dtype),
        "params": {k: (float(v) if isinstance(v, (np.floating,)) else v)
                   for k, v in params.items()},
        "kernel": kinfo,
        "seconds": seconds, "seconds_all": times,
        "frames_per_s": n / seconds if seconds > 0 else None,
        # CPU time of this process (all its threads): a load-independent cost
        "cpu_seconds": cpu_seconds, "cpu_seconds_all": cpu_times,
        "frames_per_cpu_s": n / cpu_seconds if cpu_seconds > 0 else None,
        "setup_s": setup_s,
        "peaks_per_frame_mean": float(counts.mean()) if n else 0.0,
        "versions": {"py4DSTEM": py4DSTEM.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "host": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                 "affinity": len(os.sched_getaffinity(0))
                 if hasattr(os, "sched_getaffinity") else None,
                 "threads_env": {k: os.environ.get(k) for k in
                                 ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                  "MKL_NUM_THREADS") if os.environ.get(k)}},
        "out": os.path.abspath(args.out),
    }
    jpath = args.json or os.path.splitext(args.out)[0] + ".json"
    with open(jpath, "w") as f:
        json.dump(report, f, indent=1)
    print(f"py4DSTEM {args.subpixel} (upsample {args.upsample}, kernel {args.kernel}): "
          f"{n} frames, {counts.mean() if n else 0:.1f} disks/frame, "
          f"{report['frames_per_s']:.1f} frames/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
