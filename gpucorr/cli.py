"""The ``gpucorr`` command: ``demo``, ``refine``, ``bench``, ``info``.

Errors the user can fix (a missing file, a wrong dataset path, an unknown
pattern, no GPU for ``--device cuda``, an output folder that is missing or
not writable, frames that cannot be refined) print one line and exit with
status 2; an unexpected internal error prints one line and exits with 1; an
interrupt exits with 130. Nothing prints a traceback. ``refine`` checks its
input and output paths before it computes anything.
"""
import argparse
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np

import gpucorr

__all__ = ["main"]

#: pattern classes by command-line name
PATTERNS = {
    "circular": "Circular",
    "radial-gradient": "RadialGradient",
    "background-subtraction": "BackgroundSubtraction",
    "radial-gradient-background-subtraction": "RadialGradientBackgroundSubtraction",
}


class CLIError(Exception):
    """A problem with the command line or its inputs, reported as one line."""


def _one_line(exc):
    """The message of ``exc`` on one line (numba's, for one, spans several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- devices

def cpu_name():
    """The CPU model, e.g. ``"AMD EPYC 7B13"``, and the core count."""
    from gpucorr._backend import _cpu_model
    return f"{_cpu_model()}, {os.cpu_count()} cores"


def cuda_status():
    """``(usable, reason)`` of the GPU for the command line (reason None where usable)."""
    from gpucorr._backend import cuda_unusable_reason
    reason = cuda_unusable_reason()
    return reason is None, reason


def resolve_device(device):
    """The device a command runs on, e.g. ``"cpu"`` or ``"cuda:0"``; CLIError where unusable.

    ``auto`` is the current GPU where one is usable, else the CPU.
    """
    from gpucorr import _device
    try:
        _device._parse(device)
    except ValueError:
        raise CLIError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}") from None
    if device == "cpu":
        return "cpu"
    try:
        target = _device.resolve(device, np.empty(0))
    except ValueError as exc:
        raise CLIError(f"--device {device}: {exc}") from None
    return str(target)


# --------------------------------------------------------------------------- progress

class Progress:
    """A one-line progress bar with frames/s on stderr (only where it is a terminal)."""

    def __init__(self, label, stream=None, enabled=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.t0 = time.perf_counter()

    def __call__(self, done, total):
        if not self.enabled:
            return
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        width = 30
        filled = int(width * done / max(total, 1))
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{done}/{total} frames, {rate:.0f} frames/s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


# --------------------------------------------------------------------------- commands

def cmd_demo(args):
    from gpucorr import demo
    summary = demo.run((args.scan, args.scan), out_dir=args.out, force=args.force,
                       device=resolve_device(args.device),
                       seed=args.seed, upsample=args.upsample, mode=args.mode,
                       workers=args.workers, progress=Progress("refine"))
    return 0 if summary["strain_rms_error"] else 1


def _pattern(args):
    from gpucorr import patterns
    if args.pattern not in PATTERNS:
        raise CLIError(f"--pattern must be one of {', '.join(PATTERNS)}; got {args.pattern!r}")
    if args.radius is None or not args.radius > 0:
        raise CLIError(f"--radius must be a number > 0 (disk radius in px); got {args.radius}")
    return getattr(patterns, PATTERNS[args.pattern])(radius=args.radius)


def _peaks(args, frames, pattern):
    """Peaks and lattice indices (None where unknown) from --peaks."""
    from gpucorr.demo import find_indexed_peaks
    if args.peaks == "auto":
        from gpucorr.api import _as_stack
        stack, _ = _as_stack(frames)
        if len(stack.shape) == 2:
            total = np.asarray(stack, dtype=np.float64)
        else:
            total = np.zeros(stack.shape[-2:], dtype=np.float64)
            for start in range(0, stack.shape[0], 64):
                total += np.asarray(stack[start:start + 64], dtype=np.float64).sum(axis=0)
        try:
            return find_indexed_peaks(total, pattern, args.num_peaks)
        except ValueError as exc:
            raise CLIError(f"could not find a lattice of peaks on the sum frame: {exc}") from exc
    return _read_peaks(args.peaks)


def _read_peaks(path):
    """Peaks (P, 2) and lattice indices (P, 2) or None from a text file of rows
    ``y x [i j]``; CLIError for anything else (NaN, positions beyond +-2**30, ...)."""
    from gpucorr import _validate
    if not os.path.exists(path):
        raise CLIError(f"--peaks: no such file: {path}")
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(path, ndmin=2, delimiter=None)
    except ValueError as exc:
        raise CLIError(f"--peaks {path}: not a table of numbers ({_one_line(exc)})") from exc
    except OSError as exc:
        raise CLIError(f"--peaks {path}: cannot read it ({exc.strerror or exc})") from exc
    if table.size == 0:
        raise CLIError(f"--peaks {path}: no rows; expected rows of y x or y x i j")
    if table.shape[1] not in (2, 4):
        raise CLIError(f"--peaks {path}: expected 2 columns (y x) or 4 (y x i j); "
                       f"got {table.shape[1]}")

    def row_of(rows):
        """``row N`` of the first row in ``rows`` (and its line where they differ)."""
        i = int(np.argmax(rows))
        lines = _data_lines(path)
        line = lines[i] if i < len(lines) else i + 1
        return (f"row {i + 1}" + (f" (line {line})" if line != i + 1 else "")
                + f" ({' '.join(f'{v:g}' for v in table[i])})")

    finite = np.isfinite(table).all(axis=1)
    if not finite.all():
        raise CLIError(f"--peaks {path}: {row_of(~finite)} holds NaN or infinite values; "
                       "expected finite numbers")
    rounded = np.rint(table)
    limit = _validate.PEAK_LIMIT
    beyond = (np.abs(rounded[:, :2]) > limit).any(axis=1)
    if beyond.any():
        raise CLIError(f"--peaks {path}: {row_of(beyond)} holds a position beyond +-2**30 "
                       "(centres are int32); positions y x (columns 1 and 2) must lie within "
                       "+-2**30")
    beyond = (np.abs(rounded[:, 2:]) > limit).any(axis=1)
    if beyond.any():
        raise CLIError(f"--peaks {path}: {row_of(beyond)} holds a lattice index beyond "
                       "+-2**30; lattice indices i j (columns 3 and 4) must lie within +-2**30")
    peaks = _validate.check_peaks(rounded[:, :2])
    indices = rounded[:, 2:].astype(np.int64) if table.shape[1] == 4 else None
    return peaks, indices


def _data_lines(path):
    """Line numbers (from 1) of the rows ``numpy.loadtxt`` reads from ``path`` (lines that
    hold more than a ``#`` comment)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [n for n, line in enumerate(f, 1) if line.split("#", 1)[0].strip()]


def _same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file (symbolic and hard links resolved)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_paths(input_path, out, force):
    """Before anything is computed: the input there and readable, the results file
    ``out`` not the input, in an existing, writable folder, and new unless ``force``."""
    if os.path.exists(input_path) and not os.access(input_path, os.R_OK):
        raise CLIError(f"{input_path}: not readable (permission denied)")
    for target in (out, f"{out}.partial"):  # the results are written as OUT.partial first
        if os.path.exists(input_path) and _same_file(target, input_path):
            raise CLIError(f"-o {out}: that is the input {input_path}; name another "
                           "results file")
    if os.path.isdir(out):
        raise CLIError(f"-o {out}: is a folder; name the results file, e.g. "
                       f"{os.path.join(out, 'results.h5')}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise CLIError(f"-o {out}: no such folder: {folder}")
    if os.path.exists(out) and not force:
        raise CLIError(f"{out} exists; pass --force to overwrite it")
    try:  # what the results will need: a new file in the folder (os.access ignores
        # read-only mounts and says yes to root)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".gpucorr-", suffix=".probe")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise CLIError(f"-o {out}: cannot write in {folder} ({exc.strerror or exc})") from exc


def cmd_refine(args):
    from gpucorr.io import InputError, open_frames, split_spec, write_results
    from gpucorr.lattice import fit_lattice, strain

    out = args.output or os.path.splitext(args.input.split(":")[0].rstrip("/"))[0] \
        + "-gpucorr.h5"
    check_paths(split_spec(args.input)[0], out, args.force)
    device = resolve_device(args.device)
    pattern = _pattern(args)
    try:
        frames = open_frames(args.input)
    except InputError as exc:
        raise CLIError(str(exc)) from exc
    except OSError as exc:
        raise CLIError(f"{args.input}: cannot read it ({_one_line(exc)})") from exc
    shape = tuple(frames.shape)
    cs = pattern.get_crop_size()
    if 2 * cs > min(shape[-2:]):
        raise CLIError(f"--radius {args.radius}: the {2 * cs}-px crop is larger than the "
                       f"{shape[-2]}x{shape[-1]} frames")
    try:
        peaks, indices = _peaks(args, frames, pattern)
    except OSError as exc:  # reading the frames for the sum frame
        raise CLIError(f"{args.input}: reading the frames failed ({_one_line(exc)})") from exc
    print(f"{args.input}: frames {shape} {frames.dtype}; {len(peaks)} peaks "
          f"({'indexed' if indices is not None else 'no lattice indices'}); "
          f"{type(pattern).__name__}(radius={args.radius}), mode={args.mode}, "
          f"upsample={args.upsample}, device={device}")
    memory_limit = (None if args.memory_limit is None
                    else max(1, int(min(args.memory_limit, 2.0**40) * 2**20)))
    t0 = time.perf_counter()
    try:
        res = gpucorr.refine(frames, peaks, pattern, mode=args.mode, upsample=args.upsample,
                             device=device, memory_limit=memory_limit, workers=args.workers,
                             progress=Progress("refine"))
    except (ValueError, TypeError) as exc:  # the arguments are checked: the frames are bad
        raise CLIError(f"{args.input}: {_one_line(exc)}") from exc
    except OSError as exc:  # e.g. a damaged chunk of an HDF5 file
        raise CLIError(f"{args.input}: reading the frames failed ({_one_line(exc)})") from exc
    seconds = time.perf_counter() - t0
    n = int(np.prod(shape[:-2]))
    print(f"refined {n} frames in {seconds:.2f} s = {n / seconds:.0f} frames/s")
    datasets = {"centers": res.centers, "refineds": res.refineds, "heights": res.heights,
                "elevations": res.elevations, "peaks": peaks}
    if indices is not None and len(shape) > 2:
        fit = fit_lattice(res.refineds, indices, elevations=res.elevations, weighted=True)
        st = strain(fit)
        datasets.update({"indices": indices, "lattice/zero": fit.zero, "lattice/a": fit.a,
                         "lattice/b": fit.b, "lattice/residual": fit.residual,
                         "strain/exx": st.exx, "strain/eyy": st.eyy, "strain/exy": st.exy,
                         "strain/rotation": st.rotation})
        print(f"lattice fit: median residual {float(np.nanmedian(fit.residual)):.3f} px; "
              "strain relative to the median lattice")
    write_results(out, force=args.force, datasets=datasets, attrs={
        "gpucorr_version": gpucorr.__version__, "input": args.input,
        "pattern": type(pattern).__name__, "radius": float(args.radius), "mode": args.mode,
        "upsample": int(args.upsample), "device": device,
        "peaks_source": args.peaks, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(f"wrote {out}")
    return 0


def cmd_bench(args):
    from gpucorr.patterns import RadialGradient
    from gpucorr.synthetic import cbed_frame

    rng = np.random.default_rng(0)
    clean, _, true = cbed_frame(256, 256, zero=(128.3, 127.6), a=(36.6, 2.1), b=(-2.1, 36.6),
                                radius=8, margin=16)
    frames = rng.poisson(clean[0] / clean.sum() * 2e6, size=(args.frames, 256, 256))
    frames = frames.astype(np.float32)
    peaks = np.rint(true).astype(np.int64)
    pattern = RadialGradient(radius=8)
    try:
        from libertem_blobfinder.common import correlation as lbf
        from libertem_blobfinder.common import patterns as lbf_patterns
    except ImportError:
        lbf = None
    cases = [("fast", "fast", False), ("fast-upsample20", "fast", 20), ("full", "full", False)]
    print(f"gpucorr {gpucorr.__version__} bench: {args.frames} frames 256x256 float32, "
          f"{len(peaks)} peaks, RadialGradient(radius=8), best of {args.rounds} rounds")
    print(f"CPU: {cpu_name()}")
    usable, reason = cuda_status()
    gpu = None
    if usable:
        import cupy
        gpu = next(d for d in gpucorr.devices() if d.name.startswith("cuda"))
        frames_gpu, peaks_gpu = cupy.asarray(frames), cupy.asarray(peaks)
    print(f"GPU: {gpu.name + ', ' + gpu.description if gpu else 'not used: ' + reason}")
    if lbf is None:
        print("libertem-blobfinder: not installed (pip install libertem-blobfinder)")
    print()
    print("| case | gpucorr CPU frames/s | libertem-blobfinder frames/s | ratio |"
          + (" gpucorr GPU frames/s (CuPy input) |" if gpu else ""))
    print("|---|---:|---:|---:|" + ("---:|" if gpu else ""))
    for name, mode, up in cases:
        def ours():
            gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=up)
        ours()
        t_ours = min(_timed(ours) for _ in range(args.rounds))
        row = f"| {name} | {args.frames / t_ours:.0f} |"
        if lbf is not None:
            ref_fn = lbf.process_frames_fast if mode == "fast" else lbf.process_frames_full
            ref_pattern = lbf_patterns.RadialGradient(radius=8)

            def ref():
                ref_fn(ref_pattern, frames, peaks, upsample=up)
            ref()
            t_ref = min(_timed(ref) for _ in range(args.rounds))
            row += f" {args.frames / t_ref:.0f} | {t_ref / t_ours:.2f}x |"
        else:
            row += " - | - |"
        if gpu:
            def on_gpu():
                gpucorr.refine(frames_gpu, peaks_gpu, pattern, mode=mode, upsample=up)
                cupy.cuda.get_current_stream().synchronize()
            on_gpu()
            row += f" {args.frames / min(_timed(on_gpu) for _ in range(args.rounds)):.0f} |"
        print(row)
    return 0


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cmd_info(args):
    import numba
    import scipy
    print(f"gpucorr {gpucorr.__version__} (Python {platform.python_version()}, "
          f"NumPy {np.__version__}, numba {numba.__version__}, SciPy {scipy.__version__})")
    print("backends:")
    for device in gpucorr.devices():
        kind = device.name.split(":")[0]
        state = "usable" if device.usable else "unusable"
        print(f"  {kind}: {state} - {device.name}: {device.description}")
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

def _upsample(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
    if value < 0 or value > 1000:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a factor from 2 to 1000; "
                                         f"got {value}")
    return value if value >= 2 else 0


def _positive(kind, unit=""):
    """An argparse type: a number of ``kind`` (int or float) that is > 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {'an integer' if kind is int else 'a number'}; got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0{unit}; got {text}")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # main prints "gpucorr: error: " before it
        raise CLIError(message)


def build_parser():
    parser = _Parser(prog="gpucorr", description="Find and refine diffraction-disk positions "
                     "by template correlation, fit lattices and map strain.")
    parser.add_argument("--version", action="version", version=f"gpucorr {gpucorr.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p):
        p.add_argument("--mode", choices=("fast", "full"), default="fast",
                       help="'fast': correlate crops around the peaks; 'full': whole frames")
        p.add_argument("--upsample", type=_upsample, default=20,
                       help="DFT upsampling factor, 0 for none (default 20)")
        p.add_argument("--device", default="auto",
                       help="auto (a usable GPU, else the CPU), cpu, cuda or cuda:N")
        p.add_argument("--workers", type=_positive(int), default=None,
                       help="CPU threads (on a GPU: threads reading frames)")
        p.add_argument("--force", action="store_true", help="overwrite existing results")

    p = sub.add_parser("demo", help="synthetic 4D-STEM scan with a known strain field")
    p.add_argument("--scan", type=_positive(int), default=64,
                   help="scan positions per axis (default 64)")
    p.add_argument("--out", default="gpucorr-demo", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("refine", help="refine the peaks of every frame of a file")
    p.add_argument("input", help="frames.npy, frames.npz[:name], file.h5:/path, store.zarr")
    p.add_argument("-o", "--output", help="results file (default INPUT-gpucorr.h5)")
    p.add_argument("--pattern", default="circular", help=", ".join(PATTERNS))
    p.add_argument("--radius", type=float, required=True, help="disk radius in px")
    p.add_argument("--peaks", default="auto",
                   help="'auto' (from the sum frame) or a text file of y x [i j] rows")
    p.add_argument("--num-peaks", type=_positive(int), default=100,
                   help="peaks to look for with --peaks auto")
    p.add_argument("--memory-limit", type=_positive(float, " MiB"), default=None,
                   help="scratch memory in MiB")
    common(p)
    p.set_defaults(func=cmd_refine)

    p = sub.add_parser("bench", help="time the CPU path (and libertem-blobfinder)")
    p.add_argument("--frames", type=_positive(int), default=64)
    p.add_argument("--rounds", type=_positive(int), default=3)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help="version, backends and devices")
    p.set_defaults(func=cmd_info)
    return parser


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
        print(f"gpucorr: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpucorr: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, and exit status 1
        print(f"gpucorr: error: internal error: {type(exc).__name__}: {_one_line(exc)}",
              file=sys.stderr)
        return 1
