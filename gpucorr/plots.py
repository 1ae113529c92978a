"""Pictures of a run: strain maps, context maps and one frame with its refined disks.

Every function returns a :class:`matplotlib.figure.Figure` made without pyplot
(no global state, any backend); :func:`save_plots` writes the PNGs of whatever
it is given. ``gpucorr refine --plots DIR`` and ``gpucorr demo`` draw with
these. Sizes and fonts are those of a printed page: a figure is at most 7 in
wide with 8-10 pt text, so it reads at the size a paper uses.

Units: strain in % (and measured-minus-known in a power of ten stated on the
colorbar), rotation in mrad, scan axes in scan positions (px) or, with a
``calibration`` that has ``scan_step`` and ``scan_unit``, in that unit with a
scale bar. matplotlib is imported only when a picture is drawn.
"""
import math
import os
from collections.abc import Mapping

import numpy as np

__all__ = ["strain_figure", "strain_error_figure", "context_figure", "frame_figure",
           "save_plots", "virtual_bright_field"]

COMPONENTS = ("exx", "eyy", "exy", "rotation")
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "legend.fontsize": 8, "image.interpolation": "nearest"}
WIDTH = 7.0  # inches: a full page width


def _figure(size):
    """A constrained-layout Figure of ``size`` inches, and the rc context to draw it in."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is in the test environment
        raise ImportError("gpucorr.plots needs matplotlib: pip install gpucorr[cli]") from exc
    return Figure(figsize=size, layout="constrained"), matplotlib.rc_context(STYLE)


def _ticks(fig):
    """Tick labels at the style's size (ticks are made when drawn, after the rc context)."""
    for ax in fig.axes:
        ax.tick_params(labelsize=STYLE["xtick.labelsize"])
    return fig


def _host(value, name):
    """``value`` as a float64 NumPy array (CuPy arrays are copied to the host)."""
    from gpucorr.backends.host import to_host
    try:
        return np.asarray(to_host(value, name), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a numeric array; got {type(value).__name__}") from exc


def _map2d(value, name, shape=None):
    """A 2-D (scan_y, scan_x) float64 map, of ``shape`` when given."""
    array = _host(value, name)
    if array.ndim != 2 or (shape is not None and array.shape != tuple(shape)):
        want = f"shape {tuple(shape)}" if shape is not None else "a 2-D (scan_y, scan_x) map"
        raise ValueError(f"{name}: expected {want}; got shape {array.shape}")
    return array


def _components(value, name, shape=None):
    """The four maps ``exx, eyy, exy, rotation`` of a StrainResult, a mapping or a 4-sequence."""
    if isinstance(value, Mapping):
        missing = [k for k in COMPONENTS if k not in value]
        if missing:
            raise ValueError(f"{name}: missing {', '.join(missing)}")
        maps = [value[k] for k in COMPONENTS]
    elif all(hasattr(value, k) for k in COMPONENTS):
        maps = [getattr(value, k) for k in COMPONENTS]
    elif isinstance(value, (tuple, list)) and len(value) == 4:
        maps = list(value)
    else:
        raise ValueError(f"{name}: expected a StrainResult, a dict or 4 arrays "
                         f"(exx, eyy, exy, rotation); got {type(value).__name__}")
    first = _map2d(maps[0], f"{name}.exx", shape)
    return [first] + [_map2d(m, f"{name}.{k}", first.shape)
                      for m, k in zip(maps[1:], COMPONENTS[1:])]


def _limit(arrays):
    """Symmetric colour limit of ``arrays``: the largest 99.5th percentile of |values|
    (a robust maximum), rounded to the next 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of
    ten, or down by up to 3 % (0.0101 gives 0.01; the colorbar then shows the clipping)."""
    finite = [np.abs(a[np.isfinite(a)]) for a in arrays]
    lim = max((float(np.percentile(v, 99.5)) for v in finite if v.size), default=0.0)
    if not lim > 0:
        return 1e-12
    exp = 10.0 ** math.floor(math.log10(lim))
    return min(m * exp for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * exp >= lim * 0.97)


def _nice(value):
    """The largest 1, 2 or 5 times a power of ten not above ``value``."""
    exp = 10.0 ** math.floor(math.log10(value))
    return max(m * exp for m in (1, 2, 5) if m * exp <= value * (1 + 1e-9))


def _scan_axes(ax, shape, calibration):
    """Label the scan axes (a scale bar too if calibrated); returns imshow's keywords.

    Scans longer than 4:1 are drawn stretched (``aspect="auto"``) to stay readable.
    """
    step = getattr(calibration, "scan_step", None) if calibration is not None else None
    unit = (getattr(calibration, "scan_unit", "") or "") if step else "px"
    ax.set_xlabel(f"scan x ({unit})")
    ax.set_ylabel(f"scan y ({unit})")
    aspect = "auto" if max(shape) > 4 * min(shape) else "equal"
    if not step:
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        return dict(aspect=aspect)
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
    length = _nice(shape[1] * step / 4)
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} {unit}", "lower left", pad=0.3,
                          borderpad=0.4, sep=3, frameon=True, size_vertical=shape[0] * step / 60,
                          fontproperties=FontProperties(size=8))
    bar.patch.set_alpha(0.75)
    bar.set_gid("scale bar")
    ax.add_artist(bar)
    return dict(aspect=aspect, extent=(0, shape[1] * step, shape[0] * step, 0))


def _panel(fig, ax, values, *, lim, scale, cmap, label, title, calibration):
    """One symmetric-limit map with a labelled colorbar (ticks at 0, ±lim/2 and ±lim)."""
    where = _scan_axes(ax, values.shape, calibration)
    finite = values[np.isfinite(values)]
    clipped = finite.size and float(np.abs(finite).max()) > lim * (1 + 1e-9)
    image = ax.imshow(values * scale, cmap=cmap, vmin=-lim * scale, vmax=lim * scale, **where)
    bar = fig.colorbar(image, ax=ax, shrink=0.9, extend="both" if clipped else "neither",
                       ticks=np.linspace(-lim * scale, lim * scale, 5))
    bar.set_label(label)
    ax.set_title(title)
    return image


def strain_figure(strain, *, calibration=None, known=None):
    """Strain and rotation maps, 2 x 2: ``exx``, ``eyy``, ``exy`` (%) and rotation (mrad).

    ``strain`` is a :class:`~gpucorr.lattice.StrainResult` (or a dict / four
    2-D maps ``exx, eyy, exy, rotation``). The three strain maps share one
    symmetric colour limit, the rotation has its own; with ``known`` (the same
    four maps of a known field) the limits cover the known field too, so that
    the measured maps can be compared with it (see :func:`strain_error_figure`).

    >>> ramp = np.linspace(-0.01, 0.01, 12).reshape(3, 4)
    >>> fig = strain_figure(dict(exx=ramp, eyy=ramp / 2, exy=0 * ramp, rotation=ramp))
    >>> [ax.get_title() for ax in fig.axes[:4]]
    ['exx', 'eyy', 'exy (tensor shear)', 'rotation']
    >>> fig.axes[0].images[0].get_clim()
    (-1.0, 1.0)
    """
    maps = _components(strain, "strain")
    refs = _components(known, "known", maps[0].shape) if known is not None else []
    lim = _limit(maps[:3] + refs[:3])
    rot_lim = _limit(maps[3:] + refs[3:])
    fig, style = _figure((WIDTH, 5.8))
    titles = ("exx", "eyy", "exy (tensor shear)", "rotation")
    with style:
        axes = fig.subplots(2, 2, sharex=True, sharey=True)
        for k, (ax, values) in enumerate(zip(axes.flat, maps)):
            rotation = k == 3
            _panel(fig, ax, values, lim=rot_lim if rotation else lim,
                   scale=1e3 if rotation else 100, cmap="RdBu_r",
                   label="rotation (mrad)" if rotation else f"{COMPONENTS[k]} (%)",
                   title=titles[k], calibration=calibration)
        _outer_labels(axes)
    return _ticks(fig)


def _outer_labels(axes):
    """Keep the scan-axis labels of the left column and the bottom row only."""
    for ax in axes[:-1].flat:
        ax.set_xlabel("")
    for ax in axes[:, 1:].flat:
        ax.set_ylabel("")


def _power(lim):
    """``(scale, text)`` that writes values up to ``lim`` as 1 to 10 times ``10^n``."""
    n = math.floor(math.log10(lim))
    return 10.0 ** -n, rf"$10^{{{n}}}$"


def strain_error_figure(strain, known, *, calibration=None):
    """Measured minus known, 2 x 2, with the RMS difference of each map in its title.

    The strain differences share one symmetric limit and are written in a
    power of ten (stated on the colorbar); the rotation difference in a power
    of ten of radians.
    """
    maps = _components(strain, "strain")
    refs = _components(known, "known", maps[0].shape)
    diffs = [m - r for m, r in zip(maps, refs)]
    lim, rot_lim = _limit(diffs[:3]), _limit(diffs[3:])
    fig, style = _figure((WIDTH, 5.8))
    with style:
        axes = fig.subplots(2, 2, sharex=True, sharey=True)
        for k, (ax, diff) in enumerate(zip(axes.flat, diffs)):
            scale, power = _power(rot_lim if k == 3 else lim)
            unit = f"{power} rad" if k == 3 else power
            rms = float(np.sqrt(np.nanmean(diff ** 2))) if np.isfinite(diff).any() else np.nan
            _panel(fig, ax, diff, lim=rot_lim if k == 3 else lim, scale=scale, cmap="PuOr_r",
                   label=f"{COMPONENTS[k]} measured − known ({unit})",
                   title=f"{COMPONENTS[k]} error, RMS {rms:.1e}", calibration=calibration)
        _outer_labels(axes)
    return _ticks(fig)


def context_figure(vbf, elevation, *, calibration=None):
    """Virtual bright-field image and elevation (match quality) map side by side.

    ``vbf`` is a 2-D scan map (see :func:`virtual_bright_field`); ``elevation``
    a 2-D scan map, or the ``elevations`` of a refine result (scan..., P),
    drawn as their mean over the peaks. Either may be None (not drawn).
    """
    panels = []
    if vbf is not None:
        vbf = _map2d(vbf, "vbf")
        panels.append((vbf, "virtual bright field", "gray", "counts in the central disk"))
    if elevation is not None:
        array = _host(elevation, "elevation")
        label = "elevation"
        if array.ndim == 3:
            label = f"elevation (mean of {array.shape[-1]} peaks)"
            array = np.nanmean(array, axis=-1) if np.isfinite(array).any() else array[..., 0]
        array = _map2d(array, "elevation", vbf.shape if vbf is not None else None)
        panels.append((array, "elevation (match quality)", "viridis", label))
    if not panels:
        raise ValueError("vbf, elevation: give at least one of them")
    fig, style = _figure((WIDTH if len(panels) == 2 else WIDTH / 2, 3.1))
    with style:
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True, sharey=True))
        for ax, (values, title, cmap, label) in zip(axes, panels):
            where = _scan_axes(ax, values.shape, calibration)
            finite = values[np.isfinite(values)]
            lo, hi = np.percentile(finite, (0.5, 99.5)) if finite.size else (0, 1)
            image = ax.imshow(values, cmap=cmap, vmin=lo, vmax=hi, **where)
            fig.colorbar(image, ax=ax, shrink=0.9).set_label(label)
            ax.set_title(title)
        for ax in axes[1:]:
            ax.set_ylabel("")
    return _ticks(fig)


def _points(value, name, count=None):
    """A (P, 2) float64 array of (y, x) positions, of ``count`` rows when given."""
    array = _host(value, name)
    if array.ndim != 2 or array.shape[1] != 2 or (count is not None and len(array) != count):
        want = f"({count}, 2)" if count is not None else "(P, 2)"
        raise ValueError(f"{name}: expected shape {want} (y, x per peak); got {array.shape}")
    return array


def _auto_zoom(peaks, shift, frame_shape):
    """Arrow magnification: the 95th-percentile shift drawn about 0.6 disk spacings long."""
    if len(peaks) > 1:
        dist = np.linalg.norm(peaks[:, None] - peaks[None], axis=-1)
        np.fill_diagonal(dist, np.inf)
        spacing = float(np.median(dist.min(axis=1)))
    else:
        spacing = min(frame_shape) / 8
    finite = shift[np.isfinite(shift)]
    s95 = float(np.percentile(finite, 95)) if finite.size else 0.0
    return _nice(max(0.6 * spacing / s95, 1)) if s95 > 0 else 1, spacing


def frame_figure(frame, peaks, refineds, *, zoom=None, title="frame", close_ups=2):
    """One frame (log scale) with the sum-frame peaks and this frame's refined positions.

    On the whole frame, each peak (+) gets an arrow to its refined position
    with the shift magnified ``zoom`` times (None: chosen so that the larger
    shifts draw about 0.6 disk spacings long; the factor is in the legend).
    Beside it, ``close_ups`` close-ups of the disks that moved most show both
    positions at their true scale. The legend sits below the image.
    """
    image = _host(frame, "frame")
    if image.ndim != 2:
        raise ValueError(f"frame: expected a 2-D (H, W) frame; got shape {image.shape}")
    peaks = _points(peaks, "peaks")
    refineds = _points(refineds, "refineds", len(peaks))
    shift = np.linalg.norm(refineds - peaks, axis=1)
    auto, spacing = _auto_zoom(peaks, shift, image.shape)
    zoom = auto if zoom is None else float(zoom)
    order = [int(i) for i in np.argsort(np.where(np.isfinite(shift), -shift, np.inf))]
    picks = order[:max(0, min(int(close_ups), len(peaks)))]
    display = np.log1p(np.clip(image, 0, None))
    lo, hi = np.percentile(display, (1, 99.9))
    fig, style = _figure((WIDTH, 4.9 if picks else 5.4))
    with style:
        grid = fig.add_gridspec(max(len(picks), 1), 2 if picks else 1,
                                width_ratios=(2.1, 1) if picks else None)
        ax = fig.add_subplot(grid[:, 0])
        ax.imshow(display, cmap="gray", vmin=lo, vmax=hi)
        handles = _marks(ax, peaks, refineds, zoom, size=5)
        ax.set(title=f"{title}, log scale", xlabel="detector x (px)", ylabel="detector y (px)")
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3,
                  frameon=False, handlelength=1.5, columnspacing=1.2)
        half = max(4.0, 0.4 * spacing)
        for row, p in enumerate(picks):
            _close_up(fig.add_subplot(grid[row, 1]), display, (lo, hi), peaks[p], refineds[p],
                      half, p)
    return _ticks(fig)


def _marks(ax, peaks, refineds, zoom, *, size, crosses=False):
    """Peaks (+), refined positions (x) and shift arrows (``zoom`` times); legend handles."""
    from matplotlib.lines import Line2D
    ok = np.all(np.isfinite(refineds), axis=1)
    ax.plot(peaks[:, 1], peaks[:, 0], "+", color="#00d0ff", ms=size, mew=1.2)
    d = (refineds - peaks)[ok] * zoom
    ax.quiver(peaks[ok, 1], peaks[ok, 0], d[:, 1], d[:, 0], angles="xy", scale_units="xy",
              scale=1, color="#ff8c00", width=0.006, headwidth=3.5, headlength=4,
              headaxislength=3.5)
    if crosses:
        ax.plot(refineds[ok, 1], refineds[ok, 0], "x", color="#ff3030", ms=size, mew=1.4)
    return [Line2D([], [], ls="", marker="+", color="#00d0ff", mew=1.2, label="sum-frame peak"),
            Line2D([], [], ls="", marker="x", color="#ff3030", mew=1.4,
                   label="refined (this frame)"),
            Line2D([], [], color="#ff8c00", lw=2, label=f"shift × {zoom:g}")]


def _close_up(ax, display, limits, peak, refined, half, index):
    """A crop of ``display`` around ``peak``, both positions at their true scale."""
    ax.imshow(display, cmap="gray", vmin=limits[0], vmax=limits[1])
    _marks(ax, peak[None], refined[None], 1, size=11, crosses=True)
    ax.set_xlim(peak[1] - half, peak[1] + half)
    ax.set_ylim(peak[0] + half, peak[0] - half)
    shift = np.linalg.norm(refined - peak)
    ax.set_title(f"peak {index}: shift {shift:.2f} px\n(true scale)", fontsize=9)


def virtual_bright_field(frames, center, radius):
    """Sum of each frame over the disk of ``radius`` px at ``center`` (y, x): shape scan.

    ``frames`` is any array-like (..., H, W) that slices like NumPy (memmap,
    h5py, zarr, CuPy); it is read one scan row at a time, cropped to the disk.

    >>> virtual_bright_field(np.ones((2, 3, 16, 16)), center=(8, 8), radius=2).tolist()
    [[13.0, 13.0, 13.0], [13.0, 13.0, 13.0]]
    """
    shape = tuple(getattr(frames, "shape", ()))
    if len(shape) < 3:
        raise ValueError(f"frames: expected (..., H, W) with a scan axis; got shape {shape}")
    cy, cx = (float(c) for c in center)
    if not radius > 0:
        raise ValueError(f"radius: must be > 0; got {radius}")
    h, w = shape[-2:]
    y0, y1 = max(math.floor(cy - radius), 0), min(math.ceil(cy + radius) + 1, h)
    x0, x1 = max(math.floor(cx - radius), 0), min(math.ceil(cx + radius) + 1, w)
    if y0 >= y1 or x0 >= x1:
        raise ValueError(f"center: {center} with radius {radius} lies outside the {h}x{w} frame")
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2).astype(np.float64)
    out = np.empty(shape[:-2])
    for index in np.ndindex(shape[:-3]):
        crop = _host(frames[index + (slice(None), slice(y0, y1), slice(x0, x1))], "frames")
        # per frame, not BLAS (tensordot): a frame's sum does not depend on its row
        out[index] = np.sum(np.asarray(crop, dtype=np.float64) * mask, axis=(-2, -1))
    return out


def save_plots(directory, *, strain, vbf=None, elevation=None, frame=None, peaks=None,
               refineds=None, calibration=None, known=None, dpi=200, frame_title="frame"):
    """Write the PNGs of whatever is given to ``directory``; returns their paths.

    ``strain_maps.png`` (``strain``, may be None), ``strain_error.png``
    (``known``), ``context.png`` (``vbf`` and/or ``elevation``) and
    ``frame_overlay.png`` (``frame``, ``peaks`` and ``refineds`` together).
    """
    given = [n for n, v in (("frame", frame), ("peaks", peaks), ("refineds", refineds))
             if v is not None]
    if given and len(given) < 3:
        raise ValueError(f"frame, peaks, refineds: give all three or none; got {given}")
    if known is not None and strain is None:
        raise ValueError("known: needs strain (the measured maps to compare)")
    figures = []
    if strain is not None:
        figures.append(("strain_maps.png",
                        strain_figure(strain, calibration=calibration, known=known)))
    if known is not None:
        figures.append(("strain_error.png",
                        strain_error_figure(strain, known, calibration=calibration)))
    if vbf is not None or elevation is not None:
        figures.append(("context.png", context_figure(vbf, elevation, calibration=calibration)))
    if given:
        figures.append(("frame_overlay.png",
                        frame_figure(frame, peaks, refineds, title=frame_title)))
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, fig in figures:
        path = os.path.join(os.fspath(directory), name)
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
