"""The steps of the per-frame pipeline, one call each: correlate, evaluate, upsample.

:func:`do_correlations` correlates crops with a template,
:func:`evaluate_correlations` finds and refines the maxima of the maps,
:func:`refine_center_upsampling` and :func:`evaluate_upsampling` refine them
by DFT upsampling. The spectra they pass follow libertem-blobfinder's
convention (see :mod:`gpucorr.correlation`).
"""
import functools

import numpy as np

from gpucorr import _validate, pipeline
from gpucorr.backends import array_namespace, get_backend
from gpucorr.backends.host import on_data_device, on_device
from gpucorr.correlation._buffers import (
    _buffers, _out_buffers, _peaks, _real_result_dtype, _scratch, _store,
)


@on_data_device
def do_correlations(template, crop_parts, with_specs: bool = False):
    """Correlate a stack of crops with a template given as its ``rfft2``.

    Parameters
    ----------
    template : complex array (h, w // 2 + 1), (1, h, w // 2 + 1) or (n, h, w // 2 + 1)
        ``numpy.fft.rfft2`` of the mask (``pattern.get_template((h, w))``), for all
        crops, or one per crop (broadcast against the crops, as libertem-blobfinder
        does).
    crop_parts : float array (n, h, w)
        Crops, e.g. log-scaled by :func:`log_scale_cropbufs_inplace`.
    with_specs : bool
        Also return the spectra of the maps (for :func:`evaluate_upsampling`).

    Returns
    -------
    corrs : array (n, h, w)
        Correlation maps; a disk centred at pixel ``j`` of a crop peaks at ``j``.
        Real dtype by numpy promotion of the inputs (float64 for a complex128
        template).
    corrspecs : complex array (n, h, w // 2 + 1), only with ``with_specs``
        ``rfft2`` of ``corrs`` minus their means and rolled back by ``ceil((h, w) / 2)``
        (the uncentred maps, as libertem-blobfinder's spectra):
        :func:`refine_center_upsampling` takes ``corrmap_center = ceil((h, w) / 2)``
        for them.

    Notes
    -----
    Backends: NumPy or CuPy; ``template`` and ``crop_parts`` from the same
    library (``cupy.asarray(pattern.get_template(...))`` for CuPy crops).
    CuPy input gives CuPy results on its GPU, without a host sync.

    Examples
    --------
    >>> from gpucorr.patterns import Circular
    >>> from gpucorr.masks import circular
    >>> disk = circular(centerX=9, centerY=5, imageSizeX=16, imageSizeY=16, radius=2,
    ...                 antialiased=True)
    >>> crops = disk[np.newaxis].astype(np.float32)
    >>> corrs = do_correlations(Circular(radius=2).get_template((16, 16)), crops)
    >>> np.unravel_index(corrs[0].argmax(), (16, 16))
    (np.int64(5), np.int64(9))
    """
    xp = array_namespace(template, crop_parts)
    crop_parts = xp.asarray(crop_parts)
    if crop_parts.ndim != 3:
        raise ValueError(f"crop_parts must have shape (n, h, w); got {crop_parts.shape}")
    _validate.real_dtype(crop_parts.dtype, "crop_parts")
    shape = crop_parts.shape[-2:]
    template = xp.asarray(template)
    if template.ndim == 3:
        if template.shape[0] not in (1, crop_parts.shape[0]):
            raise ValueError(f"template must be one spectrum (h, w // 2 + 1) or one per crop "
                             f"({crop_parts.shape[0]}, h, w // 2 + 1); got {template.shape}")
        for i in range(template.shape[0]):
            _validate.check_template(template[i], shape, f"template[{i}]")
        if template.shape[0] == 1:
            template = template[0]
    else:
        _validate.check_template(template, shape)
    rdtype = _real_result_dtype(crop_parts.dtype, template.dtype)
    filt = pipeline.correlation_filter(xp, template, shape, rdtype)
    corrs, specs, offsets = pipeline.correlate(get_backend(xp), crop_parts.astype(rdtype), filt,
                                                keep_specs=with_specs)
    corrs += offsets[:, None, None].astype(rdtype)
    if with_specs:
        return corrs, specs * _uncentre_phase(xp, shape, specs.dtype)
    return corrs


def _uncentre_phase(xp, shape, dtype):
    """Spectrum factor that rolls a map back by ``ceil(shape / 2)``: the spectrum of the
    uncentred map (libertem-blobfinder's convention) from that of the centred one; built
    once per shape and dtype, copied to a device once."""
    return on_device(xp, _uncentre_phase_host(tuple(shape), np.dtype(dtype).str))


@functools.lru_cache(maxsize=64)
def _uncentre_phase_host(shape, dtype):
    h, w = shape

    def axis(n, half):
        k = np.arange(n // 2 + 1 if half else n, dtype=np.float64)
        if n % 2 == 0:
            return 1.0 - 2.0 * (k % 2)  # exact: exp(i pi k) = (-1)^k
        return np.exp(2j * np.pi * k * (-(-n // 2)) / n)

    phase = (axis(h, False)[:, None] * axis(w, True)[None, :]).astype(dtype)
    phase.flags.writeable = False
    return phase


def _centred_maps(xp, corrspecs, shape):
    """The centred maps of spectra in libertem-blobfinder's convention (see
    :func:`do_correlations`)."""
    raw = xp.fft.irfft2(corrspecs, s=shape)
    return xp.roll(raw, tuple(-(-n // 2) for n in shape), axis=(-2, -1))


def unravel_index(index, shape):
    """Like ``numpy.unravel_index`` for one flat index, returning Python ints.

    >>> unravel_index(7, (3, 4))
    (1, 3)
    """
    return tuple(int(i) for i in np.unravel_index(int(index), tuple(shape)))


@on_data_device
def evaluate_correlations(corrs, peaks, crop_size, out_centers, out_refineds, out_heights,
                          out_elevations):
    """Argmax, 5x5 refinement, height and elevation of each correlation map.

    Parameters
    ----------
    corrs : float array (P, h, w)
        Correlation maps, one per peak (from :func:`do_correlations`).
    peaks : integer array (P, 2)
        The peaks the maps were cropped around.
    crop_size : int
        Results are shifted by ``peaks - crop_size`` into frame coordinates.
    out_centers, out_refineds : arrays (P, 2)
        Filled with the integer maxima and the refined positions.
    out_heights, out_elevations : arrays (P,)
        Filled with the maxima and the cone slopes.

    Notes
    -----
    Backends: NumPy (numba kernel) or CuPy (CUDA kernel); all arrays from the
    same library. Integer CuPy peaks need no host sync; float ones are
    checked for whole numbers on the host.
    """
    xp = array_namespace(corrs, peaks, *_buffers(out_centers, out_refineds, out_heights,
                                                 out_elevations))
    backend = get_backend(xp)
    corrs = xp.asarray(corrs)
    peaks = _peaks(xp, peaks)
    if corrs.ndim != 3 or corrs.shape[0] != len(peaks):
        raise ValueError(
            f"corrs must have shape (P, h, w) with P = len(peaks) = {len(peaks)}; "
            f"got {corrs.shape}")
    _validate.real_dtype(corrs.dtype, "corrs")
    crop_size = _validate.check_crop_size(crop_size)
    outs = (out_centers, out_refineds, out_heights, out_elevations)
    _out_buffers(len(peaks), *outs)
    scratch = _scratch(backend, len(peaks))
    # the kernels read float32 or float64 maps (integer maps convert exactly)
    corrs = corrs.astype(_real_result_dtype(corrs.dtype), copy=False)
    backend.evaluate(corrs, peaks, crop_size, xp.zeros(len(peaks)), *scratch)
    _store(outs, scratch, peaks)


def _upsample_factor(upsample_factor):
    factor = _validate.check_upsample(upsample_factor)
    if factor < 2:
        raise ValueError(f"upsample_factor must be an int >= 2; got {upsample_factor!r}")
    return factor


@on_data_device
def refine_center_upsampling(corrmap_center, upsample_pos, corrspecs, frequencies,
                             upsample_factor):
    """Refine one peak position to ``1 / upsample_factor`` px by DFT upsampling.

    The map whose spectrum is ``corrspecs`` is interpolated on a grid of
    ``ceil(1.5 * upsample_factor)`` points per axis around
    ``upsample_pos - corrmap_center``; the grid maximum, refined below the grid
    to the maximum of the interpolated map, plus ``corrmap_center`` is
    returned.

    Parameters
    ----------
    corrmap_center : array (2,)
        Offset between map positions and spectrum positions: ``ceil(shape / 2)``
        for spectra from :func:`do_correlations` (as in libertem-blobfinder), ``(0, 0)``
        for the spectrum of a map as it is.
    upsample_pos : array (2,)
        Integer (y, x) of the map maximum.
    corrspecs : complex array (h, w // 2 + 1)
        ``rfft2`` of the map.
    frequencies : (array, array)
        ``(numpy.fft.fftfreq(h, upsample_factor), numpy.fft.rfftfreq(w, upsample_factor))``;
        they fix ``w`` (even or odd) for the half spectrum.
    upsample_factor : int

    Returns
    -------
    float32 array (2,)
        In the array library of the arguments.

    Notes
    -----
    Backends: NumPy or CuPy; every array argument (``frequencies`` included,
    e.g. ``cupy.fft.fftfreq``) from the same library. With CuPy the result
    stays on the GPU, but ``frequencies[1][1]`` is read on the host (one sync)
    to tell even from odd ``w``.
    """
    factor = _upsample_factor(upsample_factor)
    xp = array_namespace(corrmap_center, upsample_pos, corrspecs, frequencies[0],
                         frequencies[1])
    corrspecs = xp.asarray(corrspecs)
    if corrspecs.ndim != 2:
        raise ValueError(f"corrspecs must have shape (h, w // 2 + 1); got {corrspecs.shape}")
    h = corrspecs.shape[0]
    fx = xp.asarray(frequencies[1])
    w = int(round(1 / (float(fx[1]) * factor))) if len(fx) > 1 else 1
    if w // 2 + 1 != corrspecs.shape[1] or len(frequencies[0]) != h:
        raise ValueError(
            f"frequencies do not fit corrspecs of shape {corrspecs.shape}: expected "
            "(fftfreq(h, upsample_factor), rfftfreq(w, upsample_factor))")
    center = xp.asarray(corrmap_center, dtype=np.float64)
    pos = xp.rint(xp.asarray(upsample_pos, dtype=np.float64) - center)
    corrmap = xp.fft.irfft2(corrspecs, s=(h, w))
    refined = pipeline.upsample_positions(get_backend(xp), corrmap[None], pos[None, None],
                                           factor)
    return (refined[0, 0] + center).astype(np.float32)


@on_data_device
def evaluate_upsampling(corrspecs, corrs, peaks, crop_size, sig_shape, upsample_factor,
                        out_centers, out_refineds):
    """Replace refined positions by DFT-upsampled ones.

    Parameters
    ----------
    corrspecs : complex array (P, h, w // 2 + 1) or (H, W // 2 + 1)
        Spectra from :func:`do_correlations` (fast mode, one per peak) or the
        spectrum of a whole-frame map (full mode), of the uncentred maps (rolled
        back by ``ceil(shape / 2)``) as in libertem-blobfinder.
    corrs : array (P, h, w)
        The maps (or crops of the full map); their shape gives ``(h, w)``.
    peaks : integer array (P, 2)
    crop_size : int
    sig_shape : (int, int)
        Frame shape (the map shape in full mode).
    upsample_factor : int
    out_centers : array (P, 2)
        Integer maxima in frame coordinates (from :func:`evaluate_correlations`).
    out_refineds : float array (P, 2)
        Overwritten with the upsampled positions.

    Notes
    -----
    Backends: NumPy or CuPy, all arrays from the same library (``corrs`` is
    only read for its shape). CuPy input needs no host sync (integer peaks).
    """
    factor = _upsample_factor(upsample_factor)
    xp = array_namespace(corrspecs, corrs, peaks, *_buffers(out_centers, out_refineds))
    backend = get_backend(xp)
    peaks = _peaks(xp, peaks)
    crop_size = _validate.check_crop_size(crop_size)
    corrspecs = xp.asarray(corrspecs)
    _validate.check_out(out_centers, (len(peaks), 2), "out_centers", "iuf", required=True)
    _validate.check_out(out_refineds, (len(peaks), 2), "out_refineds", "f", required=True)
    centers = xp.asarray(out_centers).astype(np.int64)
    if corrspecs.ndim == 3:
        shape = tuple(np.shape(corrs)[-2:])
        _validate.check_template(corrspecs[0], shape, "corrspecs[i]")
        if len(corrspecs) != len(peaks):
            raise ValueError(f"corrspecs holds {len(corrspecs)} spectra for {len(peaks)} peaks")
        origin = peaks - crop_size
        maps = xp.ascontiguousarray(_centred_maps(xp, corrspecs, shape))
        pos = pipeline.upsample_positions(backend, maps, (centers - origin)[:, None], factor)
        out_refineds[...] = pos[:, 0] + origin
    else:
        shape = tuple(sig_shape)
        _validate.check_template(corrspecs, shape, "corrspecs")
        corrmap = xp.ascontiguousarray(_centred_maps(xp, corrspecs, shape))
        pos = pipeline.upsample_positions(backend, corrmap[None], centers[None], factor)
        out_refineds[...] = pos[0]
