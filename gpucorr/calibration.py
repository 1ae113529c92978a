"""Physical units for detector pixels and scan positions: :class:`Calibration`.

gpucorr computes in pixels: peak positions and lattice vectors are ``(y, x)``
detector pixels, maps are indexed by scan position. A :class:`Calibration`
holds the two numbers that turn them into physical units:

- ``pixel_size``: the reciprocal-space size of one detector pixel, in ``1/nm``
  (spatial frequency) or ``mrad`` (scattering angle);
- ``scan_step``: the distance between neighbouring scan positions, in ``nm``.

Either may be ``None`` (unknown). Strain is a ratio of lengths and stays
dimensionless whatever the calibration. :func:`parse_quantity` reads the
strings of the command line (``"0.02/nm"``, ``"0.02 1/nm"``, ``"0.5mrad"``,
``"2nm"``); :meth:`Calibration.from_metadata` reads HDF5 attributes and
rosettasciio/HyperSpy axes (with :mod:`gpucorr._calibration_metadata`).

Backends
--------
NumPy on the host; the conversions take any array that NumPy can read.
"""
import math
import numbers
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration", "parse_quantity", "PIXEL_UNITS", "SCAN_UNITS"]

#: reciprocal-space units a pixel size may be given in -> (unit kept, factor to it)
PIXEL_UNITS = {
    "1/nm": ("1/nm", 1.0), "/nm": ("1/nm", 1.0), "nm^-1": ("1/nm", 1.0),
    "nm-1": ("1/nm", 1.0), "1/a": ("1/nm", 10.0), "/a": ("1/nm", 10.0),
    "1/å": ("1/nm", 10.0), "/å": ("1/nm", 10.0), "a^-1": ("1/nm", 10.0),
    "å^-1": ("1/nm", 10.0), "1/angstrom": ("1/nm", 10.0),
    "mrad": ("mrad", 1.0), "rad": ("mrad", 1000.0), "urad": ("mrad", 1e-3),
    "µrad": ("mrad", 1e-3),
}
#: real-space units a scan step may be given in -> (unit kept, factor to it)
SCAN_UNITS = {
    "nm": ("nm", 1.0), "a": ("nm", 0.1), "å": ("nm", 0.1), "angstrom": ("nm", 0.1),
    "pm": ("nm", 1e-3), "um": ("nm", 1e3), "µm": ("nm", 1e3), "μm": ("nm", 1e3),
}

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def _units_of(kind):
    return PIXEL_UNITS if kind == "pixel" else SCAN_UNITS


def _allowed(kind):
    return "1/nm, 1/Å or mrad" if kind == "pixel" else "nm, Å, pm or µm"


def _normalise_unit(unit, kind, name):
    """``(unit, factor)``: the unit gpucorr keeps and the factor from ``unit`` to it."""
    key = str(unit).strip().lower().replace(" ", "").replace("\u212b", "å")
    table = _units_of(kind)
    if key not in table:
        raise ValueError(f"{name}: unknown unit {unit!r}; allowed: {_allowed(kind)}")
    return table[key]


def parse_quantity(text, kind="pixel", name=None):
    """A number with a unit, e.g. ``"0.02/nm"``, as ``(value, unit)`` in gpucorr's units.

    Parameters
    ----------
    text : str
        A positive finite number followed by its unit, with or without a space:
        ``"0.02/nm"``, ``"0.02 1/nm"``, ``"0.2 1/Å"``, ``"0.5mrad"`` (``kind="pixel"``);
        ``"2nm"``, ``"2 nm"``, ``"15 Å"`` (``kind="scan"``).
    kind : {"pixel", "scan"}
        A detector pixel size (reciprocal units: ``1/nm``, ``1/Å``, ``mrad``,
        ``rad``) or a scan step (lengths: ``nm``, ``Å``, ``pm``, ``µm``).
    name : str, optional
        How errors name the value (default ``"pixel_size"`` or ``"scan_step"``).

    Returns
    -------
    (float, str)
        The value converted to ``1/nm`` or ``mrad`` (pixel sizes) or ``nm``
        (scan steps), and that unit.

    Raises
    ------
    ValueError
        No number, a number that is not finite and > 0, no unit, or an unknown unit.

    Examples
    --------
    >>> parse_quantity("0.02/nm")
    (0.02, '1/nm')
    >>> parse_quantity("0.5 mrad")
    (0.5, 'mrad')
    >>> parse_quantity("15 Å", kind="scan")
    (1.5, 'nm')
    """
    if kind not in ("pixel", "scan"):
        raise ValueError(f"kind must be 'pixel' or 'scan'; got {kind!r}")
    name = name or ("pixel_size" if kind == "pixel" else "scan_step")
    match = _QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"{name}: expected a number and a unit ({_allowed(kind)}), e.g. "
                         f"{'0.02/nm' if kind == 'pixel' else '2nm'}; got {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: must be a finite number > 0; got {text!r}")
    if not unit:
        raise ValueError(f"{name}: give a unit ({_allowed(kind)}), e.g. "
                         f"{'0.02/nm' if kind == 'pixel' else '2nm'}; got {text!r}")
    if unit.startswith("/") or unit.lower().startswith("1/"):
        unit = "1/" + unit.split("/", 1)[1].strip()
    kept, factor = _normalise_unit(unit, kind, name)
    return value * factor, kept


def _check_size(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number > 0 or None; got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0 or None; got {value}")
    return value


def _size_and_unit(size, unit, kind, name):
    """``(size, unit)`` of a Calibration field in gpucorr's units (size None where unknown)."""
    if isinstance(size, str):
        return parse_quantity(size, kind, name)
    size = _check_size(size, name)
    kept, factor = _normalise_unit(unit, kind, f"{kind}_unit")
    return (None if size is None else size * factor), kept


@dataclass(frozen=True)
class Calibration:
    """Detector pixel size and scan step: pixels and scan positions in physical units.

    Parameters
    ----------
    pixel_size : float or str, optional
        Reciprocal-space size of one detector pixel (> 0), in ``pixel_unit``;
        or a string with its unit such as ``"0.02/nm"`` or ``"0.5 mrad"``
        (see :func:`parse_quantity`). ``None``: unknown (default).
    pixel_unit : {"1/nm", "mrad"}
        Unit of a numeric ``pixel_size`` (``1/Å`` and ``rad`` are converted to
        ``1/nm`` and ``mrad``).
    scan_step : float or str, optional
        Distance between neighbouring scan positions (> 0), the same along y
        and x, in ``scan_unit``; or a string such as ``"2nm"``. ``None``: unknown.
    scan_unit : str
        Unit of a numeric ``scan_step`` (default ``"nm"``; ``Å``, ``pm`` and
        ``µm`` are converted to nm).

    Attributes
    ----------
    pixel_size, scan_step : float or None
        In ``pixel_unit`` (``"1/nm"`` or ``"mrad"``) and ``scan_unit`` (``"nm"``).

    Raises
    ------
    ValueError
        A size that is not finite and > 0, or an unknown unit.
    TypeError
        A size that is not a number, a string or None.

    Notes
    -----
    A ``pixel_size`` in ``1/nm`` makes lattice vectors reciprocal-lattice
    vectors ``g`` (their length ``|g|`` is ``1/d`` of the lattice planes); in
    ``mrad`` they are scattering angles (``|g| * wavelength``). Strain is a
    ratio and does not change with the calibration.

    Backends: NumPy on the host.

    Examples
    --------
    >>> cal = Calibration("0.02/nm", scan_step="2nm")
    >>> cal
    Calibration(pixel_size=0.02, pixel_unit='1/nm', scan_step=2.0, scan_unit='nm')
    >>> cal.reciprocal([[0.0, 25.0], [20.0, 0.0]]).tolist()   # lattice vectors a, b in 1/nm
    [[0.0, 0.5], [0.4, 0.0]]
    >>> cal.scan_axis(3).tolist()                               # scan positions in nm
    [0.0, 2.0, 4.0]
    >>> Calibration().reciprocal([1.0, 2.0]) is None             # not calibrated
    True
    """

    pixel_size: float = None
    pixel_unit: str = "1/nm"
    scan_step: float = None
    scan_unit: str = "nm"

    def __post_init__(self):
        pixel_size, pixel_unit = _size_and_unit(self.pixel_size, self.pixel_unit, "pixel",
                                                "pixel_size")
        scan_step, scan_unit = _size_and_unit(self.scan_step, self.scan_unit, "scan",
                                              "scan_step")
        object.__setattr__(self, "pixel_size", pixel_size)
        object.__setattr__(self, "pixel_unit", pixel_unit)
        object.__setattr__(self, "scan_step", scan_step)
        object.__setattr__(self, "scan_unit", scan_unit)

    # ------------------------------------------------------------------ conversions

    def reciprocal(self, pixels, origin=None):
        """Detector ``(y, x)`` pixel vectors or positions in ``pixel_unit``; None if uncalibrated.

        Parameters
        ----------
        pixels : array_like (..., 2)
            Vectors (e.g. lattice vectors ``a``, ``b``) or positions in pixels.
        origin : array_like (..., 2), optional
            Subtracted first, so that positions become reciprocal-space
            coordinates about it (e.g. the lattice zero, the direct beam);
            broadcast against ``pixels``.

        Returns
        -------
        float64 ndarray (..., 2) or None
            ``(pixels - origin) * pixel_size``; None where ``pixel_size`` is None.

        Examples
        --------
        >>> Calibration(0.5, "mrad").reciprocal([[10.0, 14.0]], origin=[10.0, 10.0]).tolist()
        [[0.0, 2.0]]
        """
        if self.pixel_size is None:
            return None
        values = np.asarray(pixels, dtype=np.float64)
        if origin is not None:
            values = values - np.asarray(origin, dtype=np.float64)
        return values * self.pixel_size

    def to_pixels(self, values, unit):
        """Reciprocal-space ``values`` in ``unit`` (e.g. ``"1/nm"``) as detector pixels.

        Raises
        ------
        ValueError
            No pixel size, an unknown unit, or ``1/nm`` asked of a calibration
            in ``mrad`` (or the other way round: that needs the wavelength).

        Examples
        --------
        >>> Calibration("0.02/nm").to_pixels([0.5, 0.0], "1/nm").tolist()
        [25.0, 0.0]
        """
        kept, factor = _normalise_unit(unit, "pixel", "unit")
        if self.pixel_size is None:
            raise ValueError(f"values in {unit} need a pixel size to become pixels; "
                             "give one (e.g. pixel_size='0.02/nm')")
        if kept != self.pixel_unit:
            raise ValueError(f"values in {unit} cannot be compared with a pixel size in "
                             f"{self.pixel_unit} (that needs the electron wavelength); give "
                             f"them in {self.pixel_unit}")
        return np.asarray(values, dtype=np.float64) * factor / self.pixel_size

    def scan_axis(self, size):
        """Coordinates of ``size`` scan positions along one axis, in ``scan_unit``.

        ``index * scan_step`` (from 0); the indices themselves (float64) where
        ``scan_step`` is None.

        >>> Calibration().scan_axis(2).tolist()
        [0.0, 1.0]
        """
        index = np.arange(int(size), dtype=np.float64)
        return index if self.scan_step is None else index * self.scan_step

    @property
    def calibrated(self):
        """Whether either the pixel size or the scan step is known."""
        return self.pixel_size is not None or self.scan_step is not None

    def attrs(self):
        """The calibration as HDF5 attributes (keys left out where unknown).

        >>> Calibration("0.02/nm").attrs()
        {'pixel_size': 0.02, 'pixel_unit': '1/nm'}
        """
        out = {}
        if self.pixel_size is not None:
            out.update(pixel_size=self.pixel_size, pixel_unit=self.pixel_unit)
        if self.scan_step is not None:
            out.update(scan_step=self.scan_step, scan_unit=self.scan_unit)
        return out

    def describe(self):
        """One line for people, e.g. ``'pixel 0.02 1/nm, scan step 2 nm'``.

        >>> Calibration(scan_step=2).describe()
        'pixel size unknown (px), scan step 2 nm'
        """
        pixel = (f"pixel {self.pixel_size:g} {self.pixel_unit}" if self.pixel_size is not None
                 else "pixel size unknown (px)")
        scan = (f"scan step {self.scan_step:g} {self.scan_unit}" if self.scan_step is not None
                else "scan step unknown (scan positions)")
        return f"{pixel}, {scan}"

    def update(self, other):
        """This calibration with the known values of ``other`` (a Calibration) put over it.

        >>> Calibration("0.1/nm").update(Calibration(scan_step=3))
        Calibration(pixel_size=0.1, pixel_unit='1/nm', scan_step=3.0, scan_unit='nm')
        """
        return Calibration(
            pixel_size=other.pixel_size if other.pixel_size is not None else self.pixel_size,
            pixel_unit=other.pixel_unit if other.pixel_size is not None else self.pixel_unit,
            scan_step=other.scan_step if other.scan_step is not None else self.scan_step,
            scan_unit=other.scan_unit if other.scan_step is not None else self.scan_unit)

    # ------------------------------------------------------------------ metadata

    @classmethod
    def from_metadata(cls, attrs=None, *, axes=None):
        """The calibration that file metadata records; unknown values stay None.

        Parameters
        ----------
        attrs : mapping, optional
            Attributes of a dataset or group, e.g. an h5py ``.attrs``. Read:
            ``pixel_size`` (a number with ``pixel_unit``/``pixel_units``, or a
            string with its unit such as ``"0.02/nm"``) and ``scan_step``
            (with ``scan_unit``/``scan_units``, default nm); py4DSTEM's
            ``Q_pixel_size``/``Q_pixel_units`` and ``R_pixel_size``/``R_pixel_units``
            likewise. Keys are matched without regard to case.
        axes : list of dict, optional
            rosettasciio/HyperSpy axes (``{"scale", "units", "navigate", ...}``,
            in array order): the two signal axes (``navigate`` False) give the
            pixel size where they share a scale and a reciprocal unit; the
            navigation axes give the scan step where they share a scale and a
            length unit.

        Returns
        -------
        Calibration
            Values whose unit is missing, unknown (e.g. ``px``) or that
            disagree between axes are left None.

        Examples
        --------
        >>> Calibration.from_metadata({"pixel_size": 0.5, "pixel_unit": "mrad"})
        Calibration(pixel_size=0.5, pixel_unit='mrad', scan_step=None, scan_unit='nm')
        >>> axes = [{"scale": 2.0, "units": "nm", "navigate": True},
        ...         {"scale": 2.0, "units": "nm", "navigate": True},
        ...         {"scale": 0.02, "units": "1/nm", "navigate": False},
        ...         {"scale": 0.02, "units": "1/nm", "navigate": False}]
        >>> Calibration.from_metadata(axes=axes)
        Calibration(pixel_size=0.02, pixel_unit='1/nm', scan_step=2.0, scan_unit='nm')
        """
        from gpucorr._calibration_metadata import read_metadata
        pixel, scan = read_metadata(attrs, axes)
        return cls(pixel_size=pixel[0] if pixel else None,
                   pixel_unit=pixel[1] if pixel else "1/nm",
                   scan_step=scan[0] if scan else None,
                   scan_unit=scan[1] if scan else "nm")
