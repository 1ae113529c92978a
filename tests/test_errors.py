"""Bad input gets a clear TypeError/ValueError naming what was given; inputs stay unmodified."""
import numpy as np
import pytest

import gpucorr
from gpucorr import patterns

FRAMES = np.random.default_rng(0).random((2, 48, 40)).astype(np.float32)
PEAKS = np.array([[10, 10], [24, 20], [40, 30]])
PATTERN = patterns.Circular(radius=3)
CS = PATTERN.get_crop_size()


def refine(**kwargs):
    args = dict(frames=FRAMES, peaks=PEAKS, pattern=PATTERN)
    args.update(kwargs)
    return gpucorr.refine(**args)


@pytest.mark.parametrize("peaks, exc, match", [
    (np.zeros((3, 3), int), ValueError, r"peaks must have shape \(P, 2\).*got \(3, 3\)"),
    (np.zeros(4, int), ValueError, r"peaks must have shape \(P, 2\).*got \(4,\)"),
    (np.zeros((0, 2), int), ValueError, "peaks is empty"),
    (np.array([[1.5, 2.0]]), ValueError, "non-integer values"),
    (np.array([[np.nan, 2.0]]), ValueError, "NaN"),
    (np.array([[1 + 1j, 2]]), TypeError, "peaks must hold integer.*complex128"),
    (np.array([["a", "b"]]), TypeError, "peaks must hold integer"),
    (np.array([[2**30 + 1, 5]]), ValueError, r"beyond \+-2\*\*30 \(centres are int32\)"),
    (np.array([[5, -2**31]]), ValueError, r"beyond \+-2\*\*30"),
])
def test_bad_peaks(peaks, exc, match):
    with pytest.raises(exc, match=match):
        refine(peaks=peaks)


@pytest.mark.parametrize("frames, exc, match", [
    (np.zeros(40), ValueError, r"frames must have shape \(\.\.\., H, W\).*got \(40,\)"),
    (np.zeros((2, 48, 0)), ValueError, r"frames must have non-empty frames; got shape"),
    (np.zeros((2, 48, 40), complex), TypeError, "real integer or floating.*complex128"),
    (np.zeros((2, 48, 40), bool), TypeError, "real integer or floating.*bool"),
    (np.zeros((0, 48, 40)), ValueError, None),
])
def test_bad_frames(frames, exc, match):
    if frames.shape[:1] == (0,):
        # an empty stack is fine: empty results
        res = refine(frames=frames)
        assert res.centers.shape == (0, 3, 2)
        return
    with pytest.raises(exc, match=match):
        refine(frames=frames)


def test_frames_not_an_array():
    """A list of frames is stacked; an object that is no array is a TypeError naming it."""
    listed = refine(frames=[frame for frame in FRAMES])
    np.testing.assert_array_equal(listed.refineds, refine().refineds)
    for frames in ("frames.h5", 3.0, {"frames": FRAMES}):
        with pytest.raises(TypeError, match=f"(frames must be an array.*got |unsupported array "
                                            f"type builtins.){type(frames).__name__}"):
            refine(frames=frames)
    from gpucorr import correlation
    with pytest.raises(TypeError, match="unsupported array type builtins.str"):
        correlation.process_frames_fast(PATTERN, "frames.h5", PEAKS)
    for listed, stacked in zip(correlation.process_frames_fast(PATTERN, list(FRAMES), PEAKS),
                               correlation.process_frames_fast(PATTERN, FRAMES, PEAKS)):
        np.testing.assert_array_equal(listed, stacked)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_non_finite_frames(bad, mode):
    frames = FRAMES.copy()
    frames[1, 24, 20] = bad
    before = frames.copy()
    with pytest.raises(ValueError, match="NaN or infinite"):
        refine(frames=frames, mode=mode)
    np.testing.assert_array_equal(frames, before)


@pytest.mark.parametrize("upsample, exc, match", [
    (-1, ValueError, "integer factor from 2 to 1000; got -1"),
    (10**6, ValueError, "got 1000000"),
    (2.5, TypeError, r"upsample must be False, True or an integer factor >= 2; got 2.5"),
    ("20", TypeError, "got '20'"),
])
def test_bad_upsample(upsample, exc, match):
    with pytest.raises(exc, match=match):
        refine(upsample=upsample)


def test_crop_larger_than_frame():
    with pytest.raises(ValueError, match=r"crop \(2 \* crop_size = 48 px\) is larger than the "
                                         r"frame \(48, 40\)"):
        refine(pattern=patterns.Circular(radius=3, search=24))


def test_bad_mode_pattern_workers_memory():
    with pytest.raises(ValueError, match="mode must be 'fast' or 'full'; got 'medium'"):
        refine(mode="medium")
    with pytest.raises(TypeError, match="pattern must be a match pattern.*got ndarray"):
        refine(pattern=np.ones((5, 5)))
    with pytest.raises(ValueError, match="workers must be an int >= 1 or None; got 0"):
        refine(workers=0)
    with pytest.raises(ValueError,
                       match=r"memory_limit must be a positive int \(bytes\) or None; got -5"):
        refine(memory_limit=-5)
    with pytest.raises(TypeError, match="progress must be callable"):
        refine(progress=5)
    with pytest.raises(TypeError, match="unsupported array type builtins.str"):
        refine(frames="frames.npy")


def outs(n=3, centers_dtype=np.int32):
    return [np.zeros((n, 2), centers_dtype), np.zeros((n, 2), np.float32),
            np.zeros(n, np.float32), np.zeros(n, np.float32)]


def fast(**kwargs):
    o = outs()
    args = dict(template=PATTERN.get_template((2 * CS, 2 * CS)), crop_size=CS,
                frame=FRAMES[0], peaks=PEAKS, out_centers=o[0], out_refineds=o[1],
                out_heights=o[2], out_elevations=o[3],
                crop_bufs=gpucorr.allocate_crop_bufs(CS, 3, np.float32))
    args.update(kwargs)
    return gpucorr.process_frame_fast(**args)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(template=np.zeros((12, 12), complex)), ValueError,
     r"template must be rfft2 of a 12x12 mask, shape \(12, 7\); got \(12, 12\)"),
    (dict(out_centers=np.zeros((3, 3), int)), ValueError,
     r"out_centers must have shape \(3, 2\); got \(3, 3\)"),
    (dict(out_refineds=np.zeros((3, 2), int)), TypeError,
     "out_refineds must have a floating dtype; got int64"),
    (dict(out_heights=np.zeros(4, np.float32)), ValueError,
     r"out_heights must have shape \(3,\); got \(4,\)"),
    (dict(out_centers=np.zeros((3, 2), complex)), TypeError, "out_centers must have a"),
    (dict(crop_bufs=np.zeros((3, 5, 5))), ValueError, r"crop_bufs must have shape \(n >= 1"),
    (dict(frame=FRAMES), ValueError, r"frame must be a 2-D frame \(H, W\); got shape"),
    (dict(crop_size=0), ValueError, "crop_size must be >= 1; got 0"),
    (dict(crop_size=2.5), TypeError, "crop_size must be a positive int; got 2.5"),
    (dict(upsample=-3), ValueError, "got -3"),
])
def test_bad_compatible_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fast(**kwargs)


def test_read_only_output_is_refused():
    o = outs()
    o[1].flags.writeable = False
    with pytest.raises(ValueError, match="out_refineds is read-only"):
        fast(out_refineds=o[1])


def test_full_mode_template_of_wrong_size():
    with pytest.raises(ValueError, match=r"template must be rfft2 of a 48x40 mask"):
        gpucorr.process_frame_full(PATTERN.get_template((48, 48)), CS, FRAMES[0], PEAKS)


def test_evaluate_correlations_shape_mismatch():
    with pytest.raises(ValueError, match=r"corrs must have shape \(P, h, w\) with P = len"):
        gpucorr.evaluate_correlations(np.zeros((2, 8, 8)), PEAKS, 4, *outs())


def test_log_scale_rejects_non_finite_and_integer_buffers():
    with pytest.raises(ValueError, match="NaN or infinite"):
        gpucorr.log_scale(np.array([1.0, np.nan]), out=np.empty(2))
    with pytest.raises(TypeError, match="crop_bufs must be floating point.*uint16"):
        gpucorr.log_scale_cropbufs_inplace(np.zeros((2, 4, 4), np.uint16))


def test_upsampling_helpers_reject_bad_factors():
    spec = np.zeros((8, 5), complex)
    freqs = (np.fft.fftfreq(8, 4), np.fft.rfftfreq(8, 4))
    with pytest.raises(ValueError, match="upsample_factor must be an int >= 2; got 1"):
        gpucorr.refine_center_upsampling(np.zeros(2), np.zeros(2), spec, freqs, 1)
    with pytest.raises(ValueError, match="frequencies do not fit corrspecs"):
        gpucorr.refine_center_upsampling(np.zeros(2), np.zeros(2), spec,
                                          (np.fft.fftfreq(6, 4), freqs[1]), 4)


def _dark_corner():
    """A frame darker than its zero padding, with a peak at its corner: the correlation
    maximum of that peak's crop lies above and left of the frame (negative centre)."""
    rng = np.random.default_rng(0)
    frame = (rng.random((64, 64)) - 5).astype(np.float32)
    peaks = np.array([[0, 0], [30, 30]])
    template = PATTERN.get_template((2 * CS, 2 * CS))
    return frame, peaks, template


def _outs(centers_dtype, n=2):
    return [np.zeros((n, 2), centers_dtype), np.zeros((n, 2), np.float32),
            np.zeros(n, np.float32), np.zeros(n, np.float32)]


def test_centres_that_out_centers_cannot_hold():
    """A centre out of the range of out_centers' dtype (negative in libertem-blobfinder's
    uint16) is stored as the reference stores it (wrapped), with a RuntimeWarning that says
    so; the refineds are right, and dtypes that hold the centres give no warning."""
    import warnings
    from gpucorr.correlation import _buffers as correlation
    frame, peaks, template = _dark_corner()
    wide = _outs(np.int32)
    gpucorr.process_frame_fast(template, CS, frame, peaks, *wide,
                               crop_bufs=gpucorr.allocate_crop_bufs(CS, 2, np.float32))
    assert (wide[0][0] < 0).all() and (wide[0][1] >= 0).all()   # the case is real
    for dtype in (np.uint16, np.uint8):
        narrow = _outs(dtype)
        with pytest.warns(RuntimeWarning, match=rf"out_centers \({np.dtype(dtype)}\) cannot "
                                                r"hold some centres.*int32") as caught:
            gpucorr.process_frame_fast(template, CS, frame, peaks, *narrow,
                                       crop_bufs=gpucorr.allocate_crop_bufs(CS, 2, np.float32))
        assert caught[0].filename == __file__   # points at the caller's line
        np.testing.assert_array_equal(narrow[0], wide[0].astype(dtype))
        for n, w in zip(narrow[1:], wide[1:]):
            np.testing.assert_array_equal(n, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (np.int16, np.float16, np.float32):
            other = _outs(dtype)
            gpucorr.process_frame_fast(template, CS, frame, peaks, *other,
                                       crop_bufs=gpucorr.allocate_crop_bufs(CS, 2, np.float32))
            np.testing.assert_array_equal(other[0], wide[0])
        correlation._check_centers(np, np.full((1, 2, 2), 130), np.int16, "centers", 1)
    with pytest.warns(RuntimeWarning, match=r"centers \(int8\) cannot hold"):
        correlation._check_centers(np, np.full((1, 2, 2), 130), np.int8, "centers", 1)
    with pytest.warns(RuntimeWarning, match=r"centers \(float16\) cannot hold"):
        correlation._check_centers(np, np.full((1, 2, 2), 2049), np.float16, "centers", 1)
