"""The LiberTEM UDF (gpucorr.libertem) against the batched API and libertem-blobfinder.

The UDF runs with LiberTEM's inline executor on in-memory datasets; its
results must equal ``gpucorr.refine`` on the same 4-D array exactly, and
agree with libertem-blobfinder's ``FastCorrelationUDF`` within the parity
rule of DESIGN.md.
"""
import subprocess
import sys

import numpy as np
import pytest

import gpucorr
from gpucorr.backends import devices as _backend
from gpucorr.patterns import Circular, RadialGradient, UserTemplate

from helpers import assert_results_match, optional_modules

# the UDF tests take needs_libertem; the import checks (test_import_gpucorr_does_not_import_
# libertem, test_missing_libertem_message) run without LiberTEM
libertem, needs_libertem = optional_modules("libertem")
if libertem is not None:
    from libertem.api import Context
    from libertem.executor.inline import InlineJobExecutor
    from libertem.io.dataset.memory import MemoryDataSet
    from libertem.udf.base import UDF

    from gpucorr.libertem import (  # noqa: F401
        CorrelationUDF, FastCorrelationUDF, FullFrameCorrelationUDF, SparseCorrelationUDF,
        run_blobfinder, run_fastcorrelation,
    )
else:  # what collection needs (test_fixed_mode_aliases's parameters); those tests skip
    FastCorrelationUDF = FullFrameCorrelationUDF = None

SCAN = (4, 5)
SIG = (64, 64)
RADIUS = 3
BUFFERS = ("centers", "refineds", "peak_values", "peak_elevations")


def refine_logged(*args, **kwargs):
    """gpucorr.refine log-scaled, as the compatible functions and the UDFs correlate
    (RadialGradient's own default in refine is no scaling)."""
    return gpucorr.refine(*args, scaling="log", **kwargs)


def scan_data(dtype, seed=20261124):
    """A (4, 5, 64, 64) scan of Poisson-noisy CBED frames whose lattice drifts sub-pixel.

    Each frame has a Poisson background (mean 3 counts), as detector data
    has: without it, the empty corners make flat correlation maps whose
    argmax is a tie that rounding decides.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(int(np.prod(SCAN))):
        zero = (SIG[0] / 2 + rng.uniform(-1, 1), SIG[1] / 2 + rng.uniform(-1, 1))
        frame, _, _ = gpucorr.cbed_frame(*SIG, zero=zero, a=(12, 1), b=(-1, 12),
                                         indices=np.mgrid[-2:3, -2:3], radius=RADIUS,
                                         dose=4e4, seed=rng)
        frames.append(frame[0] + rng.poisson(3.0, size=SIG))
    _, _, peaks = gpucorr.cbed_frame(*SIG, a=(12, 1), b=(-1, 12),
                                     indices=np.mgrid[-2:3, -2:3], radius=RADIUS)
    peaks = np.rint(peaks).astype(np.int64)
    # plus peaks at and beyond the frame edge: pixels outside the frame count as 0
    peaks = np.concatenate([peaks, [[0, 0], [SIG[0] - 1, SIG[1] - 1], [-2, 30]]])
    return np.stack(frames).reshape(SCAN + SIG).astype(dtype), peaks


@pytest.fixture(scope="module")
def ctx():
    return Context.make_with("inline")


@pytest.fixture(scope="module", params=[np.uint16, np.float32], ids=["uint16", "float32"])
def data(request):
    return scan_data(request.param)


def run(ctx, udf, data, num_partitions=3, tileshape=None, **kwargs):
    ds = MemoryDataSet(data=data, num_partitions=num_partitions, tileshape=tileshape)
    return ctx.run_udf(dataset=ds, udf=udf, **kwargs)


def results(res):
    """The four result buffers as arrays over the full scan."""
    return tuple(np.asarray(res[name].data) for name in BUFFERS)


def assert_equal_results(got, expected):
    for name, g, e in zip(BUFFERS, got, expected):
        assert g.dtype == e.dtype, name
        np.testing.assert_array_equal(g, e, err_msg=name)


# (num_partitions, tileshape): partitions of unequal size, by-frame and stacked tiles
LAYOUTS = [(2, None), (3, (1,) + SIG), (3, (4,) + SIG)]


@needs_libertem
@pytest.mark.parametrize("upsample", [False, True, 7], ids=lambda u: f"upsample={u}")
@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"parts{lay[0]}-tile{lay[1]}")
def test_udf_equals_refine(ctx, data, layout, mode, upsample):
    frames, peaks = data
    pattern = RadialGradient(radius=RADIUS)
    udf = CorrelationUDF(peaks=peaks, match_pattern=pattern, mode=mode, upsample=upsample)
    res = run(ctx, udf, frames, num_partitions=layout[0], tileshape=layout[1])
    expected = refine_logged(frames, peaks, pattern, mode=mode, upsample=upsample)
    assert_equal_results(results(res), tuple(expected))


@needs_libertem
@pytest.mark.parametrize("cls, mode", [(FastCorrelationUDF, "fast"),
                                       (FullFrameCorrelationUDF, "full")])
def test_fixed_mode_aliases(ctx, data, cls, mode):
    frames, peaks = data
    pattern = Circular(radius=RADIUS)
    udf = cls(peaks=peaks, match_pattern=pattern)
    assert udf.params.mode == mode
    assert isinstance(udf.copy(), cls) and udf.copy().params.mode == mode
    res = run(ctx, udf, frames, num_partitions=2)
    assert_equal_results(results(res), tuple(refine_logged(frames, peaks, pattern, mode=mode)))
    with pytest.raises(ValueError, match=f"always uses mode='{mode}'; got mode='bogus'"):
        cls(peaks=peaks, match_pattern=pattern, mode="bogus")


@needs_libertem
def test_roi(ctx, data):
    frames, peaks = data
    roi = np.zeros(SCAN, dtype=bool)
    # partitions [0, 6), [6, 13), [13, 20) of the flat scan: 4, 0 and 1 frames selected
    roi[0, 0:4] = roi[3, 4] = True
    pattern = RadialGradient(radius=RADIUS)
    res = run(ctx, CorrelationUDF(peaks=peaks, match_pattern=pattern), frames, roi=roi)
    expected = refine_logged(frames[roi], peaks, pattern)
    assert_equal_results(tuple(np.asarray(res[n].raw_data) for n in BUFFERS), tuple(expected))


@needs_libertem
def test_sparse_dataset(ctx):
    sparse = pytest.importorskip("sparse")
    frames, peaks = scan_data(np.uint16)
    pattern = RadialGradient(radius=RADIUS)
    ds = MemoryDataSet(data=sparse.COO.from_numpy(frames), num_partitions=2,
                       array_backends=(UDF.BACKEND_SPARSE_COO,))
    calls = []

    class Spy(CorrelationUDF):
        def process_partition(self, partition):
            calls.append(type(partition).__module__)
            super().process_partition(partition)

    udf = Spy(peaks=peaks, match_pattern=pattern,
              zero_shift=UDF.aux_data(np.tile([[0, 0], [1, -1]], (10, 1)), kind="nav",
                                      extra_shape=(2,), dtype=np.int64))
    res = ctx.run_udf(dataset=ds, udf=udf)
    assert calls and all(c.startswith("sparse") for c in calls)  # no densification by LiberTEM
    flat = frames.reshape((-1,) + SIG)
    expected = [refine_logged(f, peaks + (0, 0) if i % 2 == 0 else peaks + (1, -1), pattern)
                for i, f in enumerate(flat)]
    assert_equal_results(
        tuple(np.asarray(res[n].raw_data) for n in BUFFERS),
        tuple(np.stack([getattr(e, a) for e in expected])
              for a in ("centers", "refineds", "heights", "elevations")))


@needs_libertem
def test_partition_is_processed_in_one_call(ctx, data):
    frames, peaks = data
    shapes = []

    class Spy(CorrelationUDF):
        def process_partition(self, partition):
            shapes.append(partition.shape)
            super().process_partition(partition)

    run(ctx, Spy(peaks=peaks, match_pattern=RadialGradient(radius=RADIUS)), frames,
        num_partitions=3, tileshape=(1,) + SIG)
    assert sorted(s[0] for s in shapes) == [6, 7, 7]
    assert all(s[1:] == SIG for s in shapes)


@needs_libertem
def test_native_dtype_is_passed(ctx):
    frames, peaks = scan_data(np.uint16)
    dtypes = []

    class Spy(CorrelationUDF):
        def process_partition(self, partition):
            dtypes.append(partition.dtype)
            super().process_partition(partition)

    run(ctx, Spy(peaks=peaks, match_pattern=RadialGradient(radius=RADIUS)), frames,
        num_partitions=2)
    assert dtypes == [np.uint16, np.uint16]


@needs_libertem
@pytest.mark.parametrize("shift", [(0, 0), (2, -1), (-0.6, 1.4)])
def test_constant_zero_shift(ctx, data, shift):
    frames, peaks = data
    pattern = RadialGradient(radius=RADIUS)
    res = run(ctx, CorrelationUDF(peaks=peaks, match_pattern=pattern, zero_shift=shift),
              frames)
    expected = refine_logged(frames, peaks + np.round(shift).astype(int), pattern)
    assert_equal_results(results(res), tuple(expected))


@needs_libertem
def test_per_frame_zero_shift(ctx, data):
    frames, peaks = data
    pattern = RadialGradient(radius=RADIUS)
    rng = np.random.default_rng(7)
    shifts = rng.uniform(-1.4, 1.4, size=SCAN + (2,)).astype(np.float32)
    zero_shift = UDF.aux_data(shifts, kind="nav", extra_shape=(2,), dtype=np.float32)
    res = run(ctx, CorrelationUDF(peaks=peaks, match_pattern=pattern, zero_shift=zero_shift),
              frames)
    got = results(res)
    for idx in np.ndindex(*SCAN):
        expected = refine_logged(frames[idx], peaks + np.round(shifts[idx]).astype(int),
                                  pattern)
        for name, g, e in zip(BUFFERS, got, expected):
            np.testing.assert_array_equal(g[idx], e, err_msg=f"{name} at {idx}")


@needs_libertem
def test_pickles_through_executor(data):
    """debug=True makes the inline executor check that UDF and partitions pickle."""
    frames, peaks = data
    ctx = Context(executor=InlineJobExecutor(debug=True))
    pattern = RadialGradient(radius=RADIUS)
    res = run(ctx, CorrelationUDF(peaks=peaks, match_pattern=pattern, upsample=True), frames)
    assert_equal_results(results(res), tuple(refine_logged(frames, peaks, pattern,
                                                            upsample=True)))


@needs_libertem
def test_float_peaks_are_rounded():
    udf = CorrelationUDF(peaks=np.array([[10.4, 20.6], [-1.5, 3.2]]),
                         match_pattern=RadialGradient(radius=RADIUS))
    np.testing.assert_array_equal(udf.get_peaks(), [[10, 21], [-2, 3]])
    assert udf.get_pattern().radius == RADIUS


@needs_libertem
def test_argument_errors_when_run(ctx, data):
    """As libertem-blobfinder's, the constructors only store their arguments (LiberTEM and
    the peer's refinement mixins build UDFs with placeholder arguments, e.g.
    ``FastCorrelationUDF(0, None, None).get_backends()``); bad arguments raise from
    ``check()``, which ``run_udf`` calls through ``get_result_buffers`` before reading any
    frame."""
    frames, _ = data
    pattern = RadialGradient(radius=RADIUS)
    peaks = np.array([[10, 10]])
    assert UDF.BACKEND_NUMPY in FastCorrelationUDF(0, None, None).get_backends()
    cases = [
        (ValueError, "mode must be 'fast' or 'full'; got 'bogus'",
         dict(peaks=peaks, match_pattern=pattern, mode="bogus")),
        (ValueError, r"peaks must have shape \(P, 2\).*got \(3,\)",
         dict(peaks=np.array([1, 2, 3]), match_pattern=pattern)),
        (TypeError, "pattern must be a match pattern",
         dict(peaks=peaks, match_pattern="RadialGradient")),
        (ValueError, "upsample must be .* got 5000",
         dict(peaks=peaks, match_pattern=pattern, upsample=5000)),
        (ValueError, r"zero_shift must be None, a \(y, x\) pair.*\(3,\)",
         dict(peaks=peaks, match_pattern=pattern, zero_shift=(1, 2, 3))),
        (ValueError, "extra_shape",
         dict(peaks=peaks, match_pattern=pattern,
              zero_shift=UDF.aux_data(np.zeros(20, np.float32), kind="nav"))),
        (ValueError, "memory_limit must be a positive int",
         dict(peaks=peaks, match_pattern=pattern, memory_limit=0)),
    ]
    for error, match, kwargs in cases:
        udf = CorrelationUDF(**kwargs)
        with pytest.raises(error, match=match):
            udf.check()
        with pytest.raises(error, match=match):
            run(ctx, CorrelationUDF(**kwargs), frames)


@needs_libertem
def test_refine_errors_surface(ctx, data):
    """Errors of gpucorr.refine reach the caller, e.g. a crop larger than the frame."""
    frames, peaks = data
    udf = CorrelationUDF(peaks=peaks, match_pattern=RadialGradient(radius=20, search=40))
    with pytest.raises(ValueError, match="larger than the frame"):
        run(ctx, udf, frames)


@needs_libertem
def test_backends(monkeypatch):
    udf = CorrelationUDF(peaks=np.array([[10, 10]]), match_pattern=RadialGradient(RADIUS))
    backends = udf.get_backends()
    assert UDF.BACKEND_NUMPY in backends
    assert udf.get_method() == UDF.UDF_METHOD.PARTITION
    expected_cupy = getattr(_backend, "cuda_available", lambda: False)()
    assert (UDF.BACKEND_CUPY in backends) == expected_cupy
    # CuPy is declared exactly when gpucorr has a usable CUDA backend
    monkeypatch.setattr(_backend, "cuda_available", lambda: True, raising=False)
    assert UDF.BACKEND_CUPY in udf.get_backends()
    monkeypatch.setattr(_backend, "cuda_available", lambda: False, raising=False)
    assert UDF.BACKEND_CUPY not in udf.get_backends()
    # 2-D (flattened-signal) sparse backends would hand over (N, H*W): never declared
    assert not set(backends) & {UDF.BACKEND_SCIPY_CSR, UDF.BACKEND_SCIPY_CSC,
                                UDF.BACKEND_SCIPY_COO}


def _run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_import_gpucorr_does_not_import_libertem():
    proc = _run_python("import sys, gpucorr, gpucorr.api, gpucorr.cli; "
                       "assert not [m for m in sys.modules if m.split('.')[0] == 'libertem'], "
                       "sorted(m for m in sys.modules if m.startswith('libertem'))")
    assert proc.returncode == 0, proc.stderr


def test_missing_libertem_message():
    proc = _run_python(
        "import sys\n"
        "sys.modules['libertem'] = None  # as if LiberTEM were not installed\n"
        "try:\n"
        "    import gpucorr.libertem\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n")
    assert proc.returncode == 0, proc.stderr
    assert "pip install gpucorr[libertem]" in proc.stdout


# --- libertem-blobfinder's UDFs as the oracle ------------------------------------------

# the tests that compare with it take needs_reference too
lbf_udf, lbf_patterns, needs_reference = optional_modules(
    "libertem_blobfinder.udf.correlation", "libertem_blobfinder.common.patterns")


@needs_libertem
@needs_reference
def test_buffer_declarations_match_libertem_blobfinder(ctx):
    frames, peaks = scan_data(np.float32)
    ours = CorrelationUDF(peaks=peaks, match_pattern=RadialGradient(RADIUS))
    theirs = lbf_udf.FastCorrelationUDF(peaks=peaks,
                                        match_pattern=lbf_patterns.RadialGradient(RADIUS))
    ours_decl, theirs_decl = ours.get_result_buffers(), theirs.get_result_buffers()
    assert list(ours_decl) == list(theirs_decl) == list(BUFFERS)
    for name in BUFFERS:
        o, t = ours_decl[name], theirs_decl[name]
        assert (o.kind, o.extra_shape, np.dtype(o.dtype)) == \
            (t.kind, t.extra_shape, np.dtype(t.dtype)), name
    res_ours = run(ctx, ours, frames)
    res_theirs = run(ctx, theirs, frames)
    assert set(res_ours.keys()) == set(res_theirs.keys())
    for name in BUFFERS:
        a, b = np.asarray(res_ours[name].data), np.asarray(res_theirs[name].data)
        assert (a.shape, a.dtype) == (b.shape, b.dtype), name


ORACLE_PATTERNS = [("RadialGradient", dict(radius=RADIUS)), ("Circular", dict(radius=RADIUS)),
                   ("BackgroundSubtraction", dict(radius=RADIUS))]


@needs_libertem
@needs_reference
@pytest.mark.parametrize("pattern", ORACLE_PATTERNS, ids=lambda p: p[0])
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_matches_libertem_blobfinder_udf(ctx, data, pattern, mode):
    """Symmetric patterns, no upsampling: where libertem-blobfinder 0.6.1 is right."""
    frames, peaks = data
    name, kwargs = pattern
    theirs_cls = (lbf_udf.FastCorrelationUDF if mode == "fast"
                  else lbf_udf.FullFrameCorrelationUDF)
    theirs_pattern = getattr(lbf_patterns, name)(**kwargs)
    ours_pattern = getattr(gpucorr.patterns, name)(**kwargs)
    theirs = results(run(ctx, theirs_cls(peaks=peaks, match_pattern=theirs_pattern), frames))
    ours = results(run(ctx, CorrelationUDF(peaks=peaks, mode=mode, match_pattern=ours_pattern),
                       frames, num_partitions=2))
    assert_results_match(ours, theirs)


@needs_libertem
@needs_reference
def test_zero_shift_matches_libertem_blobfinder_udf(ctx, data):
    frames, peaks = data
    rng = np.random.default_rng(11)
    shifts = rng.uniform(-1.4, 1.4, size=SCAN + (2,)).astype(np.float32)

    def aux():
        return UDF.aux_data(shifts, kind="nav", extra_shape=(2,), dtype=np.float32)

    theirs = results(run(ctx, lbf_udf.FastCorrelationUDF(
        peaks=peaks, match_pattern=lbf_patterns.RadialGradient(RADIUS), zero_shift=aux()),
        frames))
    ours = results(run(ctx, FastCorrelationUDF(
        peaks=peaks, match_pattern=RadialGradient(RADIUS), zero_shift=aux()), frames))
    assert_results_match(ours, theirs)
    # a pattern object of libertem-blobfinder works in gpucorr's UDF too
    mixed = results(run(ctx, FastCorrelationUDF(
        peaks=peaks, match_pattern=lbf_patterns.RadialGradient(RADIUS), zero_shift=aux()),
        frames))
    assert_equal_results(mixed, ours)


@needs_libertem
def test_user_template(ctx):
    """An asymmetric UserTemplate: the UDF gives what gpucorr.refine gives."""
    frames, peaks = scan_data(np.float32)
    mask = np.zeros((9, 9), np.float32)
    mask[2:7, 4:9] = 1
    pattern = UserTemplate(mask, search=6)
    ours = results(run(ctx, CorrelationUDF(peaks=peaks, match_pattern=pattern), frames))
    assert_equal_results(ours, tuple(refine_logged(frames, peaks, pattern)))
