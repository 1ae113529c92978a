"""``gpucorr refine INPUT``: refine the peaks of every frame of a file into a results file.

:func:`cmd_refine` runs the command as steps: check the options (read by
:mod:`gpucorr.cli.options`: the paths, the pattern, the radius, the calibration,
the strain reference, the peaks file), open the input and check the options
against it, find the radius, pattern and peaks on the sum frame where asked,
refine all frames, fit the lattice and strain where the peaks have indices,
write the HDF5 results file, and draw the pictures. Nothing is computed before
every option has been checked.
"""
import numpy as np

import gpucorr
from gpucorr.cli.common import CLIError, one_line
from gpucorr.cli.options import PATTERNS, check_paths, memory_limit_bytes, read_peaks
from gpucorr.cli.progress import Progress
from gpucorr.cli.steps import (check_against_input, check_crop, check_options, frames_word,
                               make_pattern, open_input, radius_of_sum_frame, reading_frames,
                               scaling_of, strain_of, timed, warn_if_bad_fit)

__all__ = ["PATTERNS", "check_paths", "cmd_refine", "read_peaks"]


def cmd_refine(args):
    """Run ``gpucorr refine`` on the parsed ``args``; returns the exit status (0)."""
    run = check_options(args)
    open_input(args, run)
    check_against_input(args, run)
    _find_pattern_and_peaks(args, run)
    res = _refine(args, run)
    results, derived = _build_results(args, run, res)
    _write_results(args, run, results, derived)
    if args.plots is not None:
        _draw_plots(args, run, res, derived)
    return 0


def _find_pattern_and_peaks(args, run):
    """The sum frame where needed; the radius (``auto``), the pattern and the peaks."""
    from gpucorr.cli import maps
    with reading_frames(args):
        if run.radius is None or args.peaks == "auto":
            run.total = maps.sum_frame(run.frames)
        auto = run.radius is None
        if auto:
            run.radius = radius_of_sum_frame(run.total, run)
            print(f"--radius auto: {run.radius:.2f} px (measured on the disks of the sum "
                  "frame)")
        run.pattern = make_pattern(args, run.radius)
        check_crop(run.pattern, run.shape, run.radius)
        if args.peaks == "auto":
            run.peaks, run.indices = _peaks(args, run.total, run.pattern)
        if auto and PATTERNS[args.pattern] == "DiskEdge":
            run.radius = _edge_radius(args, run)
            run.radius_source = ("estimated from the sum frame, then fitted to the disks' "
                                 "edges (fit_edge_radius)")
            print(f"--radius auto: {run.radius:.3f} px for disk-edge (fit_edge_radius on the "
                  "frames' disk edges)")
            run.pattern = make_pattern(args, run.radius)
            check_crop(run.pattern, run.shape, run.radius)


def _refine(args, run):
    """``gpucorr.refine`` on every frame, with a progress bar; the time it took printed."""
    print(f"{args.input}: frames {run.shape} {run.frames.dtype}; {len(run.peaks)} peaks "
          f"({'indexed' if run.indices is not None else 'no lattice indices'}); "
          f"{type(run.pattern).__name__}(radius={run.radius:.4g}), mode={args.mode}, "
          f"upsample={args.upsample}, scaling={_scaling(args, run)}, "
          f"power={args.power:g}, device={run.device}")
    print(f"calibration: {run.calibration.describe()}")
    if args.templates == "reference":
        print(f"templates: each disk's own mean over scan positions [{args.reference}]; "
              f"its centre there measured with {type(run.pattern).__name__}")
        res, seconds = timed(args, lambda: gpucorr.refine_by_reference(
            run.frames, run.peaks, run.region, pattern=run.pattern, upsample=args.upsample,
            device=run.device,
            memory_limit=memory_limit_bytes(args), workers=args.workers,
            progress=Progress("refine"), scaling=args.scaling or "log"))
    else:
        res, seconds = timed(args, lambda: gpucorr.refine(
            run.frames, run.peaks, run.pattern, mode=args.mode, upsample=args.upsample,
            device=run.device, memory_limit=memory_limit_bytes(args), workers=args.workers,
            progress=Progress("refine"), scaling=args.scaling, power=args.power))
    n = int(np.prod(run.lead, dtype=np.int64))
    print(f"refined {frames_word(n)} in {seconds:.2f} s = {n / seconds:.0f} frames/s")
    return res


def _build_results(args, run, res):
    """The results file's datasets: the refine result, the sum frame, the maps, and the
    lattice and strain where the peaks have indices; and ``derived``, by name: the
    ``vbf`` and ``elevation`` maps, the ``strain`` (or None) and the text of its
    ``strain_reference``, for the file's attributes and the pictures."""
    from gpucorr.cli import maps
    from gpucorr.cli.results import Results, add_refine_result
    results = Results(run.lead, run.calibration)
    add_refine_result(results, res, run.peaks, run.indices)
    if run.total is not None:
        results.add("sum_frame", run.total, "a.u.", "detector_y, detector_x",
                    "sum of all frames (the frames' own units)")
    center = maps.central_peak(run.peaks, run.indices, run.shape)
    with reading_frames(args):
        vbf = maps.virtual_bright_field(run.frames, center, run.radius)
    elevation = maps.elevation_map(res.elevations)
    results.add("maps/vbf", vbf, "a.u.", "scan",
                f"virtual bright field: sum of each frame over the disk of radius "
                f"{run.radius:.4g} px about ({center[0]:g}, {center[1]:g}) (the central disk)",
                center=center, radius=float(run.radius))
    results.add("maps/elevation", elevation, "a.u.", "scan",
                "mean peak elevation of each frame over its peaks: a quality map")
    strain, ref_text = None, None
    if run.indices is not None and run.lead:
        strain, ref_text = _add_strain(args, run, res, results)
    return results, {"vbf": vbf, "elevation": elevation, "strain": strain,
                     "strain_reference": ref_text}


def _add_strain(args, run, res, results):
    """The lattice fit and the strain maps added to ``results``; ``(strain, reference)``."""
    from gpucorr.cli.results import add_lattice, add_strain
    from gpucorr.lattice import fit_lattice
    fit = fit_lattice(res.refineds, run.indices, elevations=res.elevations, weighted=True)
    st, ref_text = strain_of(args, run, fit)
    add_lattice(results, fit, run.indices, res.refineds)
    add_strain(results, st, ref_text)
    residual = warn_if_bad_fit(fit, "the refined peaks",
                               f"the peaks may be wrongly indexed; try fewer --num-peaks "
                               f"(now {args.num_peaks}) or a peaks file of y x i j rows")
    print(f"lattice fit: median residual {residual:.3f} px; "
          f"strain relative to {ref_text}")
    return st, ref_text


def _write_results(args, run, results, derived):
    """The results file, with what was done and with which options in its attributes."""
    parameters = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    fitted = derived["strain"] is not None
    results.write(run.out, force=args.force, attrs={
        "description": "gpucorr refine results: refined diffraction-disk positions of every "
                       "frame" + (", lattice fits and strain maps" if fitted else ""),
        "input": args.input, "frames_shape": np.array(run.shape),
        "pattern": type(run.pattern).__name__, "radius": float(run.radius),
        "radius_source": run.radius_source,
        "mode": args.mode, "upsample": int(args.upsample),
        "scaling": _scaling(args, run), "power": float(args.power),
        "templates": args.templates,
        "device": run.device, "peaks_source": args.peaks,
        "strain_reference": derived["strain_reference"],
        "parameters": parameters})
    print(f"wrote {run.out}")


def _draw_plots(args, run, res, derived):
    """``--plots DIR``: the strain, bright-field and elevation maps (of a 2-D scan) and
    the first frame with its peaks."""
    from gpucorr.cli import maps
    from gpucorr.plots import save_plots
    refined0 = np.asarray(res.refineds).reshape(-1, len(run.peaks), 2)[0]
    scan = len(run.lead) == 2  # the maps are pictures of a 2-D scan
    paths = save_plots(args.plots, strain=derived["strain"] if scan else None,
                       vbf=derived["vbf"] if scan else None,
                       elevation=derived["elevation"] if scan else None,
                       frame=maps.first_frame(run.frames), peaks=run.peaks, refineds=refined0,
                       calibration=run.calibration)
    print(f"wrote {', '.join(paths)}")


def _scaling(args, run):
    """The scaling the call uses (refine_by_reference's default is log)."""
    if args.templates == "reference":
        return args.scaling or "log"
    return scaling_of(args, run.pattern)


def _edge_radius(args, run):
    """``--radius auto`` with ``--pattern disk-edge``: the sum frame's radius refined on the
    disks' edges of up to 32 frames (:func:`gpucorr.fit_edge_radius`), on the device and
    workers of the run; with ``--templates reference``, frames of the reference region,
    whose disks' centres the pattern measures."""
    from gpucorr.radius import fit_edge_radius
    frames = run.frames
    if args.templates == "reference" and run.region is not None:
        frames = run.frames[run.region]
    span = min(1.0, 0.5 * run.radius)
    try:
        return fit_edge_radius(frames, run.peaks, run.radius, span=span, step=span / 10,
                               device=run.device, workers=args.workers)
    except ValueError as exc:
        raise CLIError(f"--radius auto: could not fit the disks' edges ({one_line(exc)}); "
                       f"give --radius in px") from exc


def _peaks(args, total, pattern):
    """``--peaks auto``: peaks found and indexed on the sum frame ``total``."""
    from gpucorr.demo import find_indexed_peaks
    try:
        return find_indexed_peaks(total, pattern, args.num_peaks)
    except ValueError as exc:
        raise CLIError(f"could not find a lattice of peaks on the sum frame: {exc}") from exc


