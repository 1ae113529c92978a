"""What ``gpucorr refine`` and ``gpucorr find`` share: the run's state (:class:`Run`), the
checks of the options before and after the input is opened, the pattern, the radius
of the sum frame, the timed call with its error mapping, and the words they print.
"""
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from gpucorr.cli.common import CLIError, one_line, resolve_device
from gpucorr.cli.options import (PATTERNS, check_paths, check_plots, default_output,
                                 parse_calibration, parse_radius, parse_reference, read_peaks,
                                 read_reference_lattice)

__all__ = ["Run", "check_options", "open_input", "check_against_input", "scaling_of", "timed",
           "reading_frames", "make_pattern", "radius_of_sum_frame", "reference_text",
           "frames_word", "check_crop", "strain_of", "warn_if_bad_fit"]


@dataclass
class Run:
    """What one run of ``gpucorr refine`` or ``gpucorr find`` knows, filled in step by step."""

    out: str              # the results file
    radius: float         # px; None until measured (--radius auto)
    calibration: object   # the given one; with the file's under it once opened
    region: tuple         # --reference as slices, or None
    device: str
    frames: object = None
    shape: tuple = ()
    lattice: tuple = None  # --reference-lattice (a0, b0) in px, or None
    total: object = None   # the sum frame, where one was needed
    pattern: object = None
    peaks: object = None
    indices: object = None
    radius_source: str = "given"   # what the results file records of the radius

    @property
    def lead(self):
        """The scan (or stack) axes of the frames."""
        return self.shape[:-2]


def check_options(args):
    """Everything the command line alone says, checked before the input is opened."""
    from gpucorr.io import split_spec
    out = args.output or default_output(args.input)
    others = [("--peaks", getattr(args, "peaks", "auto")),
              ("--reference-lattice", getattr(args, "reference_lattice", None))]
    check_paths(split_spec(args.input)[0], out, args.force,
                others=[(name, path) for name, path in others
                        if path is not None and path != "auto"])
    check_plots(args.plots, args.force, out)
    radius = parse_radius(args.radius)
    if args.pattern not in PATTERNS:
        raise CLIError(f"--pattern must be one of {', '.join(PATTERNS)}; got {args.pattern!r}")
    given = parse_calibration(args)
    region = parse_reference(args)
    if getattr(args, "templates", "pattern") == "reference":
        if region is None:
            raise CLIError("--templates reference needs --reference REGION: the scan "
                           "positions whose mean disks are the templates")
        if args.mode != "fast":
            raise CLIError(f"--templates reference needs --mode fast; got --mode {args.mode}")
        if args.power != 1:
            raise CLIError(f"--templates reference correlates plainly: --power must be 1; got "
                           f"{args.power:g}")
    if region is not None and args.reference_lattice is not None:
        raise CLIError("--reference and --reference-lattice: give one of them, not both")
    return Run(out=out, radius=radius, calibration=given, region=region,
                device=resolve_device(args.device))


def open_input(args, run):
    """The frames of ``INPUT`` and its calibration, the given values put over the file's."""
    from gpucorr.io import InputError, open_frames
    try:
        frames, found = open_frames(args.input, metadata=True)
    except InputError as exc:
        raise CLIError(str(exc)) from exc
    except OSError as exc:
        raise CLIError(f"{args.input}: cannot read it ({one_line(exc)})") from exc
    run.frames, run.calibration = frames, found.update(run.calibration)
    run.shape = tuple(int(n) for n in frames.shape)
    if args.reference_lattice is not None:
        run.lattice = read_reference_lattice(args.reference_lattice, run.calibration)


def check_against_input(args, run):
    """The strain reference, the crop and a peaks file, checked against the frames."""
    from gpucorr.lattice import region_mask
    if run.region is not None:
        if not run.lead:
            raise CLIError(f"--reference {args.reference}: the input is a single frame; a "
                           "reference region needs scan positions")
        try:
            region_mask(run.region, run.lead)
        except ValueError as exc:
            raise CLIError(f"--reference {args.reference}: {one_line(exc)}") from None
    if run.lattice is not None and not run.lead:
        raise CLIError("--reference-lattice: the input is a single frame; strain maps need "
                       "scan positions")
    if run.radius is not None:
        check_crop(make_pattern(args, run.radius), run.shape, run.radius)
    if args.peaks != "auto":
        run.peaks, run.indices = read_peaks(args.peaks)
        if (run.region is not None or run.lattice is not None) and run.indices is None:
            raise CLIError(f"--reference{'-lattice' if run.lattice is not None else ''}: "
                           "strain needs lattice indices: use --peaks auto or a peaks file "
                           "of y x i j rows")


def scaling_of(args, pattern):
    """The scaling ``refine`` uses: ``--scaling``, else the pattern's default."""
    return args.scaling or getattr(pattern, "default_scaling", "log")


def timed(args, call):
    """``call()`` over the input's frames and the seconds it took; frames the call refuses
    (the options are checked before: the frames are bad) and read errors (e.g. a damaged
    chunk of an HDF5 file) become a CLIError naming the input."""
    t0 = time.perf_counter()
    with reading_frames(args):
        try:
            result = call()
        except (ValueError, TypeError) as exc:
            raise CLIError(f"{args.input}: {one_line(exc)}") from exc
    return result, time.perf_counter() - t0


@contextmanager
def reading_frames(args):
    """An OSError while reading the frames (for the sum frame, refine, the maps) as one
    line."""
    try:
        yield
    except OSError as exc:
        raise CLIError(f"{args.input}: reading the frames failed ({one_line(exc)})") from exc


def make_pattern(args, radius):
    from gpucorr import patterns
    if args.pattern not in PATTERNS:
        raise CLIError(f"--pattern must be one of {', '.join(PATTERNS)}; got {args.pattern!r}")
    if radius is None or not radius > 0:
        raise CLIError(f"--radius must be a number > 0 (disk radius in px) or auto; "
                       f"got {radius}")
    try:
        return getattr(patterns, PATTERNS[args.pattern])(radius=radius)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"--radius {radius:g}: no {args.pattern} pattern of that radius "
                       f"({one_line(exc)})") from exc


def radius_of_sum_frame(total, run=None):
    """``--radius auto``: the radius of the disks of the sum frame (recorded as the
    ``run``'s radius source)."""
    from gpucorr.radius import estimate_radius
    if run is not None:
        run.radius_source = "estimated from the sum frame (estimate_radius)"
    try:
        return estimate_radius(total)
    except ValueError as exc:
        raise CLIError(f"--radius auto: could not measure the disks of the sum frame "
                       f"({one_line(exc)}); give --radius in px") from exc


def reference_text(region_text, lattice, region=None, lead=None):
    """What the strain is relative to; a region as it applies to the scan axes ``lead``
    (a stop beyond the scan is cut to it, as Python's slices are)."""
    if lattice is not None:
        a0, b0 = lattice
        return (f"the given lattice a0 = ({a0[0]:.4g}, {a0[1]:.4g}) px, "
                f"b0 = ({b0[0]:.4g}, {b0[1]:.4g}) px")
    if region_text is not None:
        if region is not None and lead is not None and len(region) == len(lead):
            applied = [s.indices(n) for s, n in zip(region, lead)]
            cut = any((s.start is not None and s.start != a[0])
                      or (s.stop is not None and s.stop != a[1])
                      for s, a in zip(region, applied))
            if cut:
                return (f"the median lattice over scan positions "
                        f"[{','.join(_slice_text(*a) for a in applied)}] (given as "
                        f"{region_text})")
        return f"the median lattice over scan positions [{region_text}]"
    return "the median lattice of the whole scan"


def _slice_text(start, stop, step):
    if step == 1:
        return f"{start}:{stop}"
    return f"{start}:{stop}:{step}" if stop >= 0 else f"{start}::{step}"


def frames_word(n):
    return f"{n} frame" + ("" if n == 1 else "s")


def check_crop(pattern, shape, radius):
    cs = pattern.get_crop_size()
    if 2 * cs > min(shape[-2:]):
        raise CLIError(f"--radius {radius:g}: the {2 * cs}-px crop is larger than the "
                       f"{shape[-2]}x{shape[-1]} frames")



def strain_of(args, run, fit):
    """The crystal's strain maps of the lattice ``fit`` against the run's reference (the
    ``--reference-lattice``, the ``--reference`` region, or the whole scan), and the
    reference's description; a reference that does not work is a CLIError."""
    from gpucorr.lattice import crystal_strain
    ref_text = reference_text(args.reference, run.lattice, run.region, run.lead)
    try:
        st = crystal_strain(fit, reference=run.lattice if run.lattice is not None
                            else run.region)
    except ValueError as exc:
        raise CLIError(f"--reference {args.reference}: {one_line(exc)}" if run.region
                       else f"strain: {one_line(exc)}") from exc
    return st, ref_text


def warn_if_bad_fit(fit, what, advice):
    """The lattice fit's median residual (px); a warning on stderr, with ``advice``, where
    it is 1 px or more (``what``: the positions fitted)."""
    finite = np.isfinite(fit.residual)
    residual = float(np.median(fit.residual[finite])) if finite.any() else float("nan")
    if not residual < 1.0:
        print(f"gpucorr: warning: the lattice fits {what} badly (median residual "
              f"{residual:.2f} px): {advice}", file=sys.stderr)
    return residual
