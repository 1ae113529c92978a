"""The options of ``gpucorr refine``, read and checked before anything is computed.

It owns the pattern names (:data:`PATTERNS`), the radius (:func:`parse_radius`),
the peaks file (:func:`read_peaks`), the paths of the input, the results file and
the pictures (:func:`check_paths`, :func:`default_output`, :func:`check_plots`),
the calibration (:func:`parse_calibration`) and the strain reference
(:func:`parse_reference`, :func:`read_reference_lattice`). Each raises
:class:`~gpucorr.cli.common.CLIError` with one line saying what was given and
what is allowed.
"""
import os
import tempfile
import warnings

import numpy as np

from gpucorr.cli.common import CLIError, install_hint, one_line

__all__ = ["PATTERNS", "PLOT_FILES", "check_paths", "check_plots", "default_output",
           "parse_calibration", "parse_radius", "parse_reference", "read_peaks",
           "read_reference_lattice"]

#: pattern classes by command-line name
PATTERNS = {
    "circular": "Circular",
    "radial-gradient": "RadialGradient",
    "background-subtraction": "BackgroundSubtraction",
    "radial-gradient-background-subtraction": "RadialGradientBackgroundSubtraction",
    "disk-edge": "DiskEdge",
}


def parse_radius(text):
    """``--radius``: a number of pixels > 0, or ``"auto"`` (returned as None).

    >>> parse_radius("8"), parse_radius("auto")
    (8.0, None)
    """
    if str(text).strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise CLIError(f"--radius must be a number > 0 (disk radius in px) or auto; "
                       f"got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise CLIError(f"--radius must be a number > 0 (disk radius in px) or auto; "
                       f"got {text!r}")
    return value


def read_peaks(path):
    """Peaks (P, 2) and lattice indices (P, 2) or None from a text file of rows
    ``y x [i j]``; CLIError for anything else (NaN, positions beyond +-2**30, ...)."""
    from gpucorr import _validate
    if not os.path.exists(path):
        raise CLIError(f"--peaks: no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(path, ndmin=2, delimiter=None)
    except ValueError as exc:
        raise CLIError(f"--peaks {path}: not a table of numbers ({one_line(exc)})") from exc
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


def _inside(path, folder):
    """Whether ``path`` lies inside the folder ``folder`` (links resolved)."""
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def check_paths(input_path, out, force, others=()):
    """Before anything is computed: the input there and readable, the results file
    ``out`` neither the input nor inside it (a zarr store) nor one of the ``others``
    (name, path) the command reads, in an existing, writable folder, and new unless
    ``force``."""
    if os.path.exists(input_path) and not os.access(input_path, os.R_OK):
        raise CLIError(f"{input_path}: not readable (permission denied)")
    for name, path in (("the input", input_path), *others):
        if not os.path.exists(path):
            continue
        if _same_file(out, path):
            raise CLIError(f"-o {out}: that is {name} {path}; name another results file")
        if os.path.isdir(path) and _inside(out, path):
            raise CLIError(f"-o {out}: that is inside {name} {path}; name a results file "
                           "outside it")
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


def parse_calibration(args):
    """``--pixel-size`` and ``--scan-step`` as a Calibration (values None where not given)."""
    from gpucorr.calibration import Calibration
    try:
        pixel = Calibration(pixel_size=args.pixel_size) if args.pixel_size else Calibration()
    except ValueError as exc:
        raise CLIError("--" + one_line(exc).replace("_", "-", 1)) from None
    try:
        scan = Calibration(scan_step=args.scan_step) if args.scan_step else Calibration()
    except ValueError as exc:
        raise CLIError("--" + one_line(exc).replace("_", "-", 1)) from None
    return pixel.update(scan)


def parse_reference(args):
    """``--reference`` as a tuple of slices (or None); syntax only, checked before computing."""
    from gpucorr.lattice import parse_region
    if args.reference is None:
        return None
    try:
        return parse_region(args.reference)
    except ValueError:
        raise CLIError(f"--reference must be start:stop per scan axis, separated by commas "
                       f"(e.g. 0:10,0:64); got {args.reference!r}") from None


def read_reference_lattice(text, calibration):
    """``--reference-lattice``: ``(a0, b0)`` in pixels, each (y, x), from numbers or a file.

    ``text`` is a file (a text file of two rows ``y x``, a0 then b0, in pixels;
    or a gpucorr results file, whose median lattice is taken), or four numbers
    ``a0y,a0x,b0y,b0x`` (commas or spaces) in pixels, or followed by a unit
    (``1/nm``, ``1/Å``, ``mrad``), converted with the pixel size.

    >>> from gpucorr.calibration import Calibration
    >>> read_reference_lattice("0,25,24,0", Calibration())
    ((0.0, 25.0), (24.0, 0.0))
    >>> read_reference_lattice("0 0.5 0.48 0 1/nm", Calibration("0.02/nm"))
    ((0.0, 25.0), (24.0, 0.0))
    """
    option = "--reference-lattice"
    if os.path.isfile(text):
        if text.lower().endswith(tuple(_HDF5_RESULTS)):
            vectors = _lattice_of_results(text)
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    table = np.loadtxt(text, ndmin=2)
            except (ValueError, OSError) as exc:
                raise CLIError(f"{option} {text}: not a table of numbers "
                               f"({one_line(exc)})") from exc
            if table.shape != (2, 2):
                raise CLIError(f"{option} {text}: expected two rows y x (a0, then b0, in px); "
                               f"got a table of shape {table.shape}")
            vectors = table
    else:
        words = text.replace(",", " ").split()
        unit = None
        if len(words) == 5 and not _is_number(words[-1]):
            unit = words.pop()
        try:
            values = np.array([float(w) for w in words])
        except ValueError:
            values = None
        if values is None or values.shape != (4,):
            raise CLIError(f"{option} must be a file or four numbers a0y,a0x,b0y,b0x (px, or "
                           f"followed by a unit: 1/nm, 1/Å or mrad); got {text!r}")
        if unit is not None:
            try:
                values = calibration.to_pixels(values, unit)
            except ValueError as exc:
                raise CLIError(f"{option} {text!r}: {one_line(exc)}".replace(
                    "give one (e.g. pixel_size='0.02/nm')", "give --pixel-size")) from None
        vectors = values.reshape(2, 2)
    if not np.all(np.isfinite(vectors)):
        raise CLIError(f"{option} {text}: the vectors must be finite; got {vectors.tolist()}")
    a0, b0 = (tuple(float(v) for v in row) for row in vectors)
    if abs(a0[0] * b0[1] - a0[1] * b0[0]) <= 1e-12 * (np.dot(a0, a0) + np.dot(b0, b0)):
        raise CLIError(f"{option} {text}: a0 = {a0} and b0 = {b0} are parallel")
    return a0, b0


_HDF5_RESULTS = (".h5", ".hdf5", ".hdf", ".nxs")


def _is_number(word):
    try:
        float(word)
        return True
    except ValueError:
        return False


def _lattice_of_results(path):
    """The median lattice vectors (a, b) of a gpucorr results file (a reference scan)."""
    try:
        import h5py
        with h5py.File(path, "r") as f:
            if "lattice/a" not in f or "lattice/b" not in f:
                raise CLIError(f"--reference-lattice {path}: no lattice/a and lattice/b in "
                               "the file; name a gpucorr results file with a lattice fit")
            a = np.asarray(f["lattice/a"], dtype=np.float64).reshape(-1, 2)
            b = np.asarray(f["lattice/b"], dtype=np.float64).reshape(-1, 2)
    except OSError as exc:
        raise CLIError(f"--reference-lattice {path}: not a readable HDF5 file "
                       f"({one_line(exc)})") from exc
    good = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if not good.any():
        raise CLIError(f"--reference-lattice {path}: its lattice fit holds no finite vectors")
    return np.stack([np.median(a[good], axis=0), np.median(b[good], axis=0)])


def default_output(spec):
    """The results file of input ``spec``: its name with the extension and inner path kept.

    >>> default_output("scan.npy"), default_output("scan.h5:/entry/data")
    ('scan_npy-gpucorr.h5', 'scan_h5_entry_data-gpucorr.h5')
    >>> default_output("data/store.zarr/")
    'data/store_zarr-gpucorr.h5'
    """
    from gpucorr.io import split_spec
    path, inner = split_spec(spec)
    stem, ext = os.path.splitext(path.rstrip("/"))
    parts = [stem] + ([ext[1:]] if ext else [])
    if inner:
        parts += [p for p in inner.strip("/").split("/") if p]
    return "_".join(parts) + "-gpucorr.h5"


#: the files gpucorr.plots.save_plots may write
PLOT_FILES = ("strain_maps.png", "strain_error.png", "context.png", "frame_overlay.png")


def check_plots(directory, force, out=None):
    """``--plots DIR``: a folder (made if missing, in an existing folder) whose pictures
    are new unless ``force``, and neither the results file ``out`` nor holding it."""
    if directory is None:
        return
    if out is not None:
        pictures = {os.path.realpath(os.path.join(directory, n)) for n in PLOT_FILES}
        if os.path.realpath(out) == os.path.realpath(directory):
            raise CLIError(f"--plots {directory}: that is the results file (-o {out}); name "
                           "another folder for the pictures")
        if os.path.realpath(out) in pictures:
            raise CLIError(f"--plots {directory}: a picture would overwrite the results file "
                           f"-o {out}; name another folder or results file")
    import importlib.util
    if importlib.util.find_spec("matplotlib") is None:
        raise CLIError(f"--plots needs matplotlib: {install_hint('cli')}")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CLIError(f"--plots {directory}: is a file; name a folder for the pictures")
    parent = os.path.dirname(os.path.abspath(directory))
    if not os.path.isdir(parent):
        raise CLIError(f"--plots {directory}: no such folder: {parent}")
    existing = [n for n in PLOT_FILES if os.path.exists(os.path.join(directory, n))]
    if existing and not force:
        raise CLIError(f"--plots {directory}: {', '.join(existing)} exist; pass --force to "
                       "overwrite them")


def memory_limit_bytes(args):
    """``--memory-limit`` (MiB) in bytes for :func:`gpucorr.refine`; None where not given."""
    if args.memory_limit is None:
        return None
    return max(1, int(min(args.memory_limit, 2.0**40) * 2**20))
