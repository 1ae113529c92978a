"""What a results file holds, and what each of its datasets says about itself.

:class:`Results` collects the arrays of a run (``add``), each with its
``units``, ``axes`` (names of its dimensions, e.g. ``"scan_y, scan_x, peak,
yx"``) and a one-line ``description``, and writes them with
:func:`gpucorr.io.write_results`. On the file: the gpucorr version, the
parameters, the device, the calibration and the strain reference.

The file is plain HDF5 (h5py alone reads everything). The 2-D maps of a scan
are also NeXus ``NXdata`` groups under ``/signals`` (soft links to the
datasets and to the scan coordinates ``/scan_y`` and ``/scan_x``, which carry
the scan step and its unit), so that ``rsciio.nexus.file_reader(path,
nxdata_only=True)`` and ``hyperspy.api.load(path, reader="NeXus",
nxdata_only=True)`` read them as calibrated 2-D signals.
"""
import json
import time

import numpy as np

import gpucorr

__all__ = ["Results", "scan_axis_names", "DIMENSIONLESS"]

#: the ``units`` of a ratio (strain) or a count
DIMENSIONLESS = "dimensionless"
#: the ``units`` of values on the scale of the frames or of correlation maps
ARBITRARY = "a.u."


def scan_axis_names(lead):
    """Names of the scan axes of leading shape ``lead``.

    >>> scan_axis_names((4, 5)), scan_axis_names((7,)), scan_axis_names(())
    (('scan_y', 'scan_x'), ('frame',), ())
    """
    if len(lead) == 2:
        return ("scan_y", "scan_x")
    if len(lead) == 1:
        return ("frame",)
    return tuple(f"scan_{i}" for i in range(len(lead)))


class Results:
    """Datasets of a results file with their attributes; :meth:`write` writes them.

    Parameters
    ----------
    lead : tuple of int
        The scan shape (the leading axes of the frames).
    calibration : gpucorr.calibration.Calibration
        Written on the file, and the scan coordinates ``/scan_y``, ``/scan_x``.

    Examples
    --------
    >>> from gpucorr.calibration import Calibration
    >>> r = Results((2, 3), Calibration(scan_step="2nm"))
    >>> r.add("maps/vbf", np.zeros((2, 3)), "a.u.", "scan", "virtual bright field")
    >>> r.attrs_of["maps/vbf"]["axes"]
    'scan_y, scan_x'
    >>> r.datasets["scan_x"].tolist(), r.attrs_of["scan_x"]["units"]
    ([0.0, 2.0, 4.0], 'nm')
    """

    def __init__(self, lead, calibration):
        self.lead = tuple(int(n) for n in lead)
        self.calibration = calibration
        self.scan_axes = scan_axis_names(self.lead)
        self.datasets, self.attrs_of = {}, {}
        self.signals = []
        if len(self.lead) == 2:
            known = calibration.scan_step is not None
            for name, size in zip(self.scan_axes, self.lead):
                self.add(name, calibration.scan_axis(size),
                         calibration.scan_unit if known else "", name,
                         f"{name[5:]} coordinate of each scan position: "
                         + ("index * scan step" if known else "the index (no scan step known)"))

    def add(self, name, data, units, axes, description, **extra):
        """Add dataset ``name``; ``axes`` may start with ``"scan"`` for the scan axes.

        ``extra`` are further attributes of the dataset. A 2-D map of a 2-D
        scan (``axes == "scan"``) also becomes a NeXus signal.
        """
        names = [a.strip() for a in axes.split(",") if a.strip()]
        if names[:1] == ["scan"]:
            names = list(self.scan_axes) + names[1:]
            if len(names) == 2 and len(self.lead) == 2:
                self.signals.append(name)
        self.datasets[name] = np.asarray(data)
        self.attrs_of[name] = {"units": units, "axes": ", ".join(names),
                               "description": description, **extra}

    def write(self, path, *, attrs, force):
        """Write the file (``attrs`` on the file, with the calibration and the version)."""
        from gpucorr.io import write_results
        groups, links = {}, {}
        if self.signals:
            groups["signals"] = {
                "NX_class": "NXcollection",
                "description": "the 2-D maps as NeXus NXdata groups (soft links): read them "
                               "with rsciio.nexus.file_reader(path, nxdata_only=True)"}
        for name in self.signals:
            short = name.replace("/", "_")
            group = f"signals/{short}"
            groups[group] = {"NX_class": "NXdata", "signal": short,
                             "axes": np.array(self.scan_axes, dtype=object),
                             "scan_y_indices": 0, "scan_x_indices": 1,
                             "title": self.attrs_of[name]["description"]}
            links[f"{group}/{short}"] = f"/{name}"
            for axis in self.scan_axes:
                links[f"{group}/{axis}"] = f"/{axis}"
        cal = self.calibration
        file_attrs = {"gpucorr_version": gpucorr.__version__,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      **attrs,
                      "calibration": cal.describe(), **cal.attrs(),
                      "layout": "each dataset has attributes units, axes (names of its "
                                "dimensions) and description; yx = (y, x) in detector pixels "
                                "unless units say otherwise"}
        for key, value in list(file_attrs.items()):
            if value is None:
                del file_attrs[key]
            elif isinstance(value, (dict, list, tuple)):
                file_attrs[key] = json.dumps(value)
        write_results(path, datasets=self.datasets, attrs=file_attrs, force=force,
                      dataset_attrs=self.attrs_of, groups=groups, links=links)


def add_refine_result(results, res, peaks, indices):
    """The arrays of a :class:`gpucorr.RefineResult` and the peaks refined."""
    results.add("centers", res.centers, "px", "scan, peak, yx",
                "integer (y, x) detector position of each correlation maximum")
    results.add("refineds", res.refineds, "px", "scan, peak, yx",
                "refined (y, x) detector position of each peak")
    results.add("heights", res.heights, ARBITRARY, "scan, peak",
                "correlation maximum of each peak (log-scaled frame)")
    results.add("elevations", res.elevations, ARBITRARY, "scan, peak",
                "peak elevation: slope of the tightest cone under the correlation maximum, "
                "a quality score (higher is better)")
    results.add("peaks", peaks, "px", "peak, yx",
                "the approximate (y, x) positions refined in every frame")
    if indices is not None:
        results.add("indices", indices, DIMENSIONLESS, "peak, ij",
                    "lattice indices (i, j) of each peak: position = zero + i * a + j * b")


def add_lattice(results, fit, indices, refineds=None):
    """The lattice fit, with vectors (and positions about the zero) in physical units."""
    cal = results.calibration
    results.add("lattice/zero", fit.zero, "px", "scan, yx",
                "fitted lattice origin (the (0, 0) disk) of each frame, (y, x)")
    results.add("lattice/a", fit.a, "px", "scan, yx", "fitted lattice vector a, (y, x)")
    results.add("lattice/b", fit.b, "px", "scan, yx", "fitted lattice vector b, (y, x)")
    results.add("lattice/residual", fit.residual, "px", "scan",
                "weighted RMS distance of the refined peaks from the fitted lattice")
    results.add("lattice/n_used", fit.n_used, DIMENSIONLESS, "scan",
                "number of peaks that entered the fit of each frame")
    if cal.pixel_size is not None:
        unit = cal.pixel_unit
        what = "reciprocal-lattice vector" if unit == "1/nm" else "scattering-angle vector"
        results.add("lattice/a_calibrated", cal.reciprocal(fit.a), unit, "scan, yx",
                    f"lattice vector a in {unit}: a * pixel size ({what})")
        results.add("lattice/b_calibrated", cal.reciprocal(fit.b), unit, "scan, yx",
                    f"lattice vector b in {unit}: b * pixel size ({what})")
        if refineds is not None:
            results.add("refineds_calibrated",
                        cal.reciprocal(refineds, origin=np.asarray(fit.zero)[..., None, :]),
                        unit, "scan, peak, yx",
                        f"reciprocal-space (y, x) position of each peak in {unit}: "
                        "(refined - lattice zero of its frame) * pixel size")


def add_strain(results, st, reference_text, prefix="strain"):
    """The strain maps and the reference lattice they are relative to."""
    for name, what in (("exx", "normal strain along x"), ("eyy", "normal strain along y"),
                       ("exy", "shear strain (tensor component, half the engineering shear)")):
        results.add(f"{prefix}/{name}", getattr(st, name), DIMENSIONLESS, "scan",
                    f"{what} of the crystal (real space; from the diffraction lattice by "
                    f"gpucorr.lattice.crystal_strain), relative to {reference_text}")
    results.add(f"{prefix}/rotation", st.rotation, "rad", "scan",
                f"lattice rotation, positive from +x towards +y, relative to {reference_text}")
    a0, b0 = (np.asarray(v, dtype=np.float64) for v in st.reference)
    results.add(f"{prefix}/reference", np.stack([a0, b0]), "px", "vector, yx",
                f"the reference diffraction lattice vectors a0, b0 (rows), (y, x): "
                f"{reference_text}")
