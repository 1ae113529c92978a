"""The correlation pipeline, written once for every backend.

crop (+ log) -> FFT correlation -> evaluate -> optional DFT upsampling.
The per-backend primitives come from :func:`gpucorr._backend.get_backend`;
everything here is array-module generic (``xp``).

Correlation convention
----------------------
gpucorr correlates (it does not convolve): the correlation map of a crop
``f`` with a mask ``t`` centred at ``c = (h // 2, w // 2)`` is
``map[j] = sum_k t[k + c] f[j + k]`` (circular), so a disk centred at pixel
``j`` of the crop gives the peak at ``map[j]`` for even and odd sizes
alike. In Fourier space this is ``conj(T) * F`` times the phase ramp of a
roll by ``c``; :func:`correlation_filter` folds both into one spectrum, so
one ``irfft2`` gives the final map, with no separate shift.

Scratch memory
--------------
The large scratch arrays of a chunk (crops, spectra, maps, logged
frames) come from a :class:`Workspace`. :func:`run_fast` and
:func:`run_full` use the calling thread's workspace, which on the CPU keeps
its buffers from one chunk (and one ``refine`` call) to the next, so that a
steady stream of chunks allocates nothing large: fresh large allocations are
fresh pages from the kernel wherever glibc's dynamic mmap threshold is off
(any ``MALLOC_*_`` tunable set, as Dask's nanny does), and page faults then
cost as much as the FFTs. The kept buffers are at most one chunk's scratch
(``memory_limit / workers`` of :func:`gpucorr.refine`) per thread; a thread's
buffers go when the thread ends, all of them with :func:`release_workspaces`.
On a GPU nothing is kept: CuPy's memory pool already reuses device memory.
The other functions take ``ws=None``: then every array is freshly allocated,
as returned arrays may be kept by the caller.
"""
import contextlib
import functools
import math
import threading
import weakref

import numpy as np

__all__ = ["native", "compute_dtype", "correlation_filter", "correlate", "upsample_positions",
           "upsample_region_size", "crop_frames", "finish_fast", "run_fast", "full_maps",
           "finish_full", "run_full", "frame_bytes", "Workspace", "thread_workspace",
           "release_workspaces"]


def native(dtype):
    """``dtype`` in the machine's byte order (big-endian '>f8' -> float64)."""
    return np.dtype(dtype).newbyteorder("=")


def compute_dtype(dtype):
    """Real dtype the pipeline computes in: float64 for float64 input (of either byte
    order), else float32."""
    return np.dtype(np.float64) if native(dtype) == np.float64 else np.dtype(np.float32)


def real_dtype(cdtype):
    return np.dtype(np.float64) if native(cdtype) == np.complex128 else np.dtype(np.float32)


def complex_dtype(rdtype):
    return np.dtype(np.complex128) if native(rdtype) == np.float64 else np.dtype(np.complex64)


class Workspace:
    """Named scratch arrays for one chunk at a time, reused by the next chunk.

    ``empty(name, shape, dtype)`` returns an uninitialised array; with
    ``keep=True`` (NumPy only) it is a view of the buffer kept under ``name``,
    grown when too small, so arrays of the same name from earlier calls are
    overwritten: within one chunk every live array needs its own name, and
    nothing from a workspace may outlive the chunk (results go to ``out``).
    With ``keep=False`` (and always for CuPy) every call allocates afresh.

    Parameters
    ----------
    xp : module
        The array module (``numpy`` or ``cupy``).
    keep : bool
        Keep and reuse buffers (NumPy only; ignored for CuPy).
    """

    def __init__(self, xp, keep=True):
        self.xp = xp
        self.keep = bool(keep) and xp is np
        self.busy = False
        self._buffers = {}

    def empty(self, name, shape, dtype):
        """An uninitialised array ``shape``/``dtype``: the buffer ``name`` if kept."""
        if not self.keep:
            return self.xp.empty(shape, dtype=dtype)
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            self._buffers.pop(name, None)  # free the smaller buffer first
            # complex128 units: aligned for every dtype
            buf = np.empty(-(-max(nbytes, 1) // 16), dtype=np.complex128).view(np.uint8)
            self._buffers[name] = buf
        return buf[:nbytes].view(dtype).reshape(shape)

    def out(self, name, shape, dtype):
        """``empty(name, shape, dtype)`` to pass as ``out=`` where buffers are kept, else
        None (then the function allocates its result, exactly as without ``out=``)."""
        return self.empty(name, shape, dtype) if self.keep else None

    @property
    def nbytes(self):
        """Bytes of the kept buffers."""
        return sum(b.nbytes for b in list(self._buffers.values()))

    def release(self):
        """Drop the kept buffers (arrays still in use stay valid)."""
        self._buffers = {}


_thread = threading.local()
_workspaces = weakref.WeakSet()
_workspaces_lock = threading.Lock()


@contextlib.contextmanager
def thread_workspace(xp):
    """The calling thread's :class:`Workspace` for ``xp``, for the duration of one chunk.

    Each thread has its own, so threads never share buffers. A nested use in
    the same thread while the workspace is busy (e.g. ``refine`` called from a
    signal handler) gets a fresh, non-keeping one; so does CuPy.
    """
    if xp is not np:
        yield Workspace(xp, keep=False)
        return
    ws = getattr(_thread, "workspace", None)
    if ws is None:
        ws = _thread.workspace = Workspace(np)
        with _workspaces_lock:
            _workspaces.add(ws)
    if ws.busy:
        yield Workspace(np, keep=False)
        return
    ws.busy = True
    try:
        yield ws
    finally:
        ws.busy = False


def release_workspaces():
    """Drop the scratch buffers kept by every thread's workspace; returns the bytes freed."""
    with _workspaces_lock:
        kept = list(_workspaces)
    freed = 0
    for ws in kept:
        freed += ws.nbytes
        ws.release()
    return freed


def _fresh(xp, ws):
    return Workspace(xp, keep=False) if ws is None else ws


def _roll_phase(xp, n, half):
    """1-D spectrum factor of a roll by ``n // 2`` over ``n`` samples (``half``: rfft axis)."""
    k = xp.arange(n // 2 + 1 if half else n, dtype=np.float64)
    c = n // 2
    if n % 2 == 0:
        # exact: exp(-i pi k) = (-1)^k
        return 1.0 - 2.0 * (k % 2)
    return xp.exp(-2j * np.pi * k * c / n)


def correlation_filter(xp, template, shape, rdtype):
    """Spectrum that turns ``irfft2(rfft2(x) * filt)`` into the centred correlation map.

    Parameters
    ----------
    template : complex array (h, w // 2 + 1)
        ``rfft2`` of the correlation mask of shape ``shape`` (centred at ``shape // 2``),
        as returned by ``pattern.get_template(shape)``.
    shape : (int, int)
        ``(h, w)``, the real shape the template was computed for.
    rdtype : dtype
        The real compute dtype; the filter has the matching complex dtype.
    """
    h, w = shape
    phase = _roll_phase(xp, h, False)[:, None] * _roll_phase(xp, w, True)[None, :]
    return (xp.conj(template) * phase).astype(complex_dtype(rdtype))


def correlate(backend, data, filt, ws=None, keep_specs=False):
    """Zero-mean correlation maps of a stack ``data`` (M, h, w) with ``filt``.

    Returns ``(maps, specs, offsets)``: the maps minus their means, their
    spectra (DC term zero) with ``keep_specs`` (else None: the inverse FFT may
    overwrite them, which saves a copy), and the means (float64, shape (M,)).

    The mean (the DC term) is split off before the inverse FFT: the maps'
    fluctuations are then stored at full relative precision, which keeps the
    elevations (differences of nearby map values) accurate in float32.
    Argmax, refinement and elevation do not depend on a constant offset; the
    height adds the mean back in float64.
    """
    xp = backend.xp
    ws = _fresh(xp, ws)
    h, w = data.shape[-2:]
    specs = backend.rfft2(data, out=ws.out("specs", data.shape[:-1] + (w // 2 + 1,),
                                            complex_dtype(data.dtype)))
    # The inverse's 1 / (h w) is folded into the product where the spectra are not
    # returned: the filter (one spectrum) is scaled, not the maps (a stack), which
    # saves a pass over the maps where the scaling is one of its own (CuPy: 13 % of
    # full mode on an H100; pocketfft with overwrite_x).
    fold = not keep_specs
    if fold:
        specs *= filt * filt.real.dtype.type(1 / (h * w))
        offsets = specs[..., 0, 0].real.astype(np.float64)
    else:
        specs *= filt
        offsets = specs[..., 0, 0].real.astype(np.float64) / (h * w)
    specs[..., 0, 0] = 0
    maps = backend.irfft2(specs, s=(h, w), out=ws.out("maps", data.shape, data.dtype),
                          overwrite_x=not keep_specs, scaled=not fold)
    return maps, (specs if keep_specs else None), xp.ascontiguousarray(offsets)


def upsample_region_size(factor):
    """Edge of the upsampled search square, in upsampled pixels (1.5 original pixels)."""
    return int(math.ceil(1.5 * factor))


#: grid local maxima of a search region refined by Newton's method, best first
UPSAMPLE_CANDIDATES = 4
#: Newton iterations at most per candidate
NEWTON_ITERATIONS = 24
#: a step of at most this many pixels ends the search
NEWTON_TOLERANCE = 1e-7


@functools.lru_cache(maxsize=64)
def _interpolation_kernel(n, factor):
    """Weights ``D[u, m]`` of sample ``m`` for the point ``(u - U // 2) / factor`` (float64).

    ``D(t) = (1/n) sum_k w_k cos(2 pi k t / n)`` over ``k = 0 .. n // 2`` with
    ``w = 1`` for DC and (even ``n``) Nyquist, 2 otherwise: the real
    trigonometric interpolant of ``n`` periodic samples, i.e. the inverse DFT
    of the full, Hermitian-symmetric spectrum evaluated between samples.
    """
    u = upsample_region_size(factor)
    t = (np.arange(u)[:, None] - u // 2) / factor - np.arange(n)[None, :]
    kernel = np.ones_like(t)
    for k in range(1, n // 2 + 1):
        weight = 1.0 if 2 * k == n else 2.0
        kernel += weight * np.cos(2 * np.pi * k * t / n)
    kernel /= n
    kernel.flags.writeable = False
    return kernel


@functools.lru_cache(maxsize=64)
def _harmonics(n):
    """``[cos(omega_k a); sin(omega_k a)]``, ``omega_k = 2 pi k / n``, ``k = 0 .. n // 2``,
    ``a = 0 .. n - 1``: (2 (n // 2 + 1), n) float64.

    The interpolation kernel of :func:`_interpolation_kernel` and its first two
    derivatives at ``t - a`` are per-point coefficients times this table
    (``cos(w (t - a)) = cos(w t) cos(w a) + sin(w t) sin(w a)``).
    """
    omega = 2 * np.pi * np.arange(n // 2 + 1) / n
    angle = omega[:, None] * np.arange(n)[None, :]
    table = np.ascontiguousarray(np.concatenate([np.cos(angle), np.sin(angle)]))
    table.flags.writeable = False
    return table


def upsample_positions(backend, maps, positions, factor):
    """Refine integer peak positions to the maximum of the maps' DFT interpolant.

    The rule, the same on every backend and for every batch:

    1. Each map is evaluated on a ``U x U`` grid (``U = ceil(1.5 factor)``) of
       spacing ``1 / factor`` around each position by trigonometric (DFT)
       interpolation, as in the matrix-multiply DFT of Guizar-Sicairos: the
       *search region*.
    2. The grid's local maxima (points at least as large as each of their up
       to 8 neighbours) are ranked by value, largest first, ties in C order;
       the first :data:`UPSAMPLE_CANDIDATES` are kept.
    3. From each, Newton's method on the interpolant itself (gradient and
       Hessian of the exact band-limited continuation of the map, with a
       trust region starting at one grid step and gradient-ascent steps where
       the Hessian is not negative definite) climbs to the maximum of its
       basin within the search region, until a step is at most
       :data:`NEWTON_TOLERANCE` px or after :data:`NEWTON_ITERATIONS` steps.
    4. The candidate whose maximum has the largest interpolated value wins
       (the earlier candidate on an exact tie).

    The grid, the interpolant and its derivatives are computed in float64
    from the maps' values, each sum in a fixed order per (map, position),
    by :meth:`Backend.upsample <gpucorr._backend.Backend>` (a numba kernel on the CPU,
    kernels/upsample.cu on the GPU): a result depends only on its own map and
    position, never on how many maps are processed together, on BLAS or on
    thread counts. Two maxima worth 1e-5 of each other are told apart by
    their value, not by rounding noise, and the result is continuous in the
    map: it does not jump where two grid points nearly tie.

    The interpolation is the exact inverse DFT of the map's full Hermitian
    spectrum (Nyquist terms split evenly). libertem-blobfinder instead drops
    the negative x frequencies of the half spectrum, which biases x.

    Parameters
    ----------
    maps : real array (B, H, W)
        Correlation maps (a constant offset does not matter).
    positions : integer array (B, Q, 2)
        Integer (y, x) positions in map coordinates; ``Q`` positions per map.
    factor : int
        Upsampling factor (> 1).

    Returns
    -------
    float32 array (B, Q, 2)
    """
    xp = backend.xp
    n_maps, h, w = maps.shape
    n_pos = positions.shape[1]
    out = xp.empty((n_maps, n_pos, 2), dtype=np.float32)
    if n_maps * n_pos == 0:
        return out
    tables = [_on_device(xp, a) for a in (_interpolation_kernel(h, factor),
                                          _interpolation_kernel(w, factor),
                                          _harmonics(h), _harmonics(w))]
    backend.upsample(xp.ascontiguousarray(maps), xp.ascontiguousarray(positions, dtype=np.int64),
                     int(factor), *tables, UPSAMPLE_CANDIDATES, NEWTON_ITERATIONS,
                     NEWTON_TOLERANCE, out)
    return out


def _on_device(xp, host):
    """A cached, read-only host constant ``host`` on the current device of ``xp``.

    Copied once per device, not once per chunk; ``host`` must be an array that
    lives on (from an ``lru_cache``), since it is looked up by identity.
    """
    if xp is np:
        return host
    key = (xp.cuda.Device().id, id(host))
    if key not in _device_arrays:
        _device_arrays[key] = (xp.asarray(host), host)  # keeps host alive: id stays unique
        # once per device: later calls may use the copy from any stream
        xp.cuda.get_current_stream().synchronize()
    return _device_arrays[key][0]


_device_arrays = {}


def _check_finite(xp, bad, what):
    """Raise for non-finite input on the CPU; on a GPU raising would need a host sync."""
    if xp is np and bool(xp.any(bad)):
        raise ValueError(f"{what} contain NaN or infinite values; gpucorr needs finite input")


def _mark_bad(xp, bad, out):
    """On a GPU, rows from non-finite input get NaN refineds, heights and elevations."""
    if xp is np:
        return
    out[1][...] = xp.where(bad[:, None], np.float32(np.nan), out[1])
    out[2][...] = xp.where(bad, np.float32(np.nan), out[2])
    out[3][...] = xp.where(bad, np.float32(np.nan), out[3])


def crop_frames(backend, frames, peaks, crop_size, rdtype, log=True, fill=None, bad=None,
                ws=None):
    """Crops (N * P, h, h) of every (frame, peak) pair, log-scaled unless ``log=False``.

    Pixels outside frame ``n`` take the value ``fill[n]`` (default 0). ``bad``
    (N * P,), if given, receives which crops hold non-finite values. ``ws``:
    the :class:`Workspace` the crops come from (default: a fresh array).
    """
    xp = backend.xp
    n = frames.shape[0] * peaks.shape[0]
    h = 2 * crop_size
    crops = _fresh(xp, ws).empty("crops", (frames.shape[0], peaks.shape[0], h, h), rdtype)
    if bad is None:
        bad = xp.zeros(n, dtype=np.bool_)
    if fill is None:
        fill = xp.zeros(frames.shape[0], dtype=rdtype)
    backend.crop_log(frames, peaks, crop_size, log, fill.astype(rdtype), crops, bad)
    if log:
        _check_finite(xp, bad, "frames")
    return crops.reshape(n, h, h)


def finish_fast(backend, crops, peaks, crop_size, filt, factor, out, ws=None):
    """Correlate log-scaled crops (N * P, h, h) and evaluate them into ``out``."""
    corrs, _, offsets = correlate(backend, crops, filt, ws=ws)
    backend.evaluate(corrs, peaks, crop_size, offsets, *out)
    if factor > 1:
        _upsample_crops(backend, corrs, peaks, crop_size, factor, out)


def _upsample_crops(backend, maps, peaks, crop_size, factor, out):
    """Upsampled refinement of fast mode: ``out[1]`` from the crops' maps and ``out[0]``."""
    xp = backend.xp
    origin = xp.tile(peaks - crop_size, (maps.shape[0] // peaks.shape[0], 1))
    rel = out[0] - origin
    pos = upsample_positions(backend, maps, rel[:, None, :], factor)
    out[1][...] = pos[:, 0] + origin


def run_fast(backend, frames, peaks, crop_size, filt, factor, out, ws=None):
    """Fast mode on a chunk: crop + log each peak, correlate the crops.

    Parameters
    ----------
    frames : array (N, H, W)
    peaks : int64 array (P, 2)
    filt : complex array (2 cs, cs + 1), from :func:`correlation_filter`
    factor : int
        Upsampling factor; <= 1 for none.
    out : tuple of arrays (centers (N*P, 2), refineds (N*P, 2), heights (N*P,),
        elevations (N*P,)), written in place.
    ws : Workspace, optional
        Scratch buffers; default: the calling thread's (:func:`thread_workspace`).
    """
    xp = backend.xp
    if ws is None:
        with thread_workspace(xp) as ws:
            return run_fast(backend, frames, peaks, crop_size, filt, factor, out, ws)
    n = frames.shape[0] * peaks.shape[0]
    rdtype = real_dtype(filt.dtype)
    if backend.fast_correlate_applies(crop_size, rdtype):
        # the GPU's fused kernel: crop, log, correlate and evaluate in one launch
        bad = xp.empty(n, dtype=np.bool_)
        h = 2 * crop_size
        maps = ws.empty("maps", (n, h, h), rdtype) if factor > 1 else None
        backend.fast_correlate(frames, peaks, crop_size, filt, maps, *out, bad)
        if factor > 1:
            _upsample_crops(backend, maps, peaks, crop_size, factor, out)
        _mark_bad(xp, bad, out)
        return
    bad = xp.zeros(n, dtype=np.bool_)
    crops = crop_frames(backend, frames, peaks, crop_size, real_dtype(filt.dtype), bad=bad,
                        ws=ws)
    finish_fast(backend, crops, peaks, crop_size, filt, factor, out, ws=ws)
    _mark_bad(xp, bad, out)


def full_maps(backend, frames, filt, bad=None, ws=None):
    """Log-scale and correlate whole frames (N, H, W); returns (maps, specs, offsets).

    ``bad`` (N,), if given, receives which frames hold non-finite values.
    ``ws``: as for :func:`correlate` (with a keeping workspace ``specs`` is None).
    """
    xp = backend.xp
    ws = _fresh(xp, ws)
    logged = ws.empty("logged", frames.shape, real_dtype(filt.dtype))
    if bad is None:
        bad = xp.zeros(frames.shape[0], dtype=np.bool_)
    backend.log_scale_frames(frames, logged, bad)
    _check_finite(xp, bad, "frames")
    return correlate(backend, logged, filt, ws=ws)


def finish_full(backend, crops, maps, offsets, peaks, crop_size, factor, out):
    """Evaluate crops (N * P, h, h) of the full-frame maps (N, H, W).

    ``offsets`` (N,) are the maps' means (see :func:`correlate`). Upsampling
    works on the whole-frame maps.
    """
    n_peaks = peaks.shape[0]
    backend.evaluate(crops, peaks, crop_size, backend.xp.repeat(offsets, n_peaks), *out)
    if factor > 1:
        centers = out[0].reshape(maps.shape[0], -1, 2)
        pos = upsample_positions(backend, maps, centers, factor)
        out[1][...] = pos.reshape(-1, 2)


def run_full(backend, frames, peaks, crop_size, filt, factor, out, ws=None):
    """Full mode on a chunk: log-scale and correlate whole frames, crop the maps.

    Same parameters as :func:`run_fast`, with ``filt`` of shape (H, W // 2 + 1).
    """
    xp = backend.xp
    if ws is None:
        with thread_workspace(xp) as ws:
            return run_full(backend, frames, peaks, crop_size, filt, factor, out, ws)
    bad = xp.zeros(frames.shape[0], dtype=np.bool_)
    maps, _, offsets = full_maps(backend, frames, filt, bad=bad, ws=ws)
    # outside the frame the map counts as 0, i.e. -mean in zero-mean terms
    crops = crop_frames(backend, maps, peaks, crop_size, maps.dtype, log=False, fill=-offsets,
                        ws=ws)
    finish_full(backend, crops, maps, offsets, peaks, crop_size, factor, out)
    _mark_bad(xp, xp.repeat(bad, peaks.shape[0]), out)


def frame_bytes(mode, frame_shape, n_peaks, crop_size, rdtype, factor):
    """Scratch bytes one frame needs in :func:`run_fast` / :func:`run_full`."""
    r = np.dtype(rdtype).itemsize
    h = 2 * crop_size
    crop = h * h * r
    fast = n_peaks * (3 * crop + h * (h // 2 + 1) * 2 * r)
    if mode == "fast":
        total = fast
    else:
        fy, fx = frame_shape
        total = 3 * fy * fx * r + fy * (fx // 2 + 1) * 2 * r + n_peaks * crop
    if factor > 1:
        # the upsampled positions; the kernels' own scratch does not grow with the chunk
        # (the CPU's is one search region's, the GPU's at most
        # gpucorr._cuda.UPSAMPLE_SCRATCH_BYTES)
        total += n_peaks * 2 * 4
    return total
