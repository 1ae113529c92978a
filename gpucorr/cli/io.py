"""Reading frame stacks from files and writing results files.

Inputs are opened lazily: ``.npy`` as a memmap, HDF5 and zarr as datasets,
so :func:`gpucorr.refine` reads them chunk by chunk; ``open_frames(...,
metadata=True)`` also returns the :class:`~gpucorr.calibration.Calibration`
the file records (HDF5 attributes, EMD dimensions, rosettasciio axes).
Results go to HDF5 (:func:`write_results`) with attributes on the file, on
each dataset and on groups; what they hold is :mod:`gpucorr.cli.results`.
"""
import os
import tempfile

import numpy as np

__all__ = ["InputError", "OutputError", "open_frames", "write_results", "split_spec"]

_HDF5 = (".h5", ".hdf5", ".hdf", ".nxs", ".emd", ".cxi")


class InputError(ValueError):
    """An input file or dataset that cannot be used, with a message for the user."""


class OutputError(OSError):
    """A results file that could not be written, with a message for the user."""


def split_spec(spec):
    """``"file.h5:/path/in/file"`` -> ``("file.h5", "/path/in/file")``; no ``:`` -> None.

    >>> split_spec("scan.h5:/entry/data")
    ('scan.h5', '/entry/data')
    >>> split_spec("frames.npy")
    ('frames.npy', None)
    """
    spec = os.fspath(spec)
    path, sep, inner = spec.partition(":")
    if sep and path and not os.path.exists(spec):
        return path, inner or None
    return spec, None


def _datasets(group, h5py):
    found = []
    group.visititems(lambda name, obj: found.append(name)
                     if isinstance(obj, h5py.Dataset) and obj.ndim >= 2 else None)
    return found


def _hdf5_calibration(obj):
    """The Calibration an h5py dataset's attributes (and its groups') or EMD dims record."""
    from gpucorr.calibration import Calibration
    attrs, group, chain = {}, obj.parent, []
    while True:  # the file's attributes first, the dataset's last (nearest wins)
        chain.append(group)
        if group.name == "/":
            break
        group = group.parent
    for g in reversed(chain):
        attrs.update(g.attrs)
    attrs.update(obj.attrs)
    axes = None
    parent = obj.parent
    dims = [parent.get(f"dim{i + 1}") for i in range(obj.ndim)]
    if "emd_group_type" in parent.attrs and all(d is not None and d.ndim == 1 and len(d) > 1
                                                 for d in dims):
        axes = [{"scale": float(d[1] - d[0]), "units": _text(d.attrs.get("units", "")),
                 "navigate": i < obj.ndim - 2} for i, d in enumerate(dims)]
    return Calibration.from_metadata(attrs, axes=axes)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _open_hdf5(path, inner):
    try:
        import h5py
    except ImportError as exc:
        raise InputError("reading HDF5 needs h5py: pip install h5py") from exc
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if inner is None:
        candidates = _datasets(f, h5py)
        if len(candidates) != 1:
            f.close()
            listed = ", ".join("/" + c for c in candidates[:10]) or "none"
            raise InputError(f"{path}: name the dataset as {path}:/path/to/dataset "
                             f"(datasets with 2 or more dimensions: {listed})")
        inner = candidates[0]
    if inner not in f:
        f.close()
        raise InputError(f"{path}: no dataset {inner!r} in the file")
    obj = f[inner]
    if not isinstance(obj, h5py.Dataset):
        f.close()
        raise InputError(f"{path}:{inner} is a group, not a dataset")
    return obj


def _open_zarr(path, inner):
    try:
        import zarr
    except ImportError as exc:
        raise InputError("reading zarr needs zarr: pip install zarr") from exc
    try:
        obj = zarr.open(path, mode="r")
    except Exception as exc:
        raise InputError(f"{path}: not a readable zarr store ({exc})") from exc
    if inner is not None:
        try:
            obj = obj[inner.strip("/")]
        except KeyError as exc:
            raise InputError(f"{path}: no array {inner!r} in the store") from exc
    if not hasattr(obj, "dtype"):
        raise InputError(f"{path}: name the array as {path}:path/to/array "
                         f"(the store root is a group)")
    return obj


def _open_rosettasciio(path):
    try:
        from rsciio import IO_PLUGINS
    except ImportError:
        return None
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    import importlib
    for plugin in IO_PLUGINS:
        if ext in [e.lower() for e in plugin.get("file_extensions", [])]:
            reader = importlib.import_module(plugin["api"]).file_reader
            signals = reader(path, lazy=True)
            return signals[0]["data"], signals[0].get("axes")
    return None


def open_frames(spec, *, metadata=False):
    """Open a stack of frames (..., H, W) for reading, without loading it.

    Parameters
    ----------
    spec : str or path
        ``frames.npy`` (memory-mapped), ``frames.npz[:name]``,
        ``file.h5:/path/to/dataset`` (the path may be left out if the file has
        a single dataset of 2 or more dimensions), ``store.zarr[:path]``, or,
        with rosettasciio installed, a detector file it reads.
    metadata : bool
        Also return the calibration the file records.

    Returns
    -------
    array-like (..., H, W)
        Or ``(frames, calibration)`` with ``metadata=True``, ``calibration`` a
        :class:`~gpucorr.calibration.Calibration` read from the HDF5
        attributes of the dataset, its groups and the file (``pixel_size`` +
        ``pixel_unit``, ``scan_step`` + ``scan_unit``, py4DSTEM's
        ``Q_pixel_size``/``R_pixel_size``), EMD ``dimN`` datasets, or
        rosettasciio's axes; unknown values are None.

    Raises
    ------
    InputError
        Missing file, unknown format, missing or ambiguous dataset, or data
        that is not a stack of 2-D frames.
    """
    from gpucorr.calibration import Calibration
    path, inner = split_spec(spec)
    if not os.path.exists(path):
        raise InputError(f"no such file: {path}")
    lower = path.lower().rstrip("/")
    calibration = Calibration()
    if lower.endswith(".npy"):
        try:
            data = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise InputError(f"{path}: not a readable .npy file ({exc})") from exc
    elif lower.endswith(".npz"):
        archive = np.load(path)
        names = list(archive.keys())
        if inner is None and len(names) != 1:
            raise InputError(f"{path}: name the array as {path}:NAME (arrays: {', '.join(names)})")
        name = inner or names[0]
        if name not in names:
            raise InputError(f"{path}: no array {name!r} (arrays: {', '.join(names)})")
        data = archive[name]
    elif lower.endswith(_HDF5):
        data = _open_hdf5(path, inner)
        if metadata:
            calibration = _hdf5_calibration(data)
    elif lower.endswith(".zarr") or os.path.isdir(path):
        data = _open_zarr(path, inner)
    else:
        opened = _open_rosettasciio(path)
        if opened is None:
            raise InputError(
                f"{path}: unknown format; gpucorr reads .npy, .npz, HDF5 ({', '.join(_HDF5)}) "
                "and .zarr, and other detector formats when rosettasciio is installed")
        data, axes = opened
        if metadata and axes:
            calibration = Calibration.from_metadata(axes=list(axes))
    if len(data.shape) < 2:
        raise InputError(f"{spec}: expected frames (..., H, W); got shape {tuple(data.shape)}")
    if np.dtype(data.dtype).kind not in "iuf":
        raise InputError(f"{spec}: expected real-valued frames; got dtype {data.dtype}")
    return (data, calibration) if metadata else data


def write_results(path, *, datasets, attrs, force=False, dataset_attrs=None, groups=None,
                  links=None):
    """Write ``datasets`` (name -> array, ``/`` makes groups) and ``attrs`` to HDF5.

    ``dataset_attrs`` (name -> dict) are attributes of the datasets, ``groups``
    (name -> dict) groups and their attributes, ``links`` (name -> path in the
    file) soft links, made last.

    Refuses to replace an existing file unless ``force``. The file is written
    under a new name of its own in ``path``'s folder (``.NAME.<random>.partial``,
    so no other file is touched) and renamed to ``path`` once complete; on any
    failure (a full disk, a file-size limit, an interrupt) the partial file is
    removed and ``path`` is left as it was.

    Raises
    ------
    FileExistsError
        ``path`` exists and not ``force``.
    OutputError
        Writing failed (h5py raises ``OSError`` or, on close, ``RuntimeError``).
    """
    import h5py
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    folder, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
    except OSError as exc:
        raise OutputError(f"{path}: could not write the results "
                          f"({exc.strerror or exc})") from exc
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for name, value in datasets.items():
                ds = f.create_dataset(name, data=np.asarray(value))
                for key, item in (dataset_attrs or {}).get(name, {}).items():
                    ds.attrs[key] = item
            for name, group_attrs in (groups or {}).items():
                group = f.require_group(name)
                for key, item in group_attrs.items():
                    group.attrs[key] = item
            for name, target in (links or {}).items():
                f[name] = h5py.SoftLink(target)
            for key, value in attrs.items():
                f.attrs[key] = value
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        except OSError:  # keep the first error
            pass
        if isinstance(exc, (OSError, RuntimeError)):
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise OutputError(f"{path}: could not write the results ({detail})") from exc
        raise
