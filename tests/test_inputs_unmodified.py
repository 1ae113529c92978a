"""Nothing a caller passes in is modified, except what the API names as an output.

Every public function that takes arrays is called on NumPy and (``gpu`` marker) on
CuPy input; afterwards every argument that is not an output buffer or documented
scratch (``out_*``, ``crop_bufs``, ``frame_buf``, ``log_scale``'s ``out``) holds
exactly what it held before. On the GPU this also covers cuFFT's complex-to-real
transform, which destroys its input unless it gets a copy (the CPU stand-in
mimics that).
"""
import numpy as np
import pytest

import gpucorr
from gpucorr import correlation, patterns

from helpers import random_lattice_frames

PATTERN = patterns.RadialGradient(radius=4)
CS = PATTERN.get_crop_size()
SHAPE = (64, 72)


def _snapshot(xp, args):
    return {k: xp.array(v, copy=True) for k, v in args.items() if hasattr(v, "shape")}


def _assert_unchanged(xp, args, before):
    for name, old in before.items():
        new = args[name]
        assert new.dtype == old.dtype and new.shape == old.shape, name
        same = xp.asarray(new == old) | (xp.isnan(new) & xp.isnan(old)) if new.dtype.kind in \
            "fc" else xp.asarray(new == old)
        assert bool(same.all()), f"{name} was modified"


def _inputs(xp, rng):
    frames, true = random_lattice_frames(rng, 3, shape=SHAPE, radius=4, dtype=np.uint16)
    peaks = np.rint(true).astype(np.int64)
    peaks[0] = (-2, 70)                      # at and beyond the edge
    n = len(peaks)
    crop = (2 * CS, 2 * CS)
    crops = rng.random((n,) + crop).astype(np.float32) + 1
    spec = np.fft.rfft2(crops).astype(np.complex64)
    maps = np.fft.irfft2(spec, s=crop).astype(np.float32)
    return dict(frames=xp.asarray(frames), peaks=xp.asarray(peaks),
                template=xp.asarray(PATTERN.get_template(crop)),
                full_template=xp.asarray(PATTERN.get_template(SHAPE)),
                crops=xp.asarray(crops), specs=xp.asarray(spec), maps=xp.asarray(maps),
                centers=xp.asarray(np.tile(np.array([[CS, CS]], np.int32), (n, 1))), n=n)


def _outs(xp, n):
    return dict(out_centers=xp.zeros((n, 2), np.int32), out_refineds=xp.zeros((n, 2), np.float32),
                out_heights=xp.zeros(n, np.float32), out_elevations=xp.zeros(n, np.float32))


CASES = ["refine-fast", "refine-full-up", "process_frames_fast", "process_frames_full",
         "process_frame_fast", "process_frame_full", "do_correlations", "evaluate_correlations",
         "evaluate_upsampling", "refine_center_upsampling", "log_scale",
         "crop_disks_from_frame", "crop_disks_from_frame_slicing"]


@pytest.mark.parametrize("case", CASES)
def test_arguments_that_are_not_outputs_are_not_modified(xp, rng, case):
    d = _inputs(xp, rng)
    n = d["n"]
    frame = d["frames"][1]
    if case.startswith("refine-"):
        fn, args = gpucorr.refine, dict(frames=d["frames"], peaks=d["peaks"], pattern=PATTERN,
                                        mode=case.split("-")[1], upsample="up" in case)
    elif case.startswith("process_frames_"):
        fn, args = getattr(gpucorr, case), dict(pattern=PATTERN, frames=d["frames"],
                                                peaks=d["peaks"], upsample=True)
    elif case == "process_frame_fast":
        fn, args = gpucorr.process_frame_fast, dict(
            template=d["template"], crop_size=CS, frame=frame, peaks=d["peaks"], **_outs(xp, n),
            crop_bufs=gpucorr.allocate_crop_bufs(CS, n, np.float32, xp=xp), upsample=True)
    elif case == "process_frame_full":
        fn, args = gpucorr.process_frame_full, dict(
            template=d["full_template"], crop_size=CS, frame=frame, peaks=d["peaks"],
            **_outs(xp, n), upsample=True)
    elif case == "do_correlations":
        fn, args = gpucorr.do_correlations, dict(template=d["template"], crop_parts=d["crops"],
                                                 with_specs=True)
    elif case == "evaluate_correlations":
        fn, args = gpucorr.evaluate_correlations, dict(corrs=d["maps"], peaks=d["peaks"],
                                                       crop_size=CS, **_outs(xp, n))
    elif case == "evaluate_upsampling":
        fn, args = gpucorr.evaluate_upsampling, dict(
            corrspecs=d["specs"], corrs=d["maps"], peaks=d["peaks"], crop_size=CS,
            sig_shape=(2 * CS, 2 * CS), upsample_factor=7, out_centers=d["centers"],
            out_refineds=xp.zeros((n, 2), np.float32))
    elif case == "refine_center_upsampling":
        factor = 7
        frequencies = (xp.fft.fftfreq(2 * CS, factor), xp.fft.rfftfreq(2 * CS, factor))
        fn, args = gpucorr.refine_center_upsampling, dict(
            corrmap_center=xp.asarray([CS, CS]), upsample_pos=xp.asarray([CS + 1, CS - 1]),
            corrspecs=d["specs"][0], frequencies=frequencies, upsample_factor=factor)
    elif case == "log_scale":
        fn, args = gpucorr.log_scale, dict(data=d["crops"], out=xp.zeros_like(d["crops"]))
    else:
        fn, args = getattr(gpucorr, case), dict(
            peaks=d["peaks"], frame=frame, crop_size=CS,
            out_crop_bufs=xp.zeros((n, 2 * CS, 2 * CS), np.float32))
    scratch = {k for k in args if k.startswith("out") or k in ("crop_bufs", "frame_buf")}
    before = _snapshot(xp, {k: v for k, v in args.items() if k not in scratch})
    if case == "refine_center_upsampling":
        before.update({f"frequencies{i}": xp.array(f, copy=True)
                       for i, f in enumerate(args["frequencies"])})
    fn(**args)
    if case == "refine_center_upsampling":
        args = dict(args, **{f"frequencies{i}": f for i, f in enumerate(args["frequencies"])})
    _assert_unchanged(xp, args, before)
    assert before, "nothing was checked"


def test_cases_cover_the_compatible_api():
    """Every function of the compatible API that takes arrays is among the cases (or is
    NumPy-only numba, or not array-taking)."""
    numba_or_helpers = {"refine_center", "center_of_mass", "peak_elevation", "unravel_index",
                        "zeros", "fft", "allocate_crop_bufs", "get_buf_count",
                        "log_scale_cropbufs_inplace"}   # in place by definition
    covered = {c.split("-")[0] for c in CASES}
    assert set(correlation.__all__) - numba_or_helpers - covered == set()
