"""Input checks of issue 13: each bad input is a TypeError or ValueError whose message names
the argument, what was given and what is allowed; nothing the caller passed in changes
when a check raises; valid inputs next to the refused ones keep working.

Before these checks, the inputs below passed silently and gave wrong numbers (a peak at
int64's minimum refined to 9.2e18, float32 frames of +-3e38 gave NaN heights, integer
crop buffers truncated the frame) or failed with an unrelated message.
"""
import contextlib

import numpy as np
import pytest

# the overflowing cases warn on their way to the ValueError (the FFT of a crop that holds
# log(0)); the warning is not what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:divide by zero encountered:RuntimeWarning",
                                        "ignore:overflow encountered:RuntimeWarning")

import gpucorr
from gpucorr import correlation, patterns

PATTERN = patterns.Circular(radius=3)
CS = PATTERN.get_crop_size()                       # crops of 12 x 12
FRAMES = np.random.default_rng(13).random((2, 32, 32)).astype(np.float32)
PEAKS = np.array([[10, 10], [22, 20]])
INT64_MIN = np.iinfo(np.int64).min
LONGDOUBLE = np.dtype(np.longdouble)


@contextlib.contextmanager
def unchanged(**arrays):
    """Assert that every array (by name) holds the same bytes after the block (which is
    expected to raise, inside ``pytest.raises``)."""
    before = {name: (np.asarray(a).dtype, np.asarray(a).shape, np.asarray(a).tobytes())
              for name, a in arrays.items()}
    try:
        yield
    finally:
        for name, a in arrays.items():
            a = np.asarray(a)
            assert (a.dtype, a.shape, a.tobytes()) == before[name], f"{name} was modified"


def outs(n=len(PEAKS), centers=np.int32):
    return dict(out_centers=np.zeros((n, 2), centers), out_refineds=np.zeros((n, 2), np.float32),
                out_heights=np.zeros(n, np.float32), out_elevations=np.zeros(n, np.float32))


def fast_args(frame=None, peaks=PEAKS, template_dtype=None, **kwargs):
    """process_frame_fast's arguments, as libertem-blobfinder's docs call it."""
    template = PATTERN.get_template((2 * CS, 2 * CS))
    args = dict(template=template if template_dtype is None else template.astype(template_dtype),
                crop_size=CS, frame=FRAMES[0] if frame is None else frame, peaks=peaks,
                crop_bufs=gpucorr.allocate_crop_bufs(CS, len(peaks), np.float32),
                **outs(len(peaks)))
    args.update(kwargs)
    return args


def full_args(frame=None, peaks=PEAKS, template_dtype=None, **kwargs):
    frame = FRAMES[0] if frame is None else frame
    template = PATTERN.get_template(frame.shape)
    args = dict(template=template if template_dtype is None else template.astype(template_dtype),
                crop_size=CS, frame=frame, peaks=peaks)
    args.update(kwargs)
    return args


# ------------------------------------------------------------------ 1. peaks beyond +-2**30

#: every public function that takes peaks, called on ``peaks`` (all else valid)
PEAK_TAKERS = {
    "refine-fast": lambda p: gpucorr.refine(FRAMES, p, PATTERN),
    "refine-full": lambda p: gpucorr.refine(FRAMES, p, PATTERN, mode="full"),
    "process_frame_fast": lambda p: correlation.process_frame_fast(**fast_args(peaks=p)),
    "process_frame_full": lambda p: correlation.process_frame_full(**full_args(peaks=p)),
    "process_frames_fast": lambda p: correlation.process_frames_fast(PATTERN, FRAMES, p),
    "process_frames_full": lambda p: correlation.process_frames_full(PATTERN, FRAMES, p),
    "crop_disks_from_frame": lambda p: correlation.crop_disks_from_frame(
        p, FRAMES[0], CS, np.zeros((len(p), 2 * CS, 2 * CS), np.float32)),
    "crop_disks_from_frame_slicing": lambda p: correlation.crop_disks_from_frame_slicing(
        p, FRAMES[0], CS, np.zeros((len(p), 2 * CS, 2 * CS), np.float32)),
}


@pytest.mark.parametrize("func", list(PEAK_TAKERS))
def test_peak_at_int64_minimum_is_refused(func):
    """abs(int64 min) is int64 min (negative), which slipped past ``abs(peaks) > 2**30``:
    the peak was refined to 9.2e18."""
    peaks = np.array([[10, 10], [INT64_MIN, 5]])
    with unchanged(peaks=peaks, frames=FRAMES), pytest.raises(
            ValueError, match=r"^peaks hold positions beyond \+-2\*\*30 \(centres are int32\); "
                              r"got -9223372036854775808$"):
        PEAK_TAKERS[func](peaks)


@pytest.mark.parametrize("func", list(PEAK_TAKERS))
@pytest.mark.parametrize("peaks, got", [
    (np.array([[10, 10], [2**63 + 5, 5]], np.uint64), "9223372036854775813"),
    (np.array([[10.0, 10.0], [1e30, 5.0]]), r"1e\+30"),
    (np.array([[10.0, 10.0], [5.0, -1e30]]), r"-1e\+30"),
    (np.array([[10, 10], [5, -2**30 - 1]]), "-1073741825"),
], ids=["uint64", "float-1e30", "float-minus-1e30", "int64-just-below"])
def test_huge_unsigned_and_float_peaks_are_refused(func, peaks, got):
    """Compared as they are: no conversion to int64 first, which would wrap them into range
    (a guard: these were refused before the fix too)."""
    with unchanged(peaks=peaks), pytest.raises(
            ValueError, match=rf"^peaks hold positions beyond \+-2\*\*30 \(centres are int32\); "
                              rf"got {got}$"):
        PEAK_TAKERS[func](peaks)


def test_peaks_at_the_limit_are_accepted():
    peaks = np.array([[10, 10], [-2**30, 2**30]])
    res = gpucorr.refine(FRAMES, peaks, PATTERN)
    np.testing.assert_array_equal(res.refineds[:, 0], gpucorr.refine(FRAMES, PEAKS[:1],
                                                                     PATTERN).refineds[:, 0])


# ------------------------------------------------- 2. log scaling beyond the compute dtype

def huge(frames=FRAMES, frame=1, at=((9, 9), (11, 11)), value=3e38):
    """``frames`` with +value and -value at the two pixels ``at`` of frame ``frame``."""
    frames = frames.copy()
    (y0, x0), (y1, x1) = at
    frames[frame, y0, x0] = value
    frames[frame, y1, x1] = -value
    return frames


SPAN32 = r"must span at most 3.4028235e\+38 \(max - min \+ 1, the largest float32\) within each "
LOG = r" for the log scaling log\(x - min \+ 1\) to stay finite; "
F64 = r"; scale them down, or pass them as float64$"


@pytest.mark.parametrize("mode, where", [
    ("fast", r"crop" + LOG + r"got values from -3e\+38 to 3e\+38 in frame 1 in the crop around "
             r"peak \(10, 10\)" + F64),
    ("full", r"frame" + LOG + r"got values from -3e\+38 to 3e\+38 in frame 1" + F64),
])
def test_float32_frames_spanning_more_than_float32_are_refused(mode, where):
    """Finite float32 frames whose max - min + 1 overflows float32 gave NaN heights and
    centres at peak - crop_size; now a ValueError naming frames, the frame, the crop, the
    values, the allowed span and that float64 frames would do."""
    frames = huge()
    with unchanged(frames=frames, peaks=PEAKS), pytest.raises(
            ValueError, match="^frames " + SPAN32 + where):
        gpucorr.refine(frames, PEAKS, PATTERN, mode=mode)


def test_only_the_crop_with_the_huge_span_is_named():
    """Frame 0 holds +-3e38 only inside the crop of peak (22, 20) (rows 16..27, columns
    14..25): the message names that crop, not the other one and not frame 1."""
    frames = huge(frame=0, at=((21, 19), (23, 21)))
    with unchanged(frames=frames), pytest.raises(
            ValueError, match=r"^frames " + SPAN32 + r"crop" + LOG + r"got values from -3e\+38 to "
                              r"3e\+38 in frame 0 in the crop around peak \(22, 20\); "):
        gpucorr.refine(frames, PEAKS, PATTERN)
    # the first peak's crop alone is fine
    res = gpucorr.refine(frames, PEAKS[:1], PATTERN)
    np.testing.assert_array_equal(res.refineds, gpucorr.refine(FRAMES, PEAKS[:1], PATTERN).refineds)


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_huge_values_that_the_dtype_holds_give_finite_results(mode):
    """The kernels shift by (x - min) + 1 in float64, so the minimum becomes exactly 1
    however large it is: float64 frames from -3e38 to 3e38, and float32 frames with a
    narrow span far from 0 (1e20 + noise), refine to finite results (with x - (min - 1)
    the minimum became log(0) beyond 2**53). The log scaling depends only on x - min: the
    far frames give the centres of the same frames moved to 0."""
    frames = huge().astype(np.float64)
    res = gpucorr.refine(frames, PEAKS, PATTERN, mode=mode, upsample=4)
    assert all(np.isfinite(a).all() for a in res)
    far = (1e20 + FRAMES * 1e14).astype(np.float32)
    res = gpucorr.refine(far, PEAKS, PATTERN, mode=mode)
    assert all(np.isfinite(a).all() for a in res)
    moved = far.astype(np.float64) - np.float64(far.min())
    np.testing.assert_array_equal(res.centers, gpucorr.refine(moved, PEAKS, PATTERN,
                                                              mode=mode).centers)
@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_valid_values_give_finite_results_and_the_check_changes_nothing(
        monkeypatch, mode, dtype):
    """Frames of moderate values (0 .. 1e6) and of large ones that the log scaling holds
    (-1e15 .. 1e15) refine to finite results, identical to those with the check switched
    off: the check only reads the heights."""
    moderate = (FRAMES * 1e6).astype(dtype)
    large = huge(value=1e15).astype(dtype)
    checked = [gpucorr.refine(f, PEAKS, PATTERN, mode=mode, upsample=4) for f in (moderate, large)]
    frame_checked = correlation.process_frame_full(**full_args(frame=large[1]))
    for res in checked:
        for a in res:
            assert np.isfinite(a).all()
    # the check where refine (Job) and the compatible functions call it
    monkeypatch.setattr("gpucorr.execution.job.check_log_overflow", lambda *a, **k: None)
    monkeypatch.setattr("gpucorr.correlation._frames.check_log_overflow", lambda *a, **k: None)
    unchecked = [gpucorr.refine(f, PEAKS, PATTERN, mode=mode, upsample=4)
                 for f in (moderate, large)]
    for got, expected in zip(checked, unchecked):
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(frame_checked, correlation.process_frame_full(**full_args(frame=large[1]))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("crop_function", [correlation.crop_disks_from_frame,
                                           correlation.crop_disks_from_frame_slicing])
def test_compatible_functions_name_the_frame(crop_function):
    """process_frame_fast (both crop functions) and process_frame_full on a frame of
    +-3e38: in float32 (complex64 template) the span overflows, a ValueError naming the
    frame and the crop, and the out buffers of a refused block are left as they were; in
    float64 (complex128, what pattern.get_template gives) the results are finite."""
    frame = huge()[1]
    args = fast_args(frame=frame, template_dtype=np.complex64, crop_function=crop_function)
    cut = r" \(cut by crop_function\)" if crop_function is not \
        correlation.crop_disks_from_frame else ""
    with unchanged(frame=frame, template=args["template"], peaks=PEAKS,
                   out_refineds=args["out_refineds"]), pytest.raises(
            ValueError, match=r"^frame " + SPAN32 + "crop" + LOG + r"got values from -3e\+38 to "
                              r"3e\+38 in the crop around peak \(10, 10\)" + cut + F64):
        correlation.process_frame_fast(**args)
    wide = fast_args(frame=frame, crop_function=crop_function)
    correlation.process_frame_fast(**wide)
    assert np.isfinite(wide["out_refineds"]).all() and np.isfinite(wide["out_heights"]).all()
    with unchanged(frame=frame), pytest.raises(
            ValueError, match=r"^frame " + SPAN32 + "frame" + LOG + r"got values from -3e\+38 to "
                              r"3e\+38" + F64):
        correlation.process_frame_full(**full_args(frame=frame, template_dtype=np.complex64,
                                                   crop_function=crop_function))
    res = correlation.process_frame_full(**full_args(frame=frame, crop_function=crop_function))
    assert all(np.isfinite(a).all() for a in res[1:])


def test_log_scale_with_huge_values():
    """log_scale computes (x - min) + 1: float32 data of +-3e38 overflow (a ValueError that
    names data and suggests float64), float64 data of +-3e38 are fine."""
    data = huge()[1]
    out = np.full(data.shape, 7, np.float32)
    with unchanged(data=data, out=out), pytest.raises(
            ValueError, match=r"^data " + SPAN32 + "array" + LOG + r"got values from -3e\+38 to "
                              r"3e\+38 in data" + F64):
        correlation.log_scale(data, out=out)
    wide = data.astype(np.float64)
    got = correlation.log_scale(wide, out=np.empty(wide.shape))
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, np.log(wide - wide.min() + 1))


def test_log_scale_cropbufs_inplace_with_huge_values():
    """(x - min) + 1 per crop: the float32 crop whose span overflows is named and no crop
    is modified; float64 crops of +-3e38 and float32 crops at 1e8 (where min - 1 would
    round to min) become finite, each crop's minimum log(1) = 0."""
    bufs = np.stack([FRAMES[0, :12, :12], huge()[1, 4:16, 4:16]])
    with unchanged(crop_bufs=bufs), pytest.raises(
            ValueError, match=r"^crop_bufs " + SPAN32 + "crop" + LOG + r"got values from -3e\+38 "
                              r"to 3e\+38 in crop_bufs\[1\]" + F64):
        correlation.log_scale_cropbufs_inplace(bufs)
    for crops in (bufs.astype(np.float64), (1e8 + FRAMES[:, :8, :8] * 100).astype(np.float32)):
        correlation.log_scale_cropbufs_inplace(crops)
        assert np.isfinite(crops).all()
        np.testing.assert_array_equal(crops.min(axis=(1, 2)), 0)


# ------------------------------------------------------------------ 3. non-finite templates

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_template_is_refused(bad):
    """A NaN in the template gave NaN results without a word."""
    template = PATTERN.get_template((2 * CS, 2 * CS)).copy()
    template[1, 2] = bad
    args = fast_args(template=template)
    with unchanged(template=template, frame=args["frame"]), pytest.raises(
            ValueError, match=r"^template holds NaN or infinite values; it must be the finite "
                              r"rfft2 of a 12x12 mask \(pattern.get_template\(...\)\)$"):
        correlation.process_frame_fast(**args)
    full = PATTERN.get_template(FRAMES[0].shape).copy()
    full[3, 0] = bad
    with unchanged(template=full), pytest.raises(
            ValueError, match=r"^template holds NaN or infinite values; it must be the finite "
                              r"rfft2 of a 32x32 mask"):
        correlation.process_frame_full(**full_args(template=full))
    with pytest.raises(ValueError, match=r"^template holds NaN or infinite values"):
        correlation.do_correlations(template, np.ones((2, 2 * CS, 2 * CS)))


# ------------------------------------------------------------------ 4. integer crop buffers

INT_BUFFER = r" must have dtype float32 or float64 \(frames are cropped into it: integers " \
             r"would truncate them, float16 round them\); got {dtype}$"


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float16])
def test_integer_crop_buffers_are_refused(dtype):
    """Integer crop buffers truncated the frame (positions off by 0.7 px in fast mode);
    float16 rounded it."""
    name = np.dtype(dtype).name
    frame = FRAMES[0] * 100
    for crop in (correlation.crop_disks_from_frame, correlation.crop_disks_from_frame_slicing):
        bufs = np.full((2, 2 * CS, 2 * CS), 3, dtype)
        with unchanged(out_crop_bufs=bufs, frame=frame, peaks=PEAKS), pytest.raises(
                TypeError, match="^out_crop_bufs" + INT_BUFFER.format(dtype=name)):
            crop(PEAKS, frame, CS, bufs)
        args = fast_args(frame=frame, crop_bufs=np.full((2, 2 * CS, 2 * CS), 3, dtype),
                         crop_function=crop)
        with unchanged(crop_bufs=args["crop_bufs"], frame=frame,
                       out_refineds=args["out_refineds"]), pytest.raises(
                TypeError, match="^crop_bufs" + INT_BUFFER.format(dtype=name)):
            correlation.process_frame_fast(**args)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_libertem_blobfinder_refuses_integer_crop_bufs_too(dtype):
    """The oracle: libertem-blobfinder's process_frame_fast raises a TypeError
    (numpy's UFuncTypeError: it log-scales in the buffer), so refusing integer crop_bufs
    breaks no working call. Its crop functions alone truncate into integer buffers
    silently; gpucorr refuses those as well (above)."""
    lbf = pytest.importorskip("libertem_blobfinder.base.correlation")
    frame = FRAMES[0] * 100
    args = fast_args(frame=frame, peaks=PEAKS.astype(np.int32),
                     crop_bufs=np.zeros((2, 2 * CS, 2 * CS), dtype))
    with pytest.raises(TypeError):
        lbf.process_frame_fast(**args)
    bufs = np.zeros((2, 2 * CS, 2 * CS), dtype)
    lbf.crop_disks_from_frame(PEAKS.astype(np.int32), frame, CS, bufs)
    floats = np.zeros((2, 2 * CS, 2 * CS), np.float32)
    lbf.crop_disks_from_frame(PEAKS.astype(np.int32), frame, CS, floats)
    np.testing.assert_array_equal(bufs, floats.astype(dtype))   # truncated


def test_float_crop_buffers_give_the_same_results():
    ref = fast_args()
    correlation.process_frame_fast(**ref)
    for dtype in (np.float32, np.float64, np.dtype(">f4")):
        args = fast_args(crop_bufs=np.zeros((1, 2 * CS, 2 * CS), dtype))   # one peak per block
        correlation.process_frame_fast(**args)
        for name in ("out_centers", "out_refineds", "out_heights", "out_elevations"):
            np.testing.assert_allclose(args[name], ref[name], rtol=1e-6, atol=1e-5)


# -------------------------------------------------------------------- 6. single HDF5 frames

@pytest.mark.parametrize("kind", ["h5py", "zarr"])
def test_one_frame_in_a_file_equals_the_numpy_frame(tmp_path, kind):
    """A 2-D dataset cannot take a new axis (h5py raised "Indexing with None"): it is read
    whole, and refines exactly as the NumPy frame does, in both modes."""
    frame = FRAMES[0]
    if kind == "h5py":
        h5py = pytest.importorskip("h5py")
        f = h5py.File(tmp_path / "image.h5", "w")
        f["entry/data"] = frame
        data = f["/entry/data"]
    else:
        zarr = pytest.importorskip("zarr")
        f = contextlib.nullcontext()
        data = zarr.open(str(tmp_path / "image.zarr"), mode="w", shape=frame.shape,
                         chunks=(16, 16), dtype=frame.dtype)
        data[...] = frame
    with f:
        for mode in ("fast", "full"):
            got = gpucorr.refine(data, PEAKS, PATTERN, mode=mode, upsample=4)
            expected = gpucorr.refine(frame, PEAKS, PATTERN, mode=mode, upsample=4)
            for a, b in zip(got, expected):
                assert a.shape == b.shape
                np.testing.assert_array_equal(a, b)
            assert got.refineds.shape == (len(PEAKS), 2)


# -------------------------------------------------------------------- 7. long double frames

needs_longdouble = pytest.mark.skipif(
    LONGDOUBLE.itemsize <= 8, reason=f"numpy.longdouble is {LONGDOUBLE} (64-bit) here")


def longdouble_message(name):
    return (rf"^{name} must have a real dtype of at most 64 bits \(uint8, uint16, int32, "
            rf"float32, float64, \.\.\.\); got {LONGDOUBLE} \({LONGDOUBLE.itemsize * 8}-bit\); "
            rf"convert it first, e.g. {name}.astype\(numpy.float64\), if that precision loss "
            rf"is acceptable$")


@needs_longdouble
@pytest.mark.parametrize("func, name", [
    (lambda f: gpucorr.refine(f, PEAKS, PATTERN), "frames"),
    (lambda f: gpucorr.refine(f, PEAKS, PATTERN, mode="full"), "frames"),
    (lambda f: gpucorr.refine(f[0], PEAKS, PATTERN), "frames"),
    (lambda f: correlation.process_frames_fast(PATTERN, f, PEAKS), "frames"),
    (lambda f: correlation.process_frame_fast(**fast_args(frame=f[0])), "frame"),
    (lambda f: correlation.process_frame_full(**full_args(frame=f[0])), "frame"),
], ids=["refine", "refine-full", "refine-one-frame", "process_frames_fast",
        "process_frame_fast", "process_frame_full"])
def test_longdouble_frames_are_refused(func, name):
    """numpy.longdouble frames failed deep in numba (a multi-line TypingError)."""
    frames = FRAMES.astype(np.longdouble)
    with unchanged(frames=frames), pytest.raises(TypeError, match=longdouble_message(name)):
        func(frames)


@needs_longdouble
def test_longdouble_dask_arrays_are_refused():
    da = pytest.importorskip("dask.array")
    import gpucorr.dask as gdask
    darr = da.from_array(FRAMES.astype(np.longdouble), chunks=(1, 32, 32))
    with pytest.raises(TypeError, match=longdouble_message("darr")):
        gdask.refine(darr, PEAKS, PATTERN)


# ------------------------------------------------------------- 8. workers and memory_limit

BAD_COUNTS = [
    ("abc", TypeError, r"got 'abc' \(str\)$"),
    (float("nan"), TypeError, r"got nan \(float\)$"),
    (float("inf"), TypeError, r"got inf \(float\)$"),
    (True, TypeError, r"got True \(bool\)$"),
    (np.True_, TypeError, r"got np.True_ \(bool\)$"),
    (1.5, TypeError, r"got 1.5 \(float\)$"),
    ("2", TypeError, r"got '2' \(str\)$"),
    (0, ValueError, r"got 0$"),
    (-1, ValueError, r"got -1$"),
]
ALLOWED = {"refine-workers": r"workers must be an int >= 1 or None; ",
           "dask-workers": r"workers must be an int >= 1; ",
           "refine-memory_limit": r"memory_limit must be a positive int \(bytes\) or None; ",
           "dask-memory_limit": r"memory_limit must be a positive int \(bytes\) or None; "}


def _call(api, **kwargs):
    if api == "refine":
        return gpucorr.refine(FRAMES, PEAKS, PATTERN, **kwargs)
    da = pytest.importorskip("dask.array")
    import gpucorr.dask as gdask
    return gdask.refine(da.from_array(FRAMES, chunks=(1, 32, 32)), PEAKS, PATTERN,
                               **kwargs).compute(scheduler="sync")


@pytest.mark.parametrize("api", ["refine", "dask"])
@pytest.mark.parametrize("arg", ["workers", "memory_limit"])
@pytest.mark.parametrize("value, exc, got", BAD_COUNTS,
                         ids=["str", "nan", "inf", "True", "np.True_", "1.5", "str-2", "0", "-1"])
def test_bad_workers_and_memory_limit(api, arg, value, exc, got):
    """Only integers count: "abc" and NaN raised int()'s ValueError (or OverflowError for
    inf), and True, 1.5 and "2" were taken as 1, 1 and 2."""
    with pytest.raises(exc, match="^" + ALLOWED[f"{api}-{arg}"] + got):
        _call(api, **{arg: value})


@pytest.mark.parametrize("api", ["refine", "dask"])
def test_numpy_integer_workers_and_memory_limit_are_accepted(api):
    expected = _call(api)
    for kwargs in (dict(workers=np.int64(2)), dict(memory_limit=np.int64(2**20)),
                   dict(workers=np.uint8(1), memory_limit=np.int32(1))):
        for a, b in zip(_call(api, **kwargs), expected):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------- 9. ragged frame lists

@pytest.mark.parametrize("frames, match", [
    ([np.zeros((32, 32)), np.zeros((32, 33))],
     r"^frames must be a list of equally shaped frames; got shape \(32, 32\) \(frames\[0\]\) "
     r"and \(32, 33\) \(frames\[1\]\)$"),
    ([np.zeros((32, 32)).tolist(), np.zeros((31, 32)).tolist()],
     r"^frames must be a list of equally shaped frames; got shape \(32, 32\) \(frames\[0\]\) "
     r"and \(31, 32\) \(frames\[1\]\)$"),
    ([np.zeros((32, 32)).tolist(), [[0.0] * 32] * 31 + [[0.0] * 33]],
     r"^frames\[1\] must be a frame \(H, W\); got a ragged nested sequence$"),
], ids=["arrays", "nested-lists", "ragged-nested-list"])
def test_ragged_frame_lists_are_refused(frames, match):
    """NumPy's "inhomogeneous shape" ValueError named no argument."""
    with pytest.raises(ValueError, match=match):
        gpucorr.refine(frames, PEAKS, PATTERN)
    with pytest.raises(ValueError, match=match):
        correlation.process_frames_fast(PATTERN, frames, PEAKS)


def test_equally_shaped_frame_lists_are_stacked():
    listed = gpucorr.refine([f.tolist() for f in FRAMES], PEAKS, PATTERN)
    stacked = gpucorr.refine(FRAMES.astype(np.float64), PEAKS, PATTERN)
    for a, b in zip(listed, stacked):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------- 10. None for buffers and the crop function

@pytest.mark.parametrize("name, shape", [("out_centers", (2, 2)), ("out_refineds", (2, 2)),
                                         ("out_heights", (2,)), ("out_elevations", (2,))])
def test_process_frame_fast_needs_its_output_buffers(name, shape):
    """libertem-blobfinder's process_frame_fast takes no default for them either (None is a
    TypeError there: 'NoneType' object is not subscriptable)."""
    args = fast_args(**{name: None})
    with unchanged(frame=args["frame"]), pytest.raises(
            TypeError, match=rf"^{name} must be an array of shape {re_shape(shape)}; got None$"):
        correlation.process_frame_fast(**args)


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_process_frame_fast_needs_crop_bufs():
    with pytest.raises(TypeError, match=r"^crop_bufs must be a float32 or float64 array "
                                        r"\(n, h, w\); got None$"):
        correlation.process_frame_fast(**fast_args(crop_bufs=None))
    with pytest.raises(TypeError, match=r"^crop_bufs must be a float32 or float64 array "
                                        r"\(n, h, w\); got list$"):
        correlation.process_frame_fast(**fast_args(crop_bufs=[[[0.0]]]))


@pytest.mark.parametrize("func", ["process_frame_fast", "process_frame_full"])
@pytest.mark.parametrize("crop_function", [None, "crop_disks_from_frame"])
def test_crop_function_must_be_callable(func, crop_function):
    args = (fast_args if func == "process_frame_fast" else full_args)(crop_function=crop_function)
    with pytest.raises(TypeError, match=r"^crop_function must be callable \(peaks=, frame=, "
                                        rf"crop_size=, out_crop_bufs=\); got {crop_function!r}$"):
        getattr(correlation, func)(**args)


def test_process_frame_full_allocates_missing_outputs():
    """libertem-blobfinder 0.6.1 documents process_frame_full's buffers as "allocated if
    needed" but fails on None (frame_buf=None: an IndexError from rfft2(None); out buffers
    None: TypeError 'NoneType' object is not subscriptable). gpucorr does what it documents:
    it allocates what is None (uint16 centres, float32 others, as in its docs' example),
    fills what is given in place, and returns all four."""
    given = outs(centers=np.uint16)
    expected = correlation.process_frame_full(**full_args(**given))
    assert all(e is g for e, g in zip(expected, given.values()))
    allocated = correlation.process_frame_full(**full_args())
    assert [a.dtype for a in allocated] == [np.uint16, np.float32, np.float32, np.float32]
    for a, b in zip(allocated, expected):
        np.testing.assert_array_equal(a, b)
    refineds = np.zeros((2, 2), np.float64)
    mixed = correlation.process_frame_full(**full_args(out_refineds=refineds))
    assert mixed[1] is refineds
    np.testing.assert_allclose(refineds, expected[1], rtol=1e-6)
    for a, b in zip(mixed[::2], expected[::2]):
        np.testing.assert_array_equal(a, b)
