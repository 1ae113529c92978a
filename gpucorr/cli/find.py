"""``gpucorr find INPUT``: find the disks of every frame on its own, index and fit each frame.

Where ``gpucorr refine`` refines one set of peaks (found on the sum frame) in
every frame, ``find`` detects the disks of each frame with
:func:`gpucorr.find_disks`, so that a scan whose pattern moves (descan), turns
or gains and loses disks (thickness, tilt, grains) still gives a lattice and
strain map. :func:`cmd_find` runs it as steps: check the options (the helpers
of ``refine``: :mod:`gpucorr.cli.options` and :mod:`gpucorr.cli.refine`), open
the input, find the radius (``auto``) and the pattern, find the disks, index
each frame's disks on its own (:func:`gpucorr.indexing.index_peaks` with the
mask of the disks found), fit each frame's lattice with its own indices
(:func:`gpucorr.lattice.fit_lattice`), map the strain against the reference of
``refine`` (median, ``--reference`` region or ``--reference-lattice``), and
write the results file (:mod:`gpucorr.cli.results`) and the pictures.
"""
import argparse
import math
import sys

import numpy as np

import gpucorr
from gpucorr.cli.common import CLIError, one_line
from gpucorr.cli.options import PATTERNS, default_output, memory_limit_bytes
from gpucorr.cli.progress import Progress
from gpucorr.cli.steps import (check_against_input, check_crop, check_options, frames_word,
                               make_pattern, open_input, radius_of_sum_frame, reading_frames,
                               scaling_of, strain_of, timed, warn_if_bad_fit)

__all__ = ["cmd_find", "default_find_output"]

#: what the lattice indices of a results file say
_INDICES_TEXT = ("lattice indices (i, j) of each disk in its frame's lattice: position = "
                 "zero + i * a + j * b; 0 where not indexed (see indexed)")


def default_find_output(spec):
    """The results file of ``gpucorr find`` on ``spec``: refine's name with ``-find``.

    >>> default_find_output("scan.npy"), default_find_output("scan.h5:/entry/data")
    ('scan_npy-gpucorr-find.h5', 'scan_h5_entry_data-gpucorr-find.h5')
    """
    return default_output(spec)[:-len(".h5")] + "-find.h5"


def cmd_find(args):
    """Run ``gpucorr find`` on the parsed ``args``; returns the exit status (0)."""
    if args.output is None:
        args.output = default_find_output(args.input)
    if args.subpixel == "quadratic" and args.upsample:
        raise CLIError(f"--subpixel quadratic refines without upsampling: pass --upsample 0 "
                       f"(got --upsample {args.upsample})")
    run = check_options(args)
    open_input(args, run)
    # refine's checks of the reference and the crop; find has no peaks file
    check_against_input(argparse.Namespace(**vars(args), peaks="auto"), run)
    _radius_and_pattern(args, run)
    disks = _find(args, run)
    lattice = _index_and_fit(args, run, disks)
    results, strain_maps, ref_text = _build_results(args, run, disks, lattice)
    _write_results(args, run, results, ref_text)
    if args.plots is not None:
        _draw_plots(args, run, disks, strain_maps)
    return 0


def _radius_and_pattern(args, run):
    """``--radius auto`` measured on the sum frame; the pattern and its crop checked."""
    from gpucorr.cli import maps
    if run.radius is None:
        with reading_frames(args):
            run.total = maps.sum_frame(run.frames)
        run.radius = radius_of_sum_frame(run.total, run)
        print(f"--radius auto: {run.radius:.2f} px (measured on the disks of the sum frame)")
        if PATTERNS[args.pattern] == "DiskEdge":
            print("gpucorr: warning: disk-edge needs the radius to a few hundredths of a "
                  "pixel, and find measures it on the sum frame only (not on the disks' "
                  "edges as refine does); give --radius, e.g. from gpucorr.fit_edge_radius",
                  file=sys.stderr)
    run.pattern = make_pattern(args, run.radius)
    check_crop(run.pattern, run.shape, run.radius)


def _find(args, run):
    """``gpucorr.find_disks`` on every frame, with a progress bar; a summary printed."""
    h, w = run.shape[-2:]
    if args.max_disks > h * w:
        raise CLIError(f"--max-disks {args.max_disks}: more than the {h}x{w} = {h * w} "
                       "pixels of a frame")
    spacing = (args.min_spacing if args.min_spacing is not None
               else float(run.pattern.get_crop_size()))      # find_disks' own default
    if args.edge is None:       # disks cut by the border: their positions are moved
        args.edge = int(math.ceil(run.radius))
    print(f"{args.input}: frames {run.shape} {run.frames.dtype}; up to {args.max_disks} "
          f"disks a frame, {spacing:.4g} px apart; {type(run.pattern).__name__}"
          f"(radius={run.radius:.4g}), upsample={args.upsample}, "
          f"scaling={scaling_of(args, run.pattern)}, power={args.power:g}, "
          f"device={run.device}")
    print(f"calibration: {run.calibration.describe()}")
    if isinstance(run.pattern, gpucorr.patterns.DiskEdge) and args.min_height is None:
        print("gpucorr: warning: the disk-edge pattern's map has maxima between the disks, "
              "which --max-disks may take for disks; pass --min-height 0 (or a little more) "
              "to leave them out", file=sys.stderr)
    disks, seconds = timed(args, lambda: gpucorr.find_disks(
        run.frames, run.pattern, max_disks=args.max_disks, min_spacing=spacing,
        min_relative_height=args.min_relative_height, min_height=args.min_height,
        min_elevation=args.min_elevation, min_relative_elevation=args.min_relative_elevation,
        upsample=args.upsample, subpixel=args.subpixel, edge=args.edge, device=run.device,
        memory_limit=memory_limit_bytes(args), workers=args.workers,
        progress=Progress("find"), scaling=args.scaling, power=args.power))
    run.min_spacing = spacing
    counts = _host(disks.counts)
    n = int(np.prod(run.lead, dtype=np.int64))
    print(f"found disks in {frames_word(n)} in {seconds:.2f} s = {n / seconds:.0f} frames/s: "
          f"{int(np.min(counts))} to {int(np.max(counts))} a frame (median "
          f"{float(np.median(counts)):g})")
    return disks


def _host(arr):
    from gpucorr.backends.host import to_host
    return np.asarray(to_host(arr))


def _index_and_fit(args, run, disks):
    """Each frame indexed on its own and its lattice fitted with its own indices; a dict
    of ``indices``, ``indexed`` (the valid mask) and ``fit``, or None where no frame was
    indexed."""
    from gpucorr.indexing import index_peaks
    from gpucorr.lattice import fit_lattice
    positions, mask = _host(disks.positions), _host(disks.mask)
    try:
        indices, indexed, _ = index_peaks(positions, mask=mask, reference=run.lattice)
    except ValueError as exc:  # a single frame whose disks form no lattice
        print(f"gpucorr: warning: no lattice: {one_line(exc)}", file=sys.stderr)
        return None
    frames_indexed = indexed.reshape(-1, indexed.shape[-1]).any(axis=1)
    if not frames_indexed.any():
        print("gpucorr: warning: no frame's disks could be indexed as a lattice (fewer than "
              "3 disks, or on one line): no lattice fit and no strain", file=sys.stderr)
        return None
    fit = fit_lattice(positions, indices, mask=indexed, elevations=_host(disks.elevations),
                      weighted=True)
    if not np.isfinite(fit.a).all(axis=-1).any():
        print("gpucorr: warning: no frame's lattice could be fitted (the indexed disks' "
              "elevations, the fit's weights, are 0, or they lie on one line): no lattice "
              "fit and no strain", file=sys.stderr)
        return None
    residual = warn_if_bad_fit(fit, "the disks", "spurious disks may be indexed; try a "
                               "larger --min-relative-height or --min-elevation")
    print(f"indexed {int(frames_indexed.sum())} of {frames_word(frames_indexed.size)}; "
          f"lattice fit: median residual {residual:.3f} px")
    return {"indices": indices, "indexed": indexed, "fit": fit}


def _strain(args, run, fit):
    """The strain maps of ``fit`` against the reference of ``refine``; and its text."""
    st, ref_text = strain_of(args, run, fit)
    print(f"strain relative to {ref_text}")
    return st, ref_text


def _build_results(args, run, disks, lattice):
    """The results file's datasets; the strain (or None) and the text of its reference."""
    from gpucorr.cli import maps
    from gpucorr.cli.results import Results, add_lattice, add_strain
    results = Results(run.lead, run.calibration)
    _add_disks(results, disks)
    if run.total is not None:
        results.add("sum_frame", run.total, "a.u.", "detector_y, detector_x",
                    "sum of all frames (the frames' own units)")
    results.add("maps/elevation", maps.elevation_map(_host(disks.elevations)), "a.u.", "scan",
                "mean elevation of the disks found in each frame: a quality map")
    st, ref_text = None, None
    if lattice is not None:
        results.add("indices", lattice["indices"], "dimensionless", "scan, disk, ij",
                    _INDICES_TEXT)
        results.add("indexed", lattice["indexed"].astype(np.uint8), "dimensionless",
                    "scan, disk", "1 where the disk was indexed and entered the lattice fit")
        add_lattice(results, lattice["fit"], lattice["indices"])
        cal = run.calibration
        if cal.pixel_size is not None:
            origin = np.asarray(lattice["fit"].zero)[..., None, :]
            results.add("positions_calibrated",
                        cal.reciprocal(_host(disks.positions), origin=origin),
                        cal.pixel_unit, "scan, disk, yx",
                        f"reciprocal-space (y, x) position of each disk in {cal.pixel_unit}: "
                        "(position - lattice zero of its frame) * pixel size")
        if run.lead:
            st, ref_text = _strain(args, run, lattice["fit"])
            add_strain(results, st, ref_text)
    return results, st, ref_text


def _add_disks(results, disks):
    """The arrays of a :class:`gpucorr.DiskResult`: ``(scan, disk, ...)``."""
    results.add("positions", _host(disks.positions), "px", "scan, disk, yx",
                "refined (y, x) detector position of each disk found, highest correlation "
                "first; NaN where the frame has fewer disks (see counts)")
    results.add("centers", _host(disks.centers), "px", "scan, disk, yx",
                "integer (y, x) detector position of each disk's correlation maximum; -1 "
                "where the frame has fewer disks")
    results.add("heights", _host(disks.heights), "a.u.", "scan, disk",
                "correlation maximum of each disk (the ranking, highest first); NaN where "
                "none")
    results.add("elevations", _host(disks.elevations), "a.u.", "scan, disk",
                "disk elevation: slope of the tightest cone under the correlation maximum, "
                "a quality score (higher is better); NaN where none")
    results.add("counts", _host(disks.counts), "dimensionless", "scan",
                "number of disks found in each frame (rows 0 to counts - 1 of the disk axis)")


def _write_results(args, run, results, ref_text):
    """The results file, with what was done and with which options in its attributes."""
    parameters = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    results.write(run.out, force=args.force, attrs={
        "description": "gpucorr find results: the diffraction disks found in each frame on "
                       "its own, each frame's lattice indices and fit"
                       + (", strain maps" if ref_text is not None else ""),
        "input": args.input, "frames_shape": np.array(run.shape),
        "pattern": type(run.pattern).__name__, "radius": float(run.radius),
        "radius_source": run.radius_source,
        "max_disks": int(args.max_disks), "min_spacing": float(run.min_spacing),
        "min_relative_height": float(args.min_relative_height),
        "min_height": args.min_height,
        "min_elevation": float(args.min_elevation),
        "min_relative_elevation": float(args.min_relative_elevation),
        "edge": args.edge, "upsample": int(args.upsample), "subpixel": args.subpixel,
        "scaling": scaling_of(args, run.pattern), "power": float(args.power),
        "device": run.device, "strain_reference": ref_text,
        "parameters": parameters})
    print(f"wrote {run.out}")


def _draw_plots(args, run, disks, st):
    """``--plots DIR``: the strain and elevation maps (of a 2-D scan) and the first frame
    with the disks found in it."""
    from gpucorr.cli import maps
    from gpucorr.plots import save_plots
    k = disks.positions.shape[-2]
    first = _host(disks.mask).reshape(-1, k)[0]
    centers = _host(disks.centers).reshape(-1, k, 2)[0][first]
    positions = _host(disks.positions).reshape(-1, k, 2)[0][first]
    scan = len(run.lead) == 2  # the maps are pictures of a 2-D scan
    elevation = maps.elevation_map(_host(disks.elevations))
    paths = save_plots(args.plots, strain=st if scan else None,
                       elevation=elevation if scan else None,
                       frame=maps.first_frame(run.frames), peaks=centers, refineds=positions,
                       calibration=run.calibration, frame_title="first frame, disks found")
    print(f"wrote {', '.join(paths)}")
