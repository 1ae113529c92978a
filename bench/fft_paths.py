"""CPU FFT paths with ``out=`` side by side: today's private pocketfft binding against public APIs.

Usage::

    nice -n 5 python bench/fft_paths.py [--rounds 9] [--reps 3] [--out bench/results] [--quick]

The pipeline (:func:`gpucorr.pipeline.correlate`) calls, on every chunk,

- ``rfft2(data, out=specs)`` over the last two axes of a real stack;
- ``irfft2(specs, (h, w), out=maps, overwrite_x=True, scaled=False)`` (the 1 / (h w)
  folded into the filter product), or, with ``keep_specs``,
  ``irfft2(specs, (h, w), out=maps, overwrite_x=False, scaled=True)``.

This times exactly those calls, on the stacks gpucorr transforms (crops (784, 32, 32)
and (784, 64, 64), i.e. 49 peaks x 16 frames; full frames (8 | 16, 256, 256)),
float32 and float64, for

- ``today``: the object the CPU backend calls (``_CPU._fft``: what
  ``_pocketfft()``/``cpu_fft()`` returns; ``_PocketFFT`` on the private
  ``scipy.fft._pocketfft.pypocketfft``);
- ``numpy``: :class:`NumpyFFT`, NumPy >= 2's public ``numpy.fft`` with ``out=``,
  unnormalised transforms and today's separate ``1 / (h w)`` pass;
- ``numpy-scaled``: :class:`NumpyFFTScaled`, the same asking numpy only for scaled
  transforms (which keeps float32 arithmetic in float32) and scaling back;
- ``ducc0``: :class:`DuccFFT`, ``ducc0.fft.r2c``/``c2r`` with ``out=``;
- variants of the ``scaled`` inverse: ``numpy-peraxis-norm`` (numpy's own
  ``1 / h``, ``1 / w``), ``ducc0-todayscaling`` (a pass after an unscaled ``c2r``);

every one single-threaded (the pipeline threads over chunks itself; one thread is
also the default of scipy.fft and of ducc0, and the only mode of numpy.fft), and, as
an extra, today's binding and ducc0 on all cores (``-allcores``). The implementations
are interleaved call by call, their order rotated every round; each call is timed on
its own, by wall clock and by the thread's CPU time (steadier on a loaded machine;
the spectra an ``overwrite_x`` call destroys are restored, untimed, before it).
Reports best and median seconds per call, ratios to today, and whether each
candidate gives today's bits (else the largest difference relative to the largest
magnitude of today's result, also in units of the dtype's eps). Prints markdown
tables (wall, CPU); writes JSON to ``<out>/fft-paths-<UTC time>-<git short hash>.json``.

The candidate classes have :class:`gpucorr.backends.fft._PocketFFT`'s interface
(``rfft2(a, out)``, ``irfft2(a, s, out, overwrite_x, scaled=True)``) so that one can
move into the package as it is.
"""
import argparse
import datetime
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.fft

from gpucorr.backends.devices import _cpu_model

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- candidates

def _scale(out, h, w):
    """Today's ``1 / (h w)`` pass: ``T(1 / (long double)(h w))``, as pocketfft's ``inorm=2``."""
    np.multiply(out, out.dtype.type(1 / np.longdouble(h * w)), out=out)
    return out


class NumpyFFT:
    """NumPy >= 2's public ``numpy.fft`` with ``out=`` (pocketfft C++ as gufuncs).

    ``numpy.fft`` keeps float32 as complex64 / float32 since NumPy 2.0 (before, it
    computed everything in float64). It has no thread count: always one thread.
    Unnormalised float32 transforms are slow with NumPy 2.4: ``_raw_fft`` passes
    ``fct=1`` (a Python int) to the gufunc, which then runs its float64 loop on
    casts of the float32 data (float32 out, float64 arithmetic, 2-3x the time; see
    :class:`NumpyFFTScaled`); float64 is unaffected.

    - ``rfft2``: ``numpy.fft.rfft2(a, out=out)``: ``rfft`` along the last axis into
      ``out``, then ``fft`` along the rows from ``out`` into ``out``.
    - ``irfft2``: ``ifft`` along the rows, unnormalised, in place in ``a`` with
      ``overwrite_x`` (else into a temporary, as ``numpy.fft.irfft2`` does), then the
      unnormalised ``irfft`` along the last axis into ``out``; ``scaled`` multiplies by
      ``T(1 / (long double)(h w))`` afterwards, as today. numpy's own ``norm=`` cannot
      fold one ``1 / (h w)`` into the transform: ``norm="backward"`` scales by
      ``1 / h`` and by ``1 / w`` in the two passes (different rounding);
      ``per_axis_norm=True`` does that instead of the extra pass.
    """

    def __init__(self, per_axis_norm=False):
        self.per_axis_norm = per_axis_norm

    def rfft2(self, a, out):
        if out is None:
            return scipy.fft.rfft2(a, axes=(-2, -1))
        return np.fft.rfft2(a, axes=(-2, -1), out=out)

    def irfft2(self, a, s, out, overwrite_x, scaled=True):
        h, w = s
        if out is None or a.shape[-2:] != (h, w // 2 + 1):
            return scipy.fft.irfft2(a, s=s, axes=(-2, -1), norm="backward" if scaled else "forward")
        norm = "backward" if (scaled and self.per_axis_norm) else "forward"
        tmp = np.fft.ifft(a, axis=-2, norm=norm, out=a if overwrite_x else None)
        np.fft.irfft(tmp, n=w, axis=-1, norm=norm, out=out)
        if scaled and not self.per_axis_norm:
            _scale(out, h, w)
        return out


class NumpyFFTScaled(NumpyFFT):
    """:class:`NumpyFFT` that never asks numpy.fft for an unnormalised transform.

    With NumPy 2.4 an unnormalised float32 transform (``norm="backward"`` forward,
    ``norm="forward"`` inverse) passes ``fct=1``, a Python int, to the gufunc, whose
    type resolution then picks the float64 loop ('dd->D') and casts in and out:
    float32 storage, float64 arithmetic, 2-3x the time (see ``_numpy_f32_check``).
    A float32 factor (``1 / n``) keeps the float32 loop. So this scales inside each
    transform (``norm="forward"`` forward, ``"backward"`` inverse) and multiplies back
    by ``h w`` where the interface wants no scaling: an extra pass, exact (the same
    bits as unscaled) only where ``h w`` is a power of two, as gpucorr's crops are.
    """

    def rfft2(self, a, out):
        if out is None:
            return scipy.fft.rfft2(a, axes=(-2, -1))
        h, w = a.shape[-2:]
        np.fft.rfft2(a, axes=(-2, -1), norm="forward", out=out)
        np.multiply(out, out.real.dtype.type(h * w), out=out)
        return out

    def irfft2(self, a, s, out, overwrite_x, scaled=True):
        h, w = s
        if out is None or a.shape[-2:] != (h, w // 2 + 1):
            return scipy.fft.irfft2(a, s=s, axes=(-2, -1), norm="backward" if scaled else "forward")
        tmp = np.fft.ifft(a, axis=-2, norm="backward", out=a if overwrite_x else None)
        np.fft.irfft(tmp, n=w, axis=-1, norm="backward", out=out)
        if not scaled:
            np.multiply(out, out.dtype.type(h * w), out=out)
        return out


class DuccFFT:
    """``ducc0.fft`` (pocketfft's successor, same author) with ``out=``.

    - ``rfft2``: one multi-axis ``r2c`` into ``out`` (unnormalised).
    - ``irfft2``: one multi-axis ``c2r`` into ``out`` with ``inorm=2`` (``1 / (h w)``,
      applied inside the transform) where ``scaled``; ``overwrite_x`` passes
      ``allow_overwriting_input=True``, so the row ``c2c`` runs in place in ``a``
      instead of a temporary: what today's ``_PocketFFT`` does by hand in two calls.
    """

    def __init__(self, nthreads=1):
        import ducc0.fft
        self.fft = ducc0.fft
        self.nthreads = nthreads

    def rfft2(self, a, out):
        if out is None:
            return scipy.fft.rfft2(a, axes=(-2, -1))
        return self.fft.r2c(a, axes=(a.ndim - 2, a.ndim - 1), forward=True, inorm=0,
                            out=out, nthreads=self.nthreads)

    def irfft2(self, a, s, out, overwrite_x, scaled=True):
        h, w = s
        if out is None or a.shape[-2:] != (h, w // 2 + 1):
            return scipy.fft.irfft2(a, s=s, axes=(-2, -1), norm="backward" if scaled else "forward")
        return self.fft.c2r(a, axes=(a.ndim - 2, a.ndim - 1), lastsize=w, forward=False,
                            inorm=2 if scaled else 0, out=out, nthreads=self.nthreads,
                            allow_overwriting_input=bool(overwrite_x))


class DuccFFTTodayScaling(DuccFFT):
    """:class:`DuccFFT`, but ``scaled`` as an unscaled transform and then today's
    ``1 / (h w)`` pass (only to see whether ducc0's in-transform ``inorm=2`` rounds
    the same as a multiplication afterwards, and what the extra pass costs)."""

    def irfft2(self, a, s, out, overwrite_x, scaled=True):
        if not scaled or out is None:
            return super().irfft2(a, s, out, overwrite_x, scaled)
        return _scale(super().irfft2(a, s, out, overwrite_x, False), *s)


# --------------------------------------------------------------------------- today's

#: where the CPU backend lived / lives (the package is being reorganised)
_CANDIDATE_MODULES = ("gpucorr.backends", "gpucorr.backends", "gpucorr.backends.fft")
#: the factory of the CPU FFT object, by its names so far
_FACTORIES = ("_pocketfft", "cpu_fft")


def _load_file(path):
    """Import one file on its own (not through ``gpucorr/__init__``), as ``_fftpaths_today``."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_fftpaths_today", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _today():
    """(today's CPU FFT object, how it was found).

    The object the CPU backend calls: ``_CPU._fft`` of the module that has it, else
    what the factory (``_pocketfft()``/``cpu_fft()``) next to ``class _PocketFFT``
    returns. Where the package does not import (mid-reorganisation), the file
    holding ``class _PocketFFT`` is loaded on its own.
    """
    errors = []
    for name in _CANDIDATE_MODULES:
        try:
            mod = importlib.import_module(name)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        cpu = getattr(mod, "_CPU", None)
        for attr in ("_fft", "fft"):
            obj = getattr(cpu, attr, None)
            if obj is not None and hasattr(obj, "rfft2") and hasattr(obj, "irfft2"):
                return obj, f"{name}._CPU.{attr}"
        for f in _FACTORIES:
            if hasattr(mod, f) and hasattr(mod, "_PocketFFT"):
                return getattr(mod, f)(), f"{name}.{f}()"
    hits = subprocess.run(["grep", "-rl", "--include=*.py", "class _PocketFFT", "gpucorr"],
                          cwd=ROOT, capture_output=True, text=True, check=False).stdout.split()
    for path in hits:
        mod = _load_file(path)
        for f in _FACTORIES:
            if hasattr(mod, f):
                return getattr(mod, f)(), f"{path} (loaded alone).{f}()"
    raise SystemExit("today's CPU FFT not found:\n" + "\n".join(errors))


def _today_all_cores(today):
    """Today's calls to the private binding with ``workers=os.cpu_count()`` (extra)."""
    base = type(today)
    workers = os.cpu_count()

    class PocketFFTAllCores(base):
        def rfft2(self, a, out):
            return self.pfft.r2c(a, (a.ndim - 2, a.ndim - 1), True, 0, out, workers)

        def irfft2(self, a, s, out, overwrite_x, scaled=True):
            h, w = s
            if not overwrite_x:
                return self.pfft.c2r(a, (a.ndim - 2, a.ndim - 1), w, False, 2 if scaled else 0,
                                     out, workers)
            self.pfft.c2c(a, (a.ndim - 2,), False, 0, a, workers)
            self.pfft.c2r(a, (a.ndim - 1,), w, False, 0, out, workers)
            return _scale(out, h, w) if scaled else out

    return PocketFFTAllCores(today.pfft)


# --------------------------------------------------------------------------- the run

SHAPES = [(784, 32, 32), (784, 64, 64), (8, 256, 256), (16, 256, 256)]
DTYPES = [np.float32, np.float64]
#: (op name, what the pipeline calls)
OPS = {
    "rfft2": "rfft2(data, out=specs)",
    "irfft2-pipeline": "irfft2(specs, s, out=maps, overwrite_x=True, scaled=False)",
    "irfft2-keep_specs": "irfft2(specs, s, out=maps, overwrite_x=False, scaled=True)",
}
BASELINE = "today"
#: extra bit comparisons: variant -> the candidate it varies
PAIRS = {"ducc0-todayscaling": "ducc0", "numpy-peraxis-norm": "numpy", "numpy-scaled": "numpy"}


def _case_data(shape, dtype, rng):
    """A stack of positive log-scaled frames and the spectra correlate() hands irfft2:
    rfft2(data) times the spectrum of a real disc mask (so valid half spectra)."""
    _, h, w = shape
    data = np.log1p(rng.gamma(2.0, 50.0, size=shape)).astype(dtype)
    yy, xx = np.mgrid[:h, :w]
    mask = (((yy - h // 2) ** 2 + (xx - w // 2) ** 2) <= (h // 5) ** 2).astype(dtype)
    mask -= mask.mean()
    filt = scipy.fft.rfft2(mask)
    specs = scipy.fft.rfft2(data, axes=(-2, -1)) * filt
    specs[..., 0, 0] = 0
    return data, np.ascontiguousarray(specs)


def _call(impl, op, data, specs_src, work, specs_out, maps_out, hw):
    """One call of ``op``; returns ((wall s, thread CPU s), result). ``work`` gets
    ``specs_src`` first (untimed).

    The thread's CPU time (``CLOCK_THREAD_CPUTIME_ID``, user + system, page faults
    included) leaves out the time the thread waits for a core: on a shared, loaded
    machine it is the steadier measure of a single-threaded call. It does not count
    the helper threads of the ``-allcores`` variants: read those by wall time only.
    """
    if op == "rfft2":
        c, t = time.thread_time(), time.perf_counter()
        r = impl.rfft2(data, specs_out)
        return (time.perf_counter() - t, time.thread_time() - c), r
    np.copyto(work, specs_src)
    overwrite = op == "irfft2-pipeline"
    c, t = time.thread_time(), time.perf_counter()
    r = impl.irfft2(work, hw, maps_out, overwrite, not overwrite)
    return (time.perf_counter() - t, time.thread_time() - c), r


def _compare(got, ref):
    """Bit identity and size of the difference of ``got`` from ``ref``."""
    same = got.dtype == ref.dtype and np.array_equal(got, ref)
    out = {"bit_identical": bool(same), "dtype": str(got.dtype), "ref_dtype": str(ref.dtype)}
    if not same:
        d = np.abs(got.astype(ref.dtype) - ref)
        scale = float(np.max(np.abs(ref)))
        eps = float(np.finfo(ref.real.dtype).eps)
        out["max_abs_diff"] = float(d.max())
        out["max_rel_diff"] = float(d.max()) / scale  # relative to the largest |ref|
        out["max_rel_diff_eps"] = out["max_rel_diff"] / eps
        out["frac_differing"] = float(np.count_nonzero(d) / d.size)
    return out


def run(rounds, reps, shapes, impls, rng):
    rows = []
    for shape in shapes:
        _, h, w = shape
        for dtype in DTYPES:
            data, specs = _case_data(shape, dtype, rng)
            cdtype = specs.dtype
            specs_out = np.empty(shape[:-1] + (w // 2 + 1,), cdtype)
            maps_out = np.empty(shape, dtype)
            work = np.empty_like(specs)
            for op in OPS:
                names = [n for n, (_, ops) in impls.items() if ops is None or op in ops]
                # bits: one call each on the same input, results kept
                results = {}
                for n in names:
                    _, r = _call(impls[n][0], op, data, specs, work, specs_out, maps_out, (h, w))
                    results[n] = np.array(r, copy=True)
                ref = results[BASELINE]
                bits = {n: _compare(results[n], ref) for n in names if n != BASELINE}
                for n, other in PAIRS.items():
                    if n in results and other in results:
                        bits[n]["vs_" + other] = _compare(results[n], results[other])
                # warm-up, then interleaved timing, order rotated each round
                for n in names:
                    _call(impls[n][0], op, data, specs, work, specs_out, maps_out, (h, w))
                times = {n: [] for n in names}
                cpu = {n: [] for n in names}
                for k in range(rounds):
                    order = names[k % len(names):] + names[:k % len(names)]
                    for n in order:
                        for _ in range(reps):
                            (t, c), _r = _call(impls[n][0], op, data, specs, work,
                                               specs_out, maps_out, (h, w))
                            times[n].append(t)
                            cpu[n].append(c)
                for n in names:
                    ts = times[n]
                    row = dict(shape=list(shape), dtype=np.dtype(dtype).name, op=op, impl=n,
                               best_s=min(ts), median_s=statistics.median(ts), n=len(ts),
                               cpu_best_s=min(cpu[n]), cpu_median_s=statistics.median(cpu[n]),
                               loadavg_1min=os.getloadavg()[0])
                    if n != BASELINE:
                        base = times[BASELINE]
                        row["ratio_best"] = min(ts) / min(base)
                        row["ratio_median"] = statistics.median(ts) / statistics.median(base)
                        cbase = cpu[BASELINE]
                        row["cpu_ratio_best"] = min(cpu[n]) / min(cbase)
                        row["cpu_ratio_median"] = statistics.median(cpu[n]) / statistics.median(cbase)
                        row["bits"] = bits[n]
                    rows.append(row)
                print(f"# {shape} {np.dtype(dtype).name} {op}: " + ", ".join(
                    f"{n} {1e3 * statistics.median(times[n]):.3f} ms"
                    f" (cpu {1e3 * statistics.median(cpu[n]):.3f})" for n in names),
                    file=sys.stderr, flush=True)
    return rows


def _table(rows, impls, clock="wall"):
    """Markdown table of ratios to today by ``clock``: "wall" or "cpu" (thread CPU time)."""
    pre = "" if clock == "wall" else "cpu_"
    cols = [n for n in impls if n != BASELINE and not (clock == "cpu" and "allcores" in n)]
    lines = [f"| shape | dtype | op | today median ms ({clock}) | "
             + " | ".join(f"{c} (med / best)" for c in cols) + " |",
             "|---|---|---|---:|" + "---:|" * len(cols)]
    key = lambda r: (tuple(r["shape"]), r["dtype"], r["op"])
    groups = {}
    for r in rows:
        groups.setdefault(key(r), {})[r["impl"]] = r
    for (shape, dtype, op), g in groups.items():
        cells = []
        for c in cols:
            r = g.get(c)
            if r is None:
                cells.append("")
                continue
            mark = "" if r["bits"]["bit_identical"] else " *"
            cells.append(f"{r[pre + 'ratio_median']:.2f} / {r[pre + 'ratio_best']:.2f}{mark}")
        lines.append(f"| {'x'.join(map(str, shape))} | {dtype} | {op} | "
                     f"{1e3 * g[BASELINE][pre + 'median_s']:.3f} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"ratio = candidate {clock} time / today's (< 1: faster), median / best; "
                 "* = not bit-identical to today")
    return "\n".join(lines)


def _numpy_f32_check(rng):
    """numpy.fft's float32 speed by ``norm=`` (public API only): the unnormalised
    transforms pass ``fct=1`` (a Python int) to the gufunc, which then casts it,
    and float32 runs several times slower than with a float32 ``fct``
    (``norm="forward"`` on a forward transform: ``fct = float32(1 / n)``)."""
    res = {}
    for dtype in DTYPES:
        x = rng.random((784, 32, 32)).astype(dtype)
        out = np.empty((784, 32, 17), np.result_type(dtype, np.complex64))
        for norm in ("backward", "forward"):
            ts = []
            for _ in range(15):
                t = time.perf_counter()
                np.fft.rfft(x, axis=-1, norm=norm, out=out)
                ts.append(time.perf_counter() - t)
            res[f"{np.dtype(dtype).name} rfft(784x32x32, axis=-1, norm={norm!r}) median ms"] = \
                1e3 * statistics.median(ts)
    return res


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False,
                              timeout=30).stdout.strip()
    except Exception:
        return ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=3, help="calls timed per impl per round")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true", help="2 rounds, small shapes (a check)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    import ducc0
    today, today_from = _today()
    impls = {  # name: (object, ops it runs (None: all))
        "today": (today, None),
        "numpy": (NumpyFFT(), None),
        "numpy-peraxis-norm": (NumpyFFT(per_axis_norm=True), {"irfft2-keep_specs"}),
        "numpy-scaled": (NumpyFFTScaled(), None),
        "ducc0": (DuccFFT(nthreads=1), None),
        "ducc0-todayscaling": (DuccFFTTodayScaling(nthreads=1), {"irfft2-keep_specs"}),
    }
    if hasattr(today, "pfft"):
        impls["today-allcores"] = (_today_all_cores(today), None)
    impls["ducc0-allcores"] = (DuccFFT(nthreads=0), None)

    # numpy.fft keeps float32? (it computed in float64 before NumPy 2.0)
    x32 = np.ones((2, 8, 8), np.float32)
    np_f32 = {"rfft2_dtype": str(np.fft.rfft2(x32).dtype),
              "irfft2_dtype": str(np.fft.irfft2(np.fft.rfft2(x32), s=(8, 8)).dtype)}

    np_f32["speed_by_norm"] = _numpy_f32_check(np.random.default_rng(1))
    print(json.dumps(np_f32, indent=1), file=sys.stderr)
    shapes = [(49, 32, 32), (2, 256, 256)] if args.quick else SHAPES
    rounds = 2 if args.quick else args.rounds
    load_before = os.getloadavg()
    t0 = time.time()
    rows = run(rounds, args.reps, shapes, impls, np.random.default_rng(0))
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        commit=_git("rev-parse", "--short", "HEAD"), dirty=bool(_git("status", "--porcelain")),
        today_class=f"{type(today).__module__}.{type(today).__qualname__}",
        today_from=today_from,
        numpy=np.__version__, scipy=scipy.__version__, ducc0=ducc0.__version__,
        python=platform.python_version(), cpu=_cpu_model(), cpus=os.cpu_count(),
        affinity=len(os.sched_getaffinity(0)), nice=os.nice(0),
        loadavg_before=load_before, loadavg_after=os.getloadavg(),
        seconds=time.time() - t0, rounds=rounds, reps=args.reps, ops=OPS,
        numpy_fft_float32=np_f32,
        impls={n: f"{type(o).__qualname__}" + (f" nthreads={o.nthreads}" if hasattr(o, "nthreads") else "")
               for n, (o, _) in impls.items()},
    )
    table = _table(rows, impls, "wall") + "\n\n" + _table(rows, impls, "cpu")
    print(table)
    if not args.no_write and not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = out / f"fft-paths-{stamp}-{meta['commit'] or 'nogit'}.json"
        path.write_text(json.dumps(dict(meta=meta, rows=rows, table=table), indent=1) + "\n")
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
