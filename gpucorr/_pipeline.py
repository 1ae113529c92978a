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
The large scratch arrays of a chunk (crops, spectra, maps, upsampling
products) come from a :class:`Workspace`. :func:`run_fast` and
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
def _interpolation_kernel_as(n, factor, dtype):
    kernel = np.asarray(_interpolation_kernel(n, factor), dtype=dtype)
    kernel.flags.writeable = False
    return kernel


def _kernel_on(xp, n, factor, dtype):
    """:func:`_interpolation_kernel` in ``dtype`` on the current device of ``xp``."""
    return _on_device(xp, _interpolation_kernel_as(n, factor, np.dtype(dtype).str))


def upsample_positions(backend, maps, positions, factor, ws=None):
    """Refine integer peak positions to ``1 / factor`` px by DFT upsampling.

    Each map is evaluated on a ``U x U`` grid (``U = ceil(1.5 factor)``) of
    spacing ``1 / factor`` around each position by trigonometric (DFT)
    interpolation, as in the matrix-multiply DFT of Guizar-Sicairos. The grid
    point of the largest value (first in C order on ties) is then refined
    below the grid spacing by the vertex of the 2-D quadratic through its 3x3
    neighbourhood (:func:`_vertex`), and finally polished by one Newton step
    on the interpolant itself (:func:`_newton`). The result is the maximum of
    the band-limited interpolant in the search region, continuous in the map:
    no jumps where two grid points nearly tie, so float32 rounding
    differences between backends move it by about 1e-5 px, not by a part of
    the grid step.

    The interpolation is the exact inverse DFT of the map's full Hermitian
    spectrum (Nyquist terms split evenly), computed in the spatial domain as
    ``Dy @ map @ Dx.T`` with real kernels. libertem-blobfinder instead drops
    the negative x frequencies of the half spectrum, which biases x.

    Parameters
    ----------
    maps : real array (B, H, W)
        Correlation maps (a constant offset does not matter).
    positions : integer array (B, Q, 2)
        Integer (y, x) positions in map coordinates; ``Q`` positions per map.
    factor : int
        Upsampling factor (> 1).
    ws : Workspace, optional
        Where the large intermediate products come from.

    Returns
    -------
    float32 array (B, Q, 2)
    """
    xp = backend.xp
    ws = _fresh(xp, ws)
    rdtype = maps.dtype
    n_maps, h, w = maps.shape
    n_pos = positions.shape[1]
    u = upsample_region_size(factor)
    dy = _kernel_on(xp, h, factor, maps.dtype)                                # (U, H)
    dx = _kernel_on(xp, w, factor, maps.dtype)                                # (U, W)
    pos = positions.astype(np.int64)
    if n_pos == 1:
        # roll each map so that its position is sample 0, laid out (H, B, W):
        # then both axes are one large GEMM each
        rolled = ws.empty("rolled", (h, n_maps, w), rdtype)
        backend.roll_to_origin(maps, xp.ascontiguousarray(pos[:, 0]), rolled)
        rows = xp.matmul(dy, rolled.reshape(h, n_maps * w),
                         out=ws.out("rows", (u, n_maps * w), rdtype))         # (U, B*W)
        region = xp.matmul(rows.reshape(u * n_maps, w), dx.T,
                           out=ws.out("region", (u * n_maps, u), rdtype))     # (U*B, U)
        region = xp.moveaxis(region.reshape(u, n_maps, u), 1, 0)[:, None]     # (B, 1, U, U)
    else:
        # several positions per map (full mode): roll the kernels instead
        ky = dy[:, (xp.arange(h) - pos[..., 0, None]) % h]                    # (U, B, Q, H)
        kx = dx[:, (xp.arange(w) - pos[..., 1, None]) % w]                    # (U, B, Q, W)
        kxt = xp.transpose(kx, (1, 3, 2, 0)).reshape(n_maps, w, n_pos * u)    # (B, W, Q*U)
        rows = xp.matmul(maps, kxt, out=ws.out("rows", (n_maps, h, n_pos * u), rdtype))
        rows = rows.reshape(n_maps, h, n_pos, u)                              # (B, H, Q, U)
        region = xp.matmul(xp.moveaxis(ky, 0, 2), xp.moveaxis(rows, 2, 1),
                           out=ws.out("region", (n_maps, n_pos, u, u), rdtype))  # (B, Q, U, U)
    if ws.keep and not region.flags.c_contiguous:
        flat = ws.empty("flat", (n_maps, n_pos, u, u), rdtype)
        flat[...] = region
        region = flat
    flat = region.reshape(n_maps * n_pos, u * u)
    idx = xp.argmax(flat, axis=-1)
    iy, ix = idx // u, idx % u
    oy, ox = _vertex(xp, flat, idx, iy, ix, u)
    delta = xp.stack((iy + oy, ix + ox), axis=-1) - u // 2
    start = pos + delta.reshape(n_maps, n_pos, 2) / factor
    return _newton(xp, maps, start, 1.0 / factor, ws).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _harmonics(n, dtype):
    """``[cos | sin](omega_k a)`` transposed, (2 (K + 1), n) in ``dtype``; ``omega_k`` and
    the weights ``w_k / n`` (float64), ``k = 0 .. K = n // 2``.

    The interpolation kernel of :func:`_interpolation_kernel` and its
    derivatives at ``t - a`` are per-point coefficients times this table.
    """
    k = np.arange(n // 2 + 1)
    omega = 2 * np.pi * k / n
    weight = np.where((k == 0) | (2 * k == n), 1.0, 2.0) / n
    angle = omega[:, None] * np.arange(n)[None, :]
    table = np.ascontiguousarray(np.concatenate([np.cos(angle), np.sin(angle)]), dtype=dtype)
    for a in (table, omega, weight):
        a.flags.writeable = False
    return table, omega, weight


def _kernel_rows(xp, n, t, dtype=np.float64, ws=None, name="kernel_rows"):
    """``D(t - a)``, ``D'(t - a)``, ``D''(t - a)`` for ``a = 0 .. n-1``: (P, 3, n) in ``dtype``.

    ``D`` is the trigonometric interpolation kernel of ``n`` samples
    (:func:`_interpolation_kernel`); ``t`` (P,) are continuous positions.
    """
    ws = _fresh(xp, ws)
    table, omega, weight = (_on_device(xp, a) for a in _harmonics(n, np.dtype(dtype).str))
    k1 = omega.shape[0]
    phase = t[:, None] * omega[None, :]                                       # (P, K+1)
    c = xp.cos(phase)
    c *= weight
    s = xp.sin(phase)
    s *= weight
    # cos(w (t - a)) = cos(w t) cos(w a) + sin(w t) sin(w a); sin likewise
    coefs = ws.empty(name + "_coefs", (t.shape[0], 3, 2 * k1), dtype)
    coefs[:, 0, :k1], coefs[:, 0, k1:] = c, s
    coefs[:, 1, :k1], coefs[:, 1, k1:] = -omega * s, omega * c
    coefs[:, 2, :k1], coefs[:, 2, k1:] = -omega * omega * c, -omega * omega * s
    return xp.matmul(coefs, table, out=ws.out(name, (t.shape[0], 3, n), dtype))


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


def _newton(xp, maps, start, step_limit, ws=None):
    """One Newton step towards the maximum of the maps' trigonometric interpolant.

    ``start`` (B, Q, 2) are positions in map pixels near a maximum (from the
    upsampled grid). The gradient and Hessian of the interpolant (the exact
    band-limited continuation of the map, as the upsampled grid) are
    evaluated there, and the step ``-H^-1 g`` is taken where ``H`` is
    negative definite and the step is at most ``step_limit`` (one grid
    spacing) along each axis. This ties the result to the interpolant's
    maximum rather than to which grid point won, so float32 differences in
    the maps move it by about their own size, not by a part of a grid step.
    The large products are in the maps' dtype, the sums and the step in
    float64.
    """
    ws = _fresh(xp, ws)
    n_maps, h, w = maps.shape
    n_pos = start.shape[1]
    t = start.reshape(-1, 2).astype(np.float64)
    ky = _kernel_rows(xp, h, t[:, 0], maps.dtype, ws, "newton_ky")           # (BQ, 3, H)
    kx = _kernel_rows(xp, w, t[:, 1], maps.dtype, ws, "newton_kx")           # (BQ, 3, W)
    # rows[b, q, j, y] = sum_x maps[b, y, x] kx[b q, j, x]
    rows = xp.matmul(kx.reshape(n_maps, n_pos * 3, w), xp.swapaxes(maps, 1, 2),
                     out=ws.out("newton_rows", (n_maps, n_pos * 3, h), maps.dtype))
    rows = rows.reshape(n_maps * n_pos, 3, h)

    def d(i, j):  # derivative i along y and j along x at t
        return (ky[:, i] * rows[:, j]).sum(axis=-1, dtype=np.float64)

    gy, gx = d(1, 0), d(0, 1)
    hyy, hxx, hxy = d(2, 0), d(0, 2), d(1, 1)
    det = hyy * hxx - hxy * hxy
    ok = (hyy < 0) & (hxx < 0) & (det > 0)
    safe = xp.where(ok, det, 1.0)
    sy = -(hxx * gy - hxy * gx) / safe
    sx = -(hyy * gx - hxy * gy) / safe
    ok &= (xp.abs(sy) <= step_limit) & (xp.abs(sx) <= step_limit)
    t[:, 0] += xp.where(ok, sy, 0.0)
    t[:, 1] += xp.where(ok, sx, 0.0)
    return t.reshape(n_maps, n_pos, 2)


def _vertex(xp, flat, idx, iy, ix, u):
    """Sub-grid offsets ``(oy, ox)`` of the maximum ``idx`` of each upsampled grid ``flat``.

    The vertex of the 2-D quadratic through the 3x3 neighbourhood of the grid
    maximum (gradient and Hessian by central differences, the cross term
    included). With the cross term, the neighbourhoods of two grid points
    that nearly tie give nearly the same vertex even for a tilted, elongated
    peak, so the result does not jump when the maximum moves to the next
    grid point; a parabola per axis through the maximum's row and column
    would jump by up to ``0.1 / factor`` px there.

    Where the neighbourhood leaves the grid, is not concave (Hessian not
    negative definite) or puts the vertex more than one grid step away, each
    axis falls back to the parabola through the maximum and its two
    neighbours along it (0 at the grid's edge or where not concave, else
    within +-0.5).
    """
    def at(dy, dx, ok):
        j = xp.where(ok, idx + dy * u + dx, idx)
        return xp.take_along_axis(flat, j[:, None], axis=1)[:, 0].astype(np.float64)

    in_y = (iy > 0) & (iy < u - 1)
    in_x = (ix > 0) & (ix < u - 1)
    inside = in_y & in_x
    f = at(0, 0, inside)
    up, down = at(-1, 0, in_y), at(1, 0, in_y)
    left, right = at(0, -1, in_x), at(0, 1, in_x)
    gy, gx = 0.5 * (down - up), 0.5 * (right - left)
    hyy, hxx = up - 2 * f + down, left - 2 * f + right
    hxy = 0.25 * (at(1, 1, inside) - at(1, -1, inside) - at(-1, 1, inside) + at(-1, -1, inside))
    det = hyy * hxx - hxy * hxy
    concave = inside & (hyy < 0) & (hxx < 0) & (det > 0)
    safe = xp.where(concave, det, 1.0)
    oy = -(hxx * gy - hxy * gx) / safe
    ox = -(hyy * gx - hxy * gy) / safe
    joint = concave & (xp.abs(oy) <= 1) & (xp.abs(ox) <= 1)

    def along(g, hh, ok):
        ok = ok & (hh < 0)
        return xp.where(ok, xp.clip(-g / xp.where(ok, hh, -1.0), -0.5, 0.5), 0.0)

    return (xp.where(joint, oy, along(gy, hyy, in_y)),
            xp.where(joint, ox, along(gx, hxx, in_x)))


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
        _upsample_crops(backend, corrs, peaks, crop_size, factor, out, ws)


def _upsample_crops(backend, maps, peaks, crop_size, factor, out, ws):
    """Upsampled refinement of fast mode: ``out[1]`` from the crops' maps and ``out[0]``."""
    xp = backend.xp
    origin = xp.tile(peaks - crop_size, (maps.shape[0] // peaks.shape[0], 1))
    rel = out[0] - origin
    pos = upsample_positions(backend, maps, rel[:, None, :], factor, ws=ws)
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
            _upsample_crops(backend, maps, peaks, crop_size, factor, out, ws)
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


def finish_full(backend, crops, maps, offsets, peaks, crop_size, factor, out, ws=None):
    """Evaluate crops (N * P, h, h) of the full-frame maps (N, H, W).

    ``offsets`` (N,) are the maps' means (see :func:`correlate`). Upsampling
    works on the whole-frame maps.
    """
    n_peaks = peaks.shape[0]
    backend.evaluate(crops, peaks, crop_size, backend.xp.repeat(offsets, n_peaks), *out)
    if factor > 1:
        centers = out[0].reshape(maps.shape[0], -1, 2)
        pos = upsample_positions(backend, maps, centers, factor, ws=ws)
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
    finish_full(backend, crops, maps, offsets, peaks, crop_size, factor, out, ws=ws)
    _mark_bad(xp, xp.repeat(bad, peaks.shape[0]), out)


def frame_bytes(mode, frame_shape, n_peaks, crop_size, rdtype, factor):
    """Scratch bytes one frame needs in :func:`run_fast` / :func:`run_full`."""
    r = np.dtype(rdtype).itemsize
    h = 2 * crop_size
    crop = h * h * r
    fast = n_peaks * (3 * crop + h * (h // 2 + 1) * 2 * r)
    if mode == "fast":
        total = fast
        sy, sx = h, h
    else:
        fy, fx = frame_shape
        total = 3 * fy * fx * r + fy * (fx // 2 + 1) * 2 * r + n_peaks * crop
        sy, sx = fy, fx
    if factor > 1:
        u = upsample_region_size(factor)
        total += n_peaks * 2 * r * 2 * (u * sy + (sx // 2 + 1) * u + sy * u + u * u)
    return total
