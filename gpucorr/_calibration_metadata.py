"""Reading a :class:`~gpucorr.calibration.Calibration` from file metadata.

It owns what :meth:`Calibration.from_metadata <gpucorr.calibration.Calibration.from_metadata>`
reads: HDF5 attributes (``pixel_size`` + ``pixel_unit``, ``scan_step`` +
``scan_unit``, py4DSTEM's ``Q_pixel_size`` / ``R_pixel_size``) and
rosettasciio/HyperSpy axes, each value as ``(value, unit)`` in gpucorr's units
or None where it cannot be read.
"""
import math
import numbers

import numpy as np

from gpucorr.calibration import _normalise_unit, parse_quantity

__all__ = ["read_metadata"]


def read_metadata(attrs=None, axes=None):
    """``(pixel, scan)``: each ``(value, unit)`` in gpucorr's units, or None where unknown.

    >>> read_metadata({"Q_pixel_size": 0.5, "Q_pixel_units": "mrad"})
    ((0.5, 'mrad'), None)
    """
    pixel = scan = None
    if attrs is not None:
        lower = {str(k).lower(): _plain(v) for k, v in dict(attrs).items()}
        pixel = (_from_attrs(lower, "pixel_size", ("pixel_unit", "pixel_units"), "pixel")
                 or _from_attrs(lower, "q_pixel_size", ("q_pixel_units", "q_pixel_unit"),
                                "pixel"))
        scan = (_from_attrs(lower, "scan_step", ("scan_unit", "scan_units"), "scan",
                            default_unit="nm")
                or _from_attrs(lower, "r_pixel_size", ("r_pixel_units", "r_pixel_unit"),
                               "scan"))
    if axes:
        signal = [a for a in axes if not _plain(a.get("navigate", False))][-2:]
        navigation = [a for a in axes if _plain(a.get("navigate", False))]
        pixel = pixel or _from_axes(signal, "pixel")
        scan = scan or _from_axes(navigation, "scan")
    return pixel, scan


def _plain(value):
    """An HDF5 attribute value as a Python str or number (bytes decoded, 0-d arrays unpacked)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _plain(value.reshape(()).item())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _quantity(value, unit, kind):
    """``(value, unit)`` in gpucorr's units, or None where it cannot be read."""
    try:
        if isinstance(value, str):
            return parse_quantity(value if unit is None else f"{value} {unit}", kind)
        if unit is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        value = float(value)
        if not (value > 0 and math.isfinite(value)):
            return None
        kept, factor = _normalise_unit(unit, kind, "unit")
        return value * factor, kept
    except (ValueError, TypeError):
        return None


def _from_attrs(lower, key, unit_keys, kind, default_unit=None):
    if key not in lower:
        return None
    unit = next((lower[u] for u in unit_keys if u in lower), default_unit)
    value = lower[key]
    if isinstance(value, str):
        try:  # a number written as text: its unit is the unit attribute
            float(value)
            value = value if unit is None else f"{value} {unit}"
        except ValueError:  # the unit is in the text
            pass
        unit = None
    return _quantity(value, unit, kind)


def _from_axes(axes, kind):
    found = set()
    for axis in axes:
        scale, units = _plain(axis.get("scale")), _plain(axis.get("units"))
        if not isinstance(units, str):
            return None  # e.g. traits' Undefined: not calibrated
        q = _quantity(scale, units, kind)
        if q is None:
            return None
        found.add((round(q[0], 12), q[1]))
    return found.pop() if len(found) == 1 else None
