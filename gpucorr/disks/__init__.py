"""Per-frame disk detection: :func:`find_disks` searches every frame on its own.

:func:`gpucorr.refine` refines one list of approximate positions, the same for
every frame; where grains, phases or orientations change across a scan, disks
come, go and move, and each frame must be searched: :func:`find_disks`
correlates each whole frame with the pattern, finds the maxima of the
correlation map (:mod:`gpucorr.backends._numba_disks`, ``kernels/maxima.cu``),
keeps the highest and refines them with the code ``refine`` uses. The
results, :class:`DiskResult`, are padded arrays with a count per frame.
"""
import math
import numbers
from dataclasses import dataclass

import numpy as np

from gpucorr import _validate
from gpucorr.backends import array_namespace
from gpucorr.disks._job import DiskJob
from gpucorr.execution.run import execute, prepare
from gpucorr.pipeline.disks import DiskSearch

__all__ = ["find_disks", "DiskResult"]


@dataclass
class DiskResult:
    """The disks found in every frame, ranked by correlation height, highest first.

    Attributes
    ----------
    positions : float32 array (..., K, 2)
        Refined (y, x) positions; NaN where frame has fewer disks.
    centers : int32 array (..., K, 2)
        Integer (y, x) of the correlation maxima; -1 where there is no disk.
    heights, elevations : float32 arrays (..., K)
        Correlation height and elevation (a quality score); NaN where there is no disk.
    counts : int32 array (...)
        Disks found per frame (at most ``K = max_disks``).
    """

    positions: np.ndarray
    centers: np.ndarray
    heights: np.ndarray
    elevations: np.ndarray
    counts: np.ndarray

    @property
    def mask(self):
        """Boolean (..., K): which rows hold a disk."""
        xp = array_namespace(self.counts)
        return xp.arange(self.positions.shape[-2]) < self.counts[..., None]

    def __repr__(self):
        shape = tuple(self.positions.shape)
        return (f"DiskResult(frames={shape[:-2]}, max_disks={shape[-2]}, "
                f"positions={self.positions.dtype}, counts={self.counts.dtype})")


def _check_share(name, value):
    if not _validate.is_real_number(value):
        raise TypeError(f"{name} must be a real number in [0, 1]; got {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
    return float(value)


def _check_search(max_disks, min_spacing, min_relative_height, min_elevation, edge):
    max_disks = _validate.check_count(max_disks, "max_disks", "an int >= 1")
    if isinstance(min_spacing, bool) or not isinstance(min_spacing, numbers.Real):
        raise TypeError(f"min_spacing must be a real number >= 1 (pixels); got {min_spacing!r}")
    if not (math.isfinite(min_spacing) and min_spacing >= 1):
        raise ValueError(f"min_spacing must be a finite number >= 1 (pixels); "
                         f"got {min_spacing!r}")
    _check_share("min_relative_height", min_relative_height)
    if isinstance(min_elevation, bool) or not isinstance(min_elevation, numbers.Real):
        raise TypeError(f"min_elevation must be a real number >= 0; got {min_elevation!r}")
    if not (math.isfinite(min_elevation) and min_elevation >= 0):
        raise ValueError(f"min_elevation must be a finite number >= 0; got {min_elevation!r}")
    if isinstance(edge, bool) or not isinstance(edge, numbers.Integral) or edge < 0:
        raise ValueError(f"edge must be an int >= 0 (pixels); got {edge!r}")
    return max_disks, float(min_spacing), float(min_relative_height), float(min_elevation), \
        int(edge)


MIN_RELATIVE_ELEVATION = 1e-6
""":func:`find_disks`' default ``min_relative_elevation``: ten times the elevation, relative
to a frame's highest, that rounding gives maxima on flat parts of a float32 map."""


def find_disks(frames, pattern, *, max_disks, min_spacing=None, min_relative_height=0.0,
               min_height=None, min_elevation=0.0,
               min_relative_elevation=MIN_RELATIVE_ELEVATION, edge=0, upsample=False, subpixel="com", device=None,
               memory_limit=None, workers=None, progress=None, scaling=None, power=1.0):
    """Find the disks of every frame on its own: the maxima of its correlation map.

    Parameters
    ----------
    frames : array (..., H, W)
        As for :func:`gpucorr.refine` (NumPy, memmap, h5py, zarr, sparse, CuPy,
        DLPack; any leading scan axes).
    pattern : gpucorr.patterns.MatchPattern
        The template each whole frame is correlated with.
    max_disks : int
        ``K``: disks kept per frame at most, the highest first.
    min_spacing : float, optional
        ``s`` (px, >= 1): a disk's correlation maximum is higher than the map
        everywhere else within this distance (equal values: the first in C order
        wins). Default: the pattern's crop size (``pattern.get_crop_size()``,
        twice the radius for the built-in disk patterns).
    min_relative_height : float
        Maxima whose height above the frame's lowest correlation value is below this
        share of the highest maximum's are left out (0 to 1; default 0: none).
    min_height : float, optional
        Maxima whose correlation height (``heights``) is not above this are left
        out (default None: none). Use it with
        :class:`~gpucorr.patterns.DiskEdge`: its template sums to less than 0, so
        its map has maxima between the disks (outside their negative rings) at
        the background's level, at or below 0, and every disk is above 0; the
        other rules do not tell those apart from faint disks. Pass 0, or where
        the background is exactly 0 (simulated frames) a small positive height:
        rounding leaves those maxima about 1e-7 of the highest disk's height
        above or below 0.
    min_elevation : float
        Disks of a lower elevation (the slope of the tightest cone under the
        maximum, over the pixels closer than ``s``) are left out (default 0).
    min_relative_elevation : float
        Disks whose elevation is below this share of the highest elevation among
        the frame's maxima (the ``max_disks`` kept) are left out, and, where it is
        > 0, those of elevation 0 (0 to 1). Default 1e-6: where a frame is flat (an
        empty background, blank corners, a blank frame), rounding of the float32
        correlation leaves maxima of elevation 0 or below 1e-7 of the highest,
        dozens a frame, which are not disks. 0 keeps every maximum.
    edge : int
        Maxima closer than this to the frame's border are left out (default 0).
    upsample : bool or int
        As for :func:`gpucorr.refine`: ``False``, the 5x5 centre of mass; an int
        (``True``: 20), the maximum of the DFT interpolant of the correlation map
        on the ``2 * crop_size`` square around each maximum.
    subpixel : {"com", "quadratic"}
        Without upsampling: ``"com"`` (default), the 5x5 centre of mass, as
        :func:`gpucorr.refine`; ``"quadratic"``, the vertex of the quadratic fitted
        to the maximum's 3x3 neighbourhood (least squares; the centre of mass where
        that is not a maximum within a pixel). On cbed_frame lattices it is 5x
        more accurate than the centre of mass at the same speed. Elevations are
        taken about the centre of mass either way. With ``upsample`` it must be
        ``"com"``.
    device, memory_limit, workers, progress, scaling, power :
        As for :func:`gpucorr.refine`.

    Returns
    -------
    DiskResult
        Padded arrays ``(..., K, ...)`` and ``counts`` with the leading axes of
        ``frames``, in the frames' array library.

    Notes
    -----
    Every frame's disks depend only on that frame, never on the batch: the
    maxima are defined pixel by pixel, ranked by value with ties in C order,
    and refined by the rule of ``refine``. Backends: numba kernels on the CPU,
    CUDA kernels (``kernels/maxima.cu``) on a GPU; host frames are streamed to a
    GPU as ``refine`` streams them.

    Examples
    --------
    >>> import numpy as np
    >>> import gpucorr
    >>> from gpucorr.patterns import Circular
    >>> frame, _, true = gpucorr.cbed_frame(128, 128, radius=4, all_equal=True)
    >>> res = gpucorr.find_disks(frame, Circular(radius=4), max_disks=60, edge=6,
    ...                          upsample=True)
    >>> n = int(res.counts[0])
    >>> inside = np.all((true >= 6) & (true < 122), axis=1)
    >>> n == int(inside.sum())
    True
    >>> distance = np.linalg.norm(res.positions[0, :n, None] - true[None], axis=-1)
    >>> bool(distance.min(axis=1).max() < 0.05)
    True
    """
    from gpucorr.patterns import PeakTemplates
    if isinstance(pattern, PeakTemplates):
        raise TypeError("pattern must be one template for the whole frame; got PeakTemplates "
                        "(one template per peak), which only gpucorr.refine takes")
    call = prepare(frames, None, pattern, upsample=upsample, scaling=scaling, power=power,
                   device=device, memory_limit=memory_limit, workers=workers,
                   progress=progress)
    if min_spacing is None:
        min_spacing = float(call.crop_size)
    k, s, rel, elevation, edge = _check_search(max_disks, min_spacing, min_relative_height,
                                               min_elevation, edge)
    rel_elevation = _check_share("min_relative_elevation", min_relative_elevation)
    h, w = (int(n) for n in call.source.shape[-2:])
    if k > h * w:
        raise ValueError(f"max_disks must be at most the frames' {h}x{w} = {h * w} pixels; "
                         f"got {k}")
    s = min(s, math.hypot(h, w))    # no pixel lies farther: the same maxima, no overflow
    edge = min(edge, max(h, w))     # no pixel lies farther inside either
    if subpixel not in ("com", "quadratic"):
        raise ValueError(f"subpixel must be 'com' or 'quadratic'; got {subpixel!r}")
    if subpixel == "quadratic" and call.factor > 1:
        raise ValueError(f"subpixel='quadratic' refines without upsampling; got "
                         f"upsample={upsample!r} (pass upsample=False, or subpixel='com')")
    if min_height is not None:
        min_height = float(_validate.check_real("min_height", min_height))
    search = DiskSearch(k, s, rel, min_height, elevation, rel_elevation,
                        edge, call.factor, call.crop_size, call.scaling,
                        quadratic=subpixel == "quadratic")
    result = execute(call, lambda xp: DiskJob(xp, call.source, pattern, search,
                                              call.memory_limit), progress)
    centers, positions, heights, elevations, counts = result
    return DiskResult(*call.restore((positions, centers, heights, elevations, counts)))
