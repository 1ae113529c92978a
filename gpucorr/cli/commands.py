"""The ``gpucorr`` command: its parser, :func:`main`, and ``demo`` and ``info``.

``refine`` is :mod:`gpucorr.cli.refine` (its options: :mod:`gpucorr.cli.options`),
``find`` :mod:`gpucorr.cli.find`, ``bench`` :mod:`gpucorr.cli.bench`. Errors the
user can fix (a missing file, a wrong dataset path, an unknown pattern, a
``--power`` outside [0, 1], no GPU for ``--device cuda``, an output folder that
is missing or not writable, frames that cannot be refined) print one line and
exit with status 2; an unexpected internal error prints one line and exits with 1; an
interrupt exits with 130. Nothing prints a traceback. ``refine`` checks its
input and output paths before it computes anything.
"""
import argparse
import math
import platform
import sys

import numpy as np

import gpucorr
from gpucorr.cli.bench import cmd_bench
from gpucorr.cli.common import CLIError, one_line, resolve_device, with_install_hint
from gpucorr.cli.find import cmd_find
from gpucorr.cli.progress import Progress
from gpucorr.cli.refine import PATTERNS, cmd_refine

__all__ = ["build_parser", "main"]


# --------------------------------------------------------------------------- commands

def cmd_demo(args):
    from gpucorr.cli import demo
    summary = demo.run((args.scan, args.scan), out_dir=args.out, force=args.force,
                       device=resolve_device(args.device),
                       seed=args.seed, upsample=args.upsample, mode=args.mode,
                       workers=args.workers, progress=Progress("refine"))
    return 0 if summary["strain_rms_error"] else 1


def cmd_info(args):
    import numba
    import scipy
    print(f"gpucorr {gpucorr.__version__} (Python {platform.python_version()}, "
          f"NumPy {np.__version__}, numba {numba.__version__}, SciPy {scipy.__version__})")
    print("backends:")
    for device in gpucorr.devices():
        kind = device.name.split(":")[0]
        state = "usable" if device.usable else "unusable"
        print(f"  {kind}: {state} - {device.name}: {with_install_hint(device.description)}")
    optional = []
    for module in ("h5py", "zarr", "matplotlib", "rsciio", "libertem_blobfinder"):
        try:
            mod = __import__(module)
            optional.append(f"{module} {getattr(mod, '__version__', '')}".strip())
        except ImportError:
            optional.append(f"{module} (not installed)")
    print("optional: " + ", ".join(optional))
    return 0


# --------------------------------------------------------------------------- parser

def _number(kind, text):
    """``text`` as a ``kind`` (int or float); argparse's error where it is not one."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}; got {text!r}") from None


def _upsample(text):
    value = _number(int, text)
    if value < 0 or value > 1000:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a factor from 2 to 1000; "
                                         f"got {value}")
    return value if value >= 2 else 0


def _positive(kind, unit=""):
    """An argparse type: a number of ``kind`` (int or float) that is > 0."""
    def parse(text):
        value = _number(kind, text)
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0{unit}; got {text}")
        return value
    return parse


def _at_least_one_px(text):
    value = _number(float, text)
    if not (value >= 1 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 1 px; got {text}")
    return value


def _power(text):
    """``--power``: a number from 0 to 1."""
    value = _number(float, text)
    if not 0 <= value <= 1:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1] (1: plain "
                                         f"correlation, 0: phase correlation); got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        # main prints "gpucorr: error: " before it
        raise CLIError(message)


class _Formatter(argparse.HelpFormatter):
    """Help that shows each option's default (where it has one worth showing)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings and action.nargs != 0):
            text += " (default: %(default)s)"
        return text


def build_parser():
    """The parser of ``gpucorr`` and its sub-commands."""
    parser = _Parser(prog="gpucorr", description="Find and refine diffraction-disk positions "
                     "by template correlation, fit lattices and map strain.")
    parser.add_argument("--version", action="version", version=f"gpucorr {gpucorr.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_refine(sub)
    _add_find(sub)
    _add_bench(sub)
    sub.add_parser("info", help="version, backends and devices").set_defaults(func=cmd_info)
    return parser


def _add_computing(p):
    """The options of the commands that refine: how and where, and ``--force``."""
    p.add_argument("--mode", choices=("fast", "full"), default="fast",
                   help="'fast': correlate crops around the peaks; 'full': whole frames")
    p.add_argument("--upsample", type=_upsample, default=20,
                   help="DFT upsampling factor, 0 for none")
    p.add_argument("--device", default="auto",
                   help="auto (a usable GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=_positive(int), default=None,
                   help="CPU threads (on a GPU: threads reading frames; default: one per "
                        "core)")
    p.add_argument("--force", action="store_true", help="overwrite existing results")


def _add_demo(sub):
    p = sub.add_parser("demo", help="synthetic 4D-STEM scan with a known strain field")
    p.add_argument("--scan", type=_positive(int), default=64,
                   help="scan positions per axis")
    p.add_argument("--out", default="gpucorr-demo", help="output folder")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the scan's random origin and noise")
    _add_computing(p)
    p.set_defaults(func=cmd_demo)


def _add_refine(sub):
    p = sub.add_parser("refine", help="refine the peaks of every frame of a file",
                       description="Refine the diffraction-disk positions of every frame of a "
                       "file, fit the lattice and map the strain; write an HDF5 results file.",
                       epilog="example: gpucorr refine scan.h5:/entry/data --radius auto "
                       "--pixel-size 0.02/nm --scan-step 2nm --reference 0:10,0:64 "
                       "--plots pictures")
    p.add_argument("input", help="frames.npy, frames.npz[:name], file.h5:/path, store.zarr")
    p.add_argument("-o", "--output", help="results file (default: from INPUT's name, "
                   "extension and dataset path: scan.npy gives scan_npy-gpucorr.h5)")
    _add_template(p)
    _add_calibration_and_reference(p)
    p.add_argument("--plots", metavar="DIR",
                   help="also write pictures (strain maps, virtual bright field, elevation, "
                        "a frame with its peaks) into this folder")
    p.add_argument("--memory-limit", type=_positive(float, " MiB"), default=None,
                   help="scratch memory in MiB (default: 256 MiB on the CPU, half the free "
                        "GPU memory)")
    _add_computing(p)
    p.set_defaults(func=cmd_refine)


def _add_find(sub):
    p = sub.add_parser("find", help="find the disks of every frame on its own, then index, "
                       "fit and map the strain per frame",
                       description="Find the diffraction disks of each frame on its own "
                       "(gpucorr.find_disks), index each frame's lattice, fit it and map the "
                       "strain; write an HDF5 results file. For scans whose pattern moves, "
                       "turns or gains and loses disks.",
                       epilog="example: gpucorr find scan.h5:/entry/data --radius auto "
                       "--max-disks 40 --min-relative-height 0.2 --reference 0:10,0:64")
    p.add_argument("input", help="frames.npy, frames.npz[:name], file.h5:/path, store.zarr")
    p.add_argument("-o", "--output", help="results file (default: from INPUT's name, "
                   "extension and dataset path: scan.npy gives scan_npy-gpucorr-find.h5)")
    p.add_argument("--pattern", default="circular", help=", ".join(PATTERNS))
    p.add_argument("--radius", required=True,
                   help="disk radius in px, or 'auto' (measured on the sum frame)")
    p.add_argument("--max-disks", type=_positive(int), required=True, metavar="K",
                   help="most disks kept per frame, the highest correlation first")
    p.add_argument("--min-spacing", type=_at_least_one_px, metavar="S",
                   help="smallest distance between two disks in px (default: the pattern's crop "
                        "size, about 2 x radius)")
    p.add_argument("--min-relative-height", type=_number_in(0, 1), default=0.0, metavar="F",
                   help="drop disks whose correlation is below F times the frame's highest")
    p.add_argument("--min-height", type=_finite, default=None, metavar="H",
                   help="drop disks whose correlation height is not above H (default: "
                        "none); with --pattern disk-edge give 0 or a little more, which "
                        "leaves out its maxima between the disks")
    p.add_argument("--min-elevation", type=_non_negative, default=0.0, metavar="E",
                   help="drop disks whose elevation (a quality score) is below E")
    p.add_argument("--min-relative-elevation", type=_number_in(0, 1), default=1e-6,
                   metavar="F",
                   help="drop disks whose elevation is below F times the frame's highest, or "
                        "0 (default 1e-6: the maxima rounding leaves on flat parts of a "
                        "frame; 0 keeps them)")
    p.add_argument("--edge", type=_non_negative_int, default=None, metavar="N",
                   help="drop disks whose centre is closer than N px to the frame's border "
                        "(default: the radius, rounded up: disks cut by the border, whose "
                        "positions the border moves, are left out)")
    _add_scaling(p)
    p.add_argument("--subpixel", choices=("com", "quadratic"), default="com",
                   help="with --upsample 0: 'com', the 5x5 centre of mass (as refine); "
                        "'quadratic', the vertex of a quadratic fitted to the 3x3 "
                        "neighbourhood (more accurate, as fast)")
    _add_calibration_and_reference(p)
    p.add_argument("--plots", metavar="DIR",
                   help="also write pictures (strain maps, elevation, the first frame with "
                        "its disks) into this folder")
    p.add_argument("--memory-limit", type=_positive(float, " MiB"), default=None,
                   help="scratch memory in MiB")
    p.add_argument("--upsample", type=_upsample, default=20,
                   help="DFT upsampling factor, 0 for none")
    p.add_argument("--device", default="auto",
                   help="auto (a usable GPU, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=_positive(int), default=None,
                   help="CPU threads (on a GPU: threads reading frames)")
    p.add_argument("--force", action="store_true", help="overwrite existing results")
    p.set_defaults(func=cmd_find)


def _finite(text):
    value = _number(float, text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text}")
    return value


def _non_negative(text):
    value = _number(float, text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0; got {text}")
    return value


def _non_negative_int(text):
    value = _number(int, text)
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {2**31 - 1}; got {text}")
    return value


def _number_in(low, high):
    """An argparse type: a number from ``low`` to ``high``."""
    def parse(text):
        value = _number(float, text)
        if not low <= value <= high:  # NaN too
            raise argparse.ArgumentTypeError(f"must be a number in [{low}, {high}]; got {text}")
        return value
    return parse


def _add_template(p):
    """``refine``'s pattern, radius, peaks and how frames and template are correlated."""
    p.add_argument("--pattern", default="circular", help=", ".join(PATTERNS))
    p.add_argument("--radius", required=True,
                   help="disk radius in px, or 'auto' (measured on the sum frame)")
    p.add_argument("--peaks", default="auto",
                   help="'auto' (from the sum frame) or a text file of y x [i j] rows")
    p.add_argument("--num-peaks", type=_positive(int), default=100,
                   help="peaks to look for with --peaks auto")
    _add_scaling(p, "; log with --templates reference")
    p.add_argument("--templates", choices=("pattern", "reference"), default="pattern",
                   help="'pattern': every disk correlated with --pattern; 'reference': each "
                        "disk with its own mean over the --reference region "
                        "(gpucorr.refine_by_reference; fast mode, power 1)")


def _add_scaling(p, default_note=""):
    """``--scaling`` and ``--power``: how frames and template are correlated."""
    p.add_argument("--scaling", choices=("log", "none"), default=None,
                   help="scaling of the frames before correlating: 'log', log(x - min + 1), "
                        "or 'none' (default: the pattern's default: none for "
                        f"radial-gradient and disk-edge, else log{default_note})")
    p.add_argument("--power", type=_power, default=1.0, metavar="P",
                   help="power P of the correlation in [0, 1]: 1, plain cross-correlation; "
                        "0, phase correlation; between, hybrid")


def _add_calibration_and_reference(p):
    """``refine``'s calibration and strain reference."""
    p.add_argument("--pixel-size", metavar="SIZE",
                   help="detector pixel size with its unit, e.g. 0.02/nm or 0.5mrad "
                        "(default: from the file's metadata, else pixels)")
    p.add_argument("--scan-step", metavar="STEP",
                   help="distance between scan positions, e.g. 2nm (default: from the "
                        "file's metadata, else scan positions)")
    p.add_argument("--reference", metavar="REGION",
                   help="strain reference: the median lattice over a region of scan "
                        "positions, start:stop per scan axis, e.g. 0:10,0:64 (default: the "
                        "median lattice of the whole scan)")
    p.add_argument("--reference-lattice", metavar="A0_B0",
                   help="strain reference: a known lattice, four numbers a0y,a0x,b0y,b0x in "
                        "px (or followed by 1/nm or mrad), a text file of two rows y x, or "
                        "a results file of a reference scan")


def _add_bench(sub):
    p = sub.add_parser("bench", help="frames/s of the benchmark workload on the CPU (against "
                       "libertem-blobfinder) and a usable GPU")
    p.add_argument("--frames", type=_positive(int), default=64, help="frames a call")
    p.add_argument("--rounds", type=_positive(int), default=3,
                   help="timed rounds, the best kept")
    p.set_defaults(func=cmd_bench)


def main(argv=None):
    """Run the ``gpucorr`` command; returns the exit status.

    Examples
    --------
    >>> main(["info"])  # doctest: +ELLIPSIS
    gpucorr ...
    backends:
      cpu: usable ...
    ...
    0
    """
    from gpucorr.io import InputError, OutputError
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return args.func(args)
    except (CLIError, FileExistsError, InputError, OutputError) as exc:
        print(f"gpucorr: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpucorr: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, and exit status 1
        print(f"gpucorr: error: internal error: {type(exc).__name__}: {one_line(exc)}",
              file=sys.stderr)
        return 1
