"""Finding and fitting the disks of one frame for :func:`gpucorr.radius.estimate_radius`.

Disks are found on smoothed copies of the frame, brightest first, and each is fitted
on the frame itself with a disk of an error-function edge (centre, radius, edge width,
level and background) by least squares.
"""
import math

import numpy as np
from scipy import ndimage, optimize, special

__all__ = ["fit_disks"]

#: Gaussian sigmas (pixels) of the smoothed frames that disks are looked for on, in turn
_SMOOTH_SIGMAS = (1.0, 3.0)
#: the next, smoother frame is not needed once a disk is this significant
_CLEAR_SIGNIFICANCE = 30.0
#: candidates looked at per disk asked for, before giving up
_TRIES_PER_DISK = 4
#: pixels of background around a disk that its edge fit sees
_FIT_MARGIN = 3.0
#: the sharpest edge fitted (pixels): sharper edges leave the radius between pixels undetermined
_MIN_EDGE_WIDTH = 0.2
#: a fitted disk counts when its amplitude is this many standard errors above zero
_MIN_SIGNIFICANCE = 8.0


def _box(shape, center, half):
    """Slices of the box reaching ``half`` pixels around ``center``, clipped to the frame,
    and the distance of each of its pixels from ``center``."""
    box = tuple(slice(max(math.floor(c - half), 0), min(math.ceil(c + half) + 1, n))
                for c, n in zip(center, shape))
    yy, xx = np.ogrid[box]
    return box, np.hypot(yy - center[0], xx - center[1])


def _component(smooth, peak, level):
    """The pixels above ``level`` connected to ``peak``, holes filled: ``(box, mask)``.

    The box around ``peak`` doubles until the component stays off its edges (but for
    edges on the frame border).
    """
    half = 16
    while True:
        box, _ = _box(smooth.shape, peak, half)
        labels, _ = ndimage.label(smooth[box] > level)
        region = labels == labels[peak[0] - box[0].start, peak[1] - box[1].start]
        (y0, y1), (x0, x1) = ((b.start, b.stop) for b in box)
        if not ((y0 > 0 and region[0].any()) or (x0 > 0 and region[:, 0].any())
                or (y1 < smooth.shape[0] and region[-1].any())
                or (x1 < smooth.shape[1] and region[:, -1].any())):
            return box, ndimage.binary_fill_holes(region)
        half *= 2


def _rough_disk(smooth, peak, floor):
    """Rough ``(cy, cx, r)`` of the disk around ``peak``, or None, by thresholding
    the smoothed frame half way between the disk level and its surrounding background.

    Two rounds: the first uses the frame's ``floor`` as background, the second the
    median of a ring around the first estimate and the median inside it.
    """
    top, low = smooth[peak], floor
    for _ in range(2):
        box, region = _component(smooth, peak, 0.5 * (top + low))
        cy, cx = np.add(ndimage.center_of_mass(region), (box[0].start, box[1].start))
        r = math.sqrt(region.sum() / math.pi)
        near, d = _box(smooth.shape, (cy, cx), r + 5)
        ring = (d >= r + 2) & (d < r + 5)
        inner = d <= max(0.5 * r, 1.0)
        if not ring.any() or not inner.any():
            break
        top, low = np.median(smooth[near][inner]), np.median(smooth[near][ring])
        if not top > low:
            return None
    return float(cy), float(cx), r


def _candidates(smooth, sigma, max_disks, rmin):
    """Rough ``(cy, cx, r)`` of up to ``max_disks`` disks, brightest first.

    Each round takes the brightest pixel of the smoothed frame that no earlier disk
    covers, thresholds its disk and masks it out. Disks smaller than ``rmin / 2``, or
    too close to the border for their fit window, are skipped.
    """
    search = smooth.copy()
    floor = np.percentile(smooth, 5)
    found = []
    for _ in range(_TRIES_PER_DISK * max_disks):
        peak = np.unravel_index(np.argmax(search), search.shape)
        if not search[peak] > floor:
            break
        rough = _rough_disk(smooth, peak, floor)
        if rough is None:
            search[peak] = -np.inf
            continue
        cy, cx, r = rough
        # past its edge, the smoothed tail of a bright disk can outshine dim disks
        box, d = _box(search.shape, (cy, cx), r + 2 + 4 * sigma)
        search[box][d <= r + 2 + 4 * sigma] = -np.inf
        search[peak] = -np.inf
        if r >= rmin / 2 and _inside(smooth.shape, cy, cx, _first_reach(r)):
            found.append((cy, cx, r))
            if len(found) == max_disks:
                break
    return found


def _edge_model(params, yy, xx):
    """Disk with an error-function edge, and its Jacobian, at pixels ``(yy, xx)``.

    ``params = (cy, cx, radius, width, amplitude, background)``; the model is
    ``background + amplitude * erfc((d - radius) / (sqrt(2) * width)) / 2``.
    """
    cy, cx, radius, width, amp, bg = params
    dy, dx = yy - cy, xx - cx
    d = np.sqrt(dy * dy + dx * dx) + 1e-12
    u = (d - radius) / (math.sqrt(2) * width)
    step = 0.5 * special.erfc(u)
    slope = amp * np.exp(-u * u) / (math.sqrt(2 * math.pi) * width)  # -d(model)/d(d)
    jac = np.empty((d.size, 6))
    jac[:, 0] = slope * dy / d
    jac[:, 1] = slope * dx / d
    jac[:, 2] = slope
    jac[:, 3] = slope * (d - radius) / width
    jac[:, 4] = step
    jac[:, 5] = 1.0
    return bg + amp * step, jac


def _first_reach(r):
    """Radius of the first fit window around a disk of rough radius ``r``."""
    return 1.2 * r + _FIT_MARGIN


def _inside(shape, cy, cx, reach):
    """Whether the pixels within ``reach`` of ``(cy, cx)`` all lie in the frame."""
    return (math.floor(cy - reach) >= 0 and math.floor(cx - reach) >= 0
            and math.ceil(cy + reach) < shape[0] and math.ceil(cx + reach) < shape[1])


def _neighbours(smooth, box, center, r, level):
    """Which pixels of ``box`` (two slices) belong to other disks: connected parts of
    the smoothed frame above ``level`` (seen in a box three times as wide) of at least
    a quarter of the area of a disk of radius ``r`` (smaller ones are noise) and not
    within ``r / 2`` of ``center``, grown by 2 pixels to take in their edges.
    """
    wide, d = _box(smooth.shape, center, 3 * (box[0].stop - box[0].start) / 2)
    labels, _ = ndimage.label(smooth[wide] > level)
    sizes = np.bincount(labels.ravel())
    sizes[labels[d <= max(0.5 * r, 1.0)]] = 0
    sizes[0] = 0
    others = ndimage.binary_dilation(sizes[labels] >= 0.25 * math.pi * r * r, iterations=2)
    return others[tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, wide))]


def _window(frame, smooth, cy, cx, reach, level):
    """Pixels ``(yy, xx, values)`` within ``reach`` of ``(cy, cx)``, or None if that
    window leaves the frame. With a ``level``, pixels of other disks are left out
    (:func:`_neighbours`).
    """
    if not _inside(frame.shape, cy, cx, reach):
        return None
    box, d = _box(frame.shape, (cy, cx), reach)
    keep = d <= reach
    if level is not None:
        keep &= ~_neighbours(smooth, box, (cy, cx), reach - _FIT_MARGIN, level)
    yy, xx = np.nonzero(keep)
    return yy + float(box[0].start), xx + float(box[1].start), frame[box][keep]


def _start(pixels, cy, cx, r):
    """Starting parameters of an edge fit: medians inside and outside the rough edge."""
    yy, xx, data = pixels
    d = np.hypot(yy - cy, xx - cx)
    bg = np.median(data[d > r + 1])
    top = np.median(data[d < max(r - 1, 0.5 * r, 0.75)])
    return np.array([cy, cx, r, 0.5, top - bg, bg])


def _least_squares(pixels, params):
    """The :func:`scipy.optimize.least_squares` fit of :func:`_edge_model`, or None."""
    yy, xx, data = pixels
    cy, cx, r = params[:3]
    lower = [cy - r, cx - r, 0.5, _MIN_EDGE_WIDTH, -np.inf, -np.inf]
    upper = [cy + r, cx + r, 2 * r + 1, max(r, 2 * _MIN_EDGE_WIDTH), np.inf, np.inf]
    try:
        return optimize.least_squares(
            lambda p: _edge_model(p, yy, xx)[0] - data, np.clip(params, lower, upper),
            jac=lambda p: _edge_model(p, yy, xx)[1], bounds=(lower, upper),
            x_scale="jac", method="trf")
    except (ValueError, np.linalg.LinAlgError):
        return None


def _fit_disk(frame, smooth, cy, cx, r):
    """Least-squares edge fit of the disk near ``(cy, cx)`` of rough radius ``r``.

    A first fit within ``1.2 * r + 3`` pixels of the rough centre, a second within
    ``radius + 3`` of the first fit's centre, without the pixels of brighter
    neighbours. Returns ``(params, errors)`` as for :func:`_edge_model` and
    :func:`_fit_errors`, or None when the window leaves the frame or the fit fails.
    """
    pixels = _window(frame, smooth, cy, cx, _first_reach(r), None)
    if pixels is None:
        return None
    fit = _least_squares(pixels, _start(pixels, cy, cx, r))
    if fit is None:
        return None
    cy, cx, r, _, amp, bg = fit.x
    pixels = _window(frame, smooth, cy, cx, r + _FIT_MARGIN, bg + 0.5 * amp)
    if pixels is None:
        return None
    fit = _least_squares(pixels, fit.x)
    if fit is None:
        return None
    return fit.x, _fit_errors(fit)


def _fit_errors(fit):
    """Standard errors of a least-squares fit's parameters, or None if a parameter
    other than the edge width (3) ended on a bound. The width's error is 0 there."""
    free = fit.active_mask == 0
    if not free[[0, 1, 2, 4, 5]].all():
        return None
    jac = fit.jac[:, free]
    scale = 2 * fit.cost / max(jac.shape[0] - jac.shape[1], 1)
    try:
        cov = np.linalg.inv(jac.T @ jac) * scale
    except np.linalg.LinAlgError:
        return None
    variances = np.diag(cov)
    if not np.all(variances > 0):  # ill-conditioned: some parameter is not determined
        return None
    errors = np.zeros(len(free))
    errors[free] = np.sqrt(variances)
    return errors


def _significance(fitted):
    """Fitted disk amplitude over its standard error."""
    params, errors = fitted
    return params[4] / max(errors[4], 1e-300)


def _acceptable(fitted, fits, rmin, rmax):
    """Whether a fit is a new disk: radius in range and known to better than 25 %,
    amplitude significant, and its centre not inside a disk fitted before."""
    params, errors = fitted
    if errors is None or not rmin <= params[2] <= rmax or not errors[2] < 0.25 * params[2]:
        return False
    if not _significance(fitted) > _MIN_SIGNIFICANCE:
        return False
    return all(math.dist(params[:2], p[:2]) > p[2] for p, _ in fits)


def fit_disks(frame, max_disks, rmin, rmax):
    """Edge fits ``(params, errors)`` of up to ``max_disks`` disks, most significant first.

    Disks are looked for on the frame smoothed by the first of ``_SMOOTH_SIGMAS``, and on
    the smoother ones only while no fit is clearly significant (noisy frames).
    """
    smooth = ndimage.gaussian_filter(frame, _SMOOTH_SIGMAS[0])
    fits = []
    for sigma in _SMOOTH_SIGMAS:
        found = smooth if sigma == _SMOOTH_SIGMAS[0] else ndimage.gaussian_filter(frame, sigma)
        for cy, cx, r in _candidates(found, sigma, max_disks, rmin):
            fitted = _fit_disk(frame, smooth, cy, cx, min(max(r, rmin), rmax))
            if fitted is not None and _acceptable(fitted, fits, rmin, rmax):
                fits.append(fitted)
        if fits and max(_significance(f) for f in fits) >= _CLEAR_SIGNIFICANCE:
            break
    return sorted(fits, key=_significance, reverse=True)[:max_disks]
